package image

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/fsutil"
)

// AddLayerFromTar extracts the uncompressed tar read from r as a layer and
// records it. OCI whiteouts (".wh.NAME", ".wh..wh..opq") become overlay
// whiteouts. Entries naming absolute paths, climbing out with "..", or
// passing through a symlink are refused with ErrInvalidArgument, and nothing
// is kept. The digest is that of the extracted tree's canonical tar, not of
// r's bytes. Adding a layer the store holds already returns its digest and
// stores nothing new. Safe for concurrent use.
func (s *Store) AddLayerFromTar(ctx context.Context, r io.Reader) (Digest, error) {
	return s.addLayer(ctx, "layer from tar", func(x *extractor) error { return x.readTar(ctx, r) })
}

// addLayer makes a new directory under tmp/, has fill extract a layer into
// it and stores the result (see storeTree).
func (s *Store) addLayer(ctx context.Context, what string, fill func(x *extractor) error) (Digest, error) {
	st := s.newStages()
	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		} else if _, err := os.Lstat(tmp); err == nil {
			s.trash.add(tmp) // the store held the layer already
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	x, err := newExtractor(tmp)
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	x.sd = newStreamDigest("")
	defer x.sd.stop()
	err = fill(x)
	st.mark("extract")
	if err == nil {
		err = x.finishDirs()
	}
	x.close()
	st.mark("dir_times")
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	d, err := s.storeTree(ctx, tmp, x.plan(""), x.canonOptions(), x.sd, st)
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	ok = true
	st.log(ctx, s.log, what, "layer", d)
	return d, nil
}

// storeTree stores the complete tree at tmp (a directory under tmp/ that the
// caller gives up) as a layer and returns its digest: the tree is digested
// while it is made durable (see makeDurable), then renamed into place and
// recorded, so a layer is visible only once all of it is durable. When the
// store holds the layer already, tmp is left for the caller to remove, and
// its flush is neither finished nor waited for: the copy is thrown away,
// and the stored layer was durable before it was recorded.
func (s *Store) storeTree(ctx context.Context, tmp string, plan syncPlan, o canonOptions, sd *streamDigest, st *stages) (Digest, error) {
	synced := make(chan error, 1)
	stop := make(chan struct{})
	t0 := s.clock.Now()
	var syncTook time.Duration
	go func() {
		err := makeDurable(tmp, plan, stop)
		syncTook = s.clock.Now().Sub(t0)
		synced <- err
	}()
	d, size, err := s.layerDigest(ctx, tmp, o, sd, st)
	if err != nil {
		close(stop)
		<-synced
		return "", fmt.Errorf("digest: %w", err)
	}
	if held, err := s.holdsLayer(ctx, d); err != nil {
		close(stop)
		<-synced
		return "", fmt.Errorf("%s: %w", d, err)
	} else if held {
		close(stop) // the flush goroutine ends by itself; synced is buffered
		st.add("duplicate", true)
		return d, nil
	}
	serr := <-synced
	st.mark("sync_wait")
	st.add("sync", syncTook.Round(time.Microsecond))
	st.add("fsync_each", plan.ok)
	if serr != nil {
		return "", serr
	}
	if err := s.commitLayer(ctx, tmp, d, size); err != nil {
		return "", fmt.Errorf("%s: %w", d, err)
	}
	st.mark("commit")
	return d, nil
}

// layerDigest returns the digest of the tree at tmp (the SHA-256 of its
// canonical tar) and the tar's size: sd's, streamed while the tree was made,
// when it holds, else by walking the tree.
func (s *Store) layerDigest(ctx context.Context, tmp string, o canonOptions, sd *streamDigest, st *stages) (Digest, int64, error) {
	d, size, why, ok := sd.result()
	st.mark("digest_wait")
	if ok {
		s.streamedDigests.Add(1)
	}
	if !ok || s.checkStreamed {
		st.add("walked", why)
		h := sha256.New()
		wsize, err := writeCanonicalTarOpts(ctx, tmp, h, o)
		if err != nil {
			return "", wsize, err
		}
		st.mark("hash")
		wd := digestFromSum(h.Sum(nil))
		if ok && (wd != d || wsize != size) {
			return "", 0, fmt.Errorf("streamed digest %s (%d bytes) is not the tree's %s (%d bytes)", d, size, wd, wsize)
		}
		d, size = wd, wsize
	}
	st.add("bytes", size)
	return d, size, nil
}

// holdsLayer reports whether layer d is recorded and its directory is in
// place: a tree of digest d made now is a duplicate (storeTree asks before
// waiting for the tree's flush, commitLayer again under s.mu).
func (s *Store) holdsLayer(ctx context.Context, d Digest) (bool, error) {
	ok, err := s.hasLayer(ctx, d)
	if err != nil || !ok {
		return false, err
	}
	_, err = os.Lstat(s.LayerPath(d))
	return err == nil, nil
}

// syncPlan says how to make an extracted tree durable: with ok, an fsync of
// each of files, then of each of dirs (paths relative to the tree's root,
// directories deepest first) and of the root; without, a syncfs.
type syncPlan struct {
	files, dirs []string
	ok          bool
}

// below returns the plan with its paths made relative to dir, which they
// all lie in (dir itself is the new root).
func (p syncPlan) below(dir string) syncPlan {
	out := syncPlan{ok: p.ok}
	for _, f := range p.files {
		out.files = append(out.files, strings.TrimPrefix(f, dir+"/"))
	}
	for _, d := range p.dirs {
		if d != dir {
			out.dirs = append(out.dirs, strings.TrimPrefix(d, dir+"/"))
		}
	}
	return out
}

// makeDurable flushes the tree at root to disk as plan says. An fsync that
// fails (a path a later entry replaced) falls back to syncfs. Closing stop
// (nil: never) means the tree is not wanted any more: the fsyncs not
// started yet are skipped and nil is returned (a syncfs under way cannot
// be stopped; it runs to its end).
func makeDurable(root string, plan syncPlan, stop <-chan struct{}) error {
	if plan.ok {
		if err := fsyncAll(root, plan, stop); err == nil || stopped(stop) {
			return nil
		}
	}
	return syncfs(root)
}

// stopped reports whether stop is closed.
func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// fsyncAll fsyncs plan's files and directories, a few at a time: each fsync
// ends with a flush of the disk's cache, and fsyncs made together share the
// wait (one after the other, a one-file layer waited for two flushes). The
// tree is complete before this starts and becomes visible only after it
// returns, so the order of the fsyncs does not matter. Once stop closes,
// the fsyncs not started are skipped.
func fsyncAll(root string, plan syncPlan, stop <-chan struct{}) error {
	type job struct {
		path  string
		flags int
	}
	jobs := make([]job, 0, len(plan.files)+len(plan.dirs)+1)
	for _, f := range plan.files {
		jobs = append(jobs, job{filepath.Join(root, f), unix.O_RDONLY | unix.O_NOFOLLOW})
	}
	for _, d := range append(plan.dirs, "") {
		jobs = append(jobs, job{filepath.Join(root, d), unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW})
	}
	workers := min(len(jobs), fsyncWorkers)
	errs := make(chan error, workers)
	next := make(chan job)
	for range workers {
		go func() {
			var first error
			for j := range next {
				if err := fsyncPath(j.path, j.flags); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-stop:
			break feed // what is left is not wanted: see makeDurable
		}
	}
	close(next)
	var err error
	for range workers {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return err
}

// fsyncWorkers is how many fsyncs fsyncAll has under way at once.
const fsyncWorkers = 8

func fsyncPath(p string, flags int) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: p, Err: err}
	}
	return nil
}

// commitLayer renames the extracted tree tmp to its place and records it,
// unless the store has the layer already.
func (s *Store) commitLayer(ctx context.Context, tmp string, d Digest, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst := s.LayerPath(d)
	if held, err := s.holdsLayer(ctx, d); err != nil || held {
		return err // held: stored once already; tmp is removed by the caller
	}
	if err := os.RemoveAll(dst); err != nil { // an unrecorded leftover
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	if err := fsutil.SyncDir(s.layersDir()); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO layers (digest, size, created_at) VALUES (?, ?, ?)`,
		string(d), size, s.clock.Now().UnixNano())
	return err
}

// AddLayerFromDir stores a copy of the tree at dir as a layer (dir is left as
// it is) and returns its digest. See AddLayerFromTar.
func (s *Store) AddLayerFromDir(ctx context.Context, dir string) (Digest, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", errdefs.Invalid("add layer: %q is not a directory", dir)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := writeCanonicalTar(ctx, dir, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	d, err := s.AddLayerFromTar(ctx, pr)
	pr.CloseWithError(errors.New("reader closed"))
	if werr := <-done; werr != nil && err == nil {
		err = fmt.Errorf("add layer: %w", werr)
	}
	return d, err
}

// WriteLayerTar writes the canonical tar of layer d to w and returns its size.
// Its SHA-256 is d, unless the layer directory was tampered with.
func (s *Store) WriteLayerTar(ctx context.Context, d Digest, w io.Writer) (int64, error) {
	if err := d.Validate(); err != nil {
		return 0, err
	}
	if ok, err := s.hasLayer(ctx, d); err != nil {
		return 0, err
	} else if !ok {
		return 0, errdefs.NotFound("layer %s not found", d)
	}
	return writeCanonicalTar(ctx, s.LayerPath(d), w)
}

func (s *Store) hasLayer(ctx context.Context, d Digest) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM layers WHERE digest = ?`, string(d)).Scan(&n)
	return n > 0, err
}

// syncfs flushes the filesystem holding dir: one call instead of an fsync per
// extracted file.
func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}

// removeLayerDirs moves the given layers' directories into tmp/, where the
// trash deletes them; a crash midway leaves only tmp/ debris, which Startup
// clears.
func (s *Store) removeLayerDirs(ds []Digest) error {
	var errs []error
	for _, d := range ds {
		gone, err := os.MkdirTemp(s.tmpDir(), "gone-")
		if err != nil {
			return err
		}
		if err := os.Rename(s.LayerPath(d), filepath.Join(gone, "layer")); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		s.trash.add(gone)
	}
	return errors.Join(errs...)
}

func lutimesEpoch(p string) error {
	ts := unix.NsecToTimespec(0)
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// dropLayerIfUnused forgets layer d and removes its directory unless an image
// uses it.
func (s *Store) dropLayerIfUnused(ctx context.Context, d Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	used, err := usedLayers(ctx, tx)
	if err != nil || used[d] {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM layers WHERE digest = ?`, string(d)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return s.removeLayerDirs([]Digest{d})
}
