package image

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/fsutil"
)

// Durability. A new layer is recorded, and usable, as soon as its digest is
// known; its flush to disk (started beside the digest, see storeTree) ends in
// the background, and then the layer is marked durable (layers.durable).
// WaitDurable waits for that. A daemon that stops waits for the flushes under
// way (Close); a layer still not durable at Startup was cut short by a crash:
// Startup checks its digest, and either marks it durable (a daemon crash:
// the data was in the page cache) or drops it with the images using it (a
// machine crash: part of it never reached the disk).

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

// flush is the background flush of one tree, from before its digest is
// known (storeTree) to the layer's durable mark (finishFlush).
type flush struct {
	stop     chan struct{} // closed: the tree is not wanted (a duplicate, an error)
	synced   chan error    // makeDurable's result; buffered
	start    time.Time
	took     time.Duration // makeDurable's time; written before synced is sent to
	eachFile bool          // the plan's ok (an fsync of each file), for the log

	// done is closed once the layer's flush is over: marked durable, or
	// failed (err). Only for a flush whose layer was recorded.
	done chan struct{}
	err  error
}

// startFlush opens the tree at root and flushes it as plan says in the
// background. The flush works relative to the open directory, so it goes on
// wherever the tree is renamed to. The caller ends the flush with abandon,
// or hands it to finishFlush (commitLayer).
func (s *Store) startFlush(root string, plan syncPlan) (*flush, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	f := &flush{stop: make(chan struct{}), synced: make(chan error, 1), done: make(chan struct{}),
		start: s.clock.Now(), eachFile: plan.ok}
	s.bg.Go(func() {
		err := makeDurable(fd, plan, f.stop)
		unix.Close(fd)
		f.took = s.clock.Now().Sub(f.start)
		f.synced <- err
	})
	return f, nil
}

// abandon stops the flush of a tree that is not stored: the fsyncs not
// started yet are skipped. With wait, it returns once the flush goroutine
// is done; without, at once (the goroutine ends by itself).
func (f *flush) abandon(wait bool) {
	close(f.stop)
	if wait {
		<-f.synced
	}
}

// finishFlush runs once layer d is recorded (not durable) with f as its
// flush: it waits for the flush, makes the layer's directory entry durable
// (fsync of layers/) and marks the layer durable, then closes f.done. A
// failure is logged and leaves the layer not durable: WaitDurable reports
// it, and the next Startup checks the layer. It runs in s.bg.
func (s *Store) finishFlush(ctx context.Context, d Digest, f *flush) {
	err := <-f.synced
	if err == nil {
		err = fsutil.SyncDir(s.layersDir())
	}
	if s.beforeMark != nil {
		err = s.beforeMark(d, err)
	}
	s.mu.Lock()
	// Unless the layer was deleted and stored again meanwhile: that copy
	// has a flush of its own, which marks it.
	if s.flushes[d] == f {
		delete(s.flushes, d)
		if err == nil {
			err = s.setDurable(ctx, d)
		}
	}
	f.err = err
	close(f.done)
	s.mu.Unlock()
	if err != nil {
		s.log.Error("layer not written to disk: it stays not durable, and the next start-up checks it", "layer", d, "err", err)
		return
	}
	s.log.Debug("layer durable", "layer", d, "sync", f.took.Round(time.Microsecond), "fsync_each", f.eachFile,
		"total", s.clock.Now().Sub(f.start).Round(time.Microsecond))
}

// WaitDurable returns once layer d is durable: its files, its directory and
// its record are on disk, and a machine crash does not lose it. New layers
// are recorded before that (see storeTree); a caller that needs more waits
// here, for the layer's flush whoever started it (a snapshot that turned
// out to be a duplicate waits for the first copy's). Errors: ErrNotFound
// when the store does not hold d; ctx's error; an unclassified error when
// the layer's flush failed (the layer stays not durable until the next
// Startup checks it). Safe for concurrent use.
func (s *Store) WaitDurable(ctx context.Context, d Digest) error {
	for {
		s.mu.Lock()
		f := s.flushes[d]
		s.mu.Unlock()
		if f == nil {
			break
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("wait for layer %s to be durable: %w", d, ctx.Err())
		}
		if f.err != nil {
			return fmt.Errorf("layer %s not written to disk: %w", d, f.err)
		}
		// Look again: the layer may have been stored again since.
	}
	var durable bool
	err := s.db.QueryRowContext(ctx, `SELECT durable FROM layers WHERE digest = ?`, string(d)).Scan(&durable)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return errdefs.NotFound("layer %s not found", d)
	case err != nil:
		return fmt.Errorf("layer %s: %w", d, err)
	case !durable:
		// Not durable and nobody flushing it: its flush failed. Flushing
		// again could report success for pages whose write-back failed.
		return fmt.Errorf("layer %s not written to disk: its flush failed (see the daemon's log); the next start-up checks it", d)
	}
	return nil
}

// Close waits for the layers' background flushes to end (each takes about
// as long as writing its layer's data to disk), so that every layer stored
// so far is durable, or its failure logged, when it returns; flushes that
// start meanwhile (a snapshot call still under way) are waited for too. The
// store is not to be used after. The trash is not waited for (what it has
// not removed, the next Startup does). Then the layer images are unmounted
// (those that running sandboxes still use are detached: see
// unmountLayers). Idempotent.
func (s *Store) Close() {
	s.bg.wait()
	if err := s.unmountLayers(); err != nil {
		s.log.Error("layer images left mounted", "err", err)
	}
}

// group runs goroutines and waits for them, as a sync.WaitGroup does,
// except that new ones may start while a wait is under way (they are
// waited for too). The zero value is ready for use.
type group struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

// Go runs f in a new goroutine counted by g.
func (g *group) Go(f func()) {
	g.mu.Lock()
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
	g.mu.Unlock()
	go func() {
		defer g.done()
		f()
	}()
}

func (g *group) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n--; g.n == 0 {
		close(g.idle)
	}
}

// wait returns once no goroutine of g runs.
func (g *group) wait() {
	for {
		g.mu.Lock()
		n, idle := g.n, g.idle
		g.mu.Unlock()
		if n == 0 {
			return
		}
		<-idle
	}
}

// checkPending decides, at Startup, about layer d: recorded, its directory
// in place, but not marked durable (a crash cut its flush short). If its
// tree still has digest d, it is flushed and marked durable: after a
// daemon crash the data was in the page cache, and nothing is lost.
// Otherwise part of it never reached the disk (the machine stopped): the
// layer goes, with the images that use it (logged at error level).
func (s *Store) checkPending(ctx context.Context, d Digest) error {
	got, _, err := walkDigest(ctx, s.LayerPath(d), canonOptions{})
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if err == nil {
		if got == d {
			s.log.Info("layer checked after an unfinished flush: intact, now durable", "layer", d)
			return s.markDurable(ctx, d)
		}
		err = fmt.Errorf("its tree now has digest %s", got)
	}
	return s.dropLostLayer(ctx, d, true, err)
}

// markDurable flushes layer d's image file, or the filesystem holding its
// directory, and the layers/ directory, then records d as durable.
func (s *Store) markDurable(ctx context.Context, d Digest) error {
	if s.isLayerImage(d) {
		err := s.syncLayerImage(d)
		if err == nil {
			err = fsutil.SyncDir(s.layersDir())
		}
		if err == nil {
			err = s.setDurable(ctx, d)
		}
		return err
	}
	fd, err := unix.Open(s.LayerPath(d), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: s.LayerPath(d), Err: err}
	}
	err = makeDurable(fd, syncPlan{}, nil) // a syncfs
	unix.Close(fd)
	if err == nil {
		err = fsutil.SyncDir(s.layersDir())
	}
	if err == nil {
		err = s.setDurable(ctx, d)
	}
	return err
}

// setDurable records layer d as durable.
func (s *Store) setDurable(ctx context.Context, d Digest) error {
	_, err := s.db.ExecContext(ctx, `UPDATE layers SET durable = 1 WHERE digest = ?`, string(d))
	return err
}

// makeDurable flushes the tree whose root directory is open as root (the
// caller keeps it open until this returns) as plan says. An fsync that fails
// (a path a later entry replaced) falls back to syncfs. Closing stop (nil:
// never) means the tree is not wanted any more: the fsyncs not started yet
// are skipped and nil is returned (a syncfs under way cannot be stopped; it
// runs to its end).
func makeDurable(root int, plan syncPlan, stop <-chan struct{}) error {
	if plan.ok {
		if err := fsyncAll(root, plan, stop); err == nil || stopped(stop) {
			return nil
		}
	}
	if err := unix.Syncfs(root); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
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

// fsyncAll fsyncs plan's files and directories, found below the directory
// open as root, a few at a time: each fsync ends with a flush of the disk's
// cache, and fsyncs made together share the wait (one after the other, a
// one-file layer waited for two flushes). The tree is complete before this
// starts, so the order of the fsyncs does not matter. Once stop closes, the
// fsyncs not started are skipped.
func fsyncAll(root int, plan syncPlan, stop <-chan struct{}) error {
	type job struct {
		path  string
		flags uint64
	}
	jobs := make([]job, 0, len(plan.files)+len(plan.dirs)+1)
	for _, f := range plan.files {
		jobs = append(jobs, job{f, unix.O_RDONLY})
	}
	for _, d := range append(plan.dirs, ".") {
		jobs = append(jobs, job{d, unix.O_RDONLY | unix.O_DIRECTORY})
	}
	workers := min(len(jobs), fsyncWorkers)
	errs := make(chan error, workers)
	next := make(chan job)
	for range workers {
		go func() {
			var first error
			for j := range next {
				if err := fsyncAt(root, j.path, j.flags); err != nil && first == nil {
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

// fsyncAt fsyncs rel, below the directory open as root; no symlink is
// followed on the way (the tree is a sandbox's).
func fsyncAt(root int, rel string, flags uint64) error {
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return &os.PathError{Op: "open", Path: rel, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: rel, Err: err}
	}
	return nil
}
