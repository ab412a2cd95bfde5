package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// AddLayerFromTar extracts the uncompressed tar read from r as a layer and
// records it. OCI whiteouts (".wh.NAME", ".wh..wh..opq") become overlay
// whiteouts. Entries naming absolute paths, climbing out with "..", or
// passing through a symlink are refused with ErrInvalidArgument, and nothing
// is kept. The digest is that of the extracted tree's canonical tar, not of
// r's bytes. Adding a layer the store holds already returns its digest and
// stores nothing new. The layer may reach the disk after this returns (see
// storeTree): WaitDurable waits for that. Safe for concurrent use.
func (s *Store) AddLayerFromTar(ctx context.Context, r io.Reader) (Digest, error) {
	return s.addLayer(ctx, "layer from tar", func(x layerSink) error { return x.readTar(ctx, r) })
}

// layerSink is what a layer's tar entries go into: an extractor making a
// tree, or an imageBuilder making an image (see erofslayers.go).
type layerSink interface {
	// add makes one entry of an OCI layer tar; r holds its contents.
	add(hdr *tar.Header, r io.Reader) error
	// readTar adds every entry of the layer tar read from r.
	readTar(ctx context.Context, r io.Reader) error
}

// addLayer has fill add a layer's entries to a new image or directory
// under tmp/ (as the store keeps new layers) and stores the result (see
// storeImage, storeTree).
func (s *Store) addLayer(ctx context.Context, what string, fill func(x layerSink) error) (Digest, error) {
	if s.images {
		return s.addLayerImage(ctx, what, func(b *imageBuilder) error { return fill(b) })
	}
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
// caller gives up) as a layer and returns its digest: the tree's flush to
// disk starts (see startFlush) while it is digested, then the tree is
// renamed into place and recorded as not durable, and storeTree returns;
// the flush ends in the background and marks the layer durable (see
// finishFlush; WaitDurable waits for it). When the store holds the layer
// already, tmp is left for the caller to remove, and its flush is stopped
// and not waited for: the copy is thrown away, and the stored layer has a
// flush of its own.
func (s *Store) storeTree(ctx context.Context, tmp string, plan syncPlan, o canonOptions, sd *streamDigest, st *stages) (Digest, error) {
	fl, err := s.startFlush(tmp, plan)
	if err != nil {
		return "", err
	}
	st.add("fsync_each", plan.ok)
	return s.storeLayer(ctx, tmp, fl, sd, func() (Digest, int64, error) { return walkDigest(ctx, tmp, o) }, st)
}

// storeLayer stores the complete layer src (a tree or an image under tmp/,
// being flushed by fl): it takes its digest (see layerDigest; walk digests
// it afresh), then commits it, or stops fl when the store has the layer
// already.
func (s *Store) storeLayer(ctx context.Context, src string, fl *flush, sd *streamDigest, walk func() (Digest, int64, error), st *stages) (Digest, error) {
	d, size, err := s.layerDigest(sd, walk, st)
	if err != nil {
		fl.abandon(true)
		return "", fmt.Errorf("digest: %w", err)
	}
	if committed, err := s.commitLayer(ctx, src, d, size, fl); err != nil {
		fl.abandon(true)
		return "", fmt.Errorf("%s: %w", d, err)
	} else if !committed {
		fl.abandon(false) // the flush goroutine ends by itself
		st.add("duplicate", true)
		return d, nil
	}
	st.mark("commit")
	return d, nil
}

// layerDigest returns a layer's digest (the SHA-256 of its canonical tar)
// and the tar's size: sd's, streamed while the layer was made, when it
// holds, else walk's.
func (s *Store) layerDigest(sd *streamDigest, walk func() (Digest, int64, error), st *stages) (Digest, int64, error) {
	d, size, why, ok := sd.result()
	st.mark("digest_wait")
	if ok {
		s.streamedDigests.Add(1)
	}
	if !ok || s.checkStreamed {
		st.add("walked", why)
		wd, wsize, err := walk()
		if err != nil {
			return "", wsize, err
		}
		st.mark("hash")
		if ok && (wd != d || wsize != size) {
			return "", 0, fmt.Errorf("streamed digest %s (%d bytes) is not the tree's %s (%d bytes)", d, size, wd, wsize)
		}
		d, size = wd, wsize
	}
	st.add("bytes", size)
	return d, size, nil
}

// walkDigest returns the digest of the tree at dir, which o describes (the
// SHA-256 of its canonical tar), and the tar's size.
func walkDigest(ctx context.Context, dir string, o canonOptions) (Digest, int64, error) {
	h := sha256.New()
	size, err := writeCanonicalTarOpts(ctx, dir, h, o)
	if err != nil {
		return "", size, err
	}
	return digestFromSum(h.Sum(nil)), size, nil
}

// holdsLayer reports whether layer d is recorded and its directory is in
// place: a tree of digest d made now is a duplicate (commitLayer asks,
// under s.mu). The layer may not be durable yet (see WaitDurable).
func (s *Store) holdsLayer(ctx context.Context, d Digest) (bool, error) {
	ok, err := s.hasLayer(ctx, d)
	if err != nil || !ok {
		return false, err
	}
	_, err = os.Lstat(s.LayerPath(d))
	return err == nil, nil
}

// commitLayer puts the extracted tree or the image tmp in its place (see
// placeLayer) and records it as not durable, with f (tmp's flush) as its flush, finished in the background
// by finishFlush; unless the store has the layer already (committed false:
// f is the caller's to stop, tmp to remove).
func (s *Store) commitLayer(ctx context.Context, tmp string, d Digest, size int64, f *flush) (committed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if held, err := s.holdsLayer(ctx, d); err != nil || held {
		return false, err // held: stored once already
	}
	if err := s.placeLayer(tmp, d); err != nil {
		return false, err
	}
	// A row without its directory (lost, not yet dropped) is taken over.
	if _, err := s.db.ExecContext(ctx, `INSERT INTO layers (digest, size, created_at, durable) VALUES (?, ?, ?, 0)
		ON CONFLICT(digest) DO UPDATE SET durable = 0`, string(d), size, s.clock.Now().UnixNano()); err != nil {
		return false, err // the directory, unrecorded, goes at the next store of d or Startup
	}
	s.flushes[d] = f
	bctx := context.WithoutCancel(ctx)
	s.bg.Go(func() { s.finishFlush(bctx, d, f) })
	return true, nil
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

// removeLayerDirs moves the given layers' directories and images into tmp/, where the
// trash deletes them; a crash midway leaves only tmp/ debris, which Startup
// clears.
func (s *Store) removeLayerDirs(ds []Digest) error {
	var errs []error
	for _, d := range ds {
		gone, err := os.MkdirTemp(s.tmpDir(), "gone-")
		if err != nil {
			return err
		}
		if err := s.removeLayerFiles(d, gone); err != nil {
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

// DropLayerIfUnused forgets layer d and removes its files unless an image
// uses it: for a caller that stored d but could not record the image over
// it (a snapshot whose call was cancelled there). Had another caller just
// stored the same layer, and not yet recorded its image, that image then
// fails with ErrNotFound and can be retried, as with Delete.
func (s *Store) DropLayerIfUnused(ctx context.Context, d Digest) error {
	_, err := s.dropUnusedLayers(ctx, []Digest{d})
	return err
}

// dropUnusedLayers forgets those of layers ds (every recorded layer when ds
// is nil) that no image uses, removes their files, and returns them.
func (s *Store) dropUnusedLayers(ctx context.Context, ds []Digest) ([]Digest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	used, err := usedLayers(ctx, tx)
	if err != nil {
		return nil, err
	}
	if ds == nil {
		if ds, err = recordedLayers(ctx, tx); err != nil {
			return nil, err
		}
	}
	var gone []Digest
	for _, d := range ds {
		if used[d] {
			continue
		}
		used[d] = true // listed twice, dropped once
		if _, err := tx.ExecContext(ctx, `DELETE FROM layers WHERE digest = ?`, string(d)); err != nil {
			return nil, err
		}
		gone = append(gone, d)
	}
	if len(gone) == 0 {
		return nil, nil
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return gone, s.removeLayerDirs(gone)
}

func recordedLayers(ctx context.Context, tx *sql.Tx) ([]Digest, error) {
	rows, err := tx.QueryContext(ctx, `SELECT digest FROM layers ORDER BY digest`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ds []Digest
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		ds = append(ds, Digest(d))
	}
	return ds, rows.Err()
}
