package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/testutil"
)

func openTestDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestMakeDurable(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "a"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "a/f"), []byte("x"), 0o644))
	must(t, os.Symlink("a", filepath.Join(dir, "l")))
	for _, plan := range []syncPlan{
		{files: []string{"a/f"}, dirs: []string{"a"}, ok: true},
		{files: []string{"a"}, dirs: []string{"a/f"}, ok: true}, // replaced: falls back to syncfs
		{files: []string{"l/f"}, ok: true},                      // through a symlink: not followed, syncfs
		{ok: false},
	} {
		if err := makeDurable(openTestDir(t, dir), plan, nil); err != nil {
			t.Errorf("plan %+v: got %v, want no error", plan, err)
		}
	}
	// The flush follows the tree when it is renamed.
	fd := openTestDir(t, dir)
	moved := filepath.Join(t.TempDir(), "moved")
	must(t, os.Rename(dir, moved))
	if err := fsyncAll(fd, syncPlan{files: []string{"a/f"}, dirs: []string{"a"}, ok: true}, nil); err != nil {
		t.Errorf("after a rename: got %v, want no error", err)
	}
}

func TestMakeDurableStopped(t *testing.T) {
	// A root that cannot be flushed (no open directory): without stop, the
	// fsyncs fail and so does the syncfs after them; stopped, nothing more
	// is tried.
	const bad = -1
	plan := syncPlan{files: []string{"f"}, ok: true}
	if err := makeDurable(bad, plan, nil); err == nil {
		t.Fatalf("bad root, not stopped: got no error, want one")
	}
	stop := make(chan struct{})
	close(stop)
	for _, p := range []syncPlan{plan, {ok: false}} {
		want := p.ok // a syncfs, once begun, is not stopped
		if err := makeDurable(bad, p, stop); (err == nil) != want {
			t.Errorf("plan %+v, stopped: got %v, want error: %v", p, err, !want)
		}
	}
}

// recordLogs makes s log to t and to the returned buffer.
func recordLogs(t *testing.T, s *Store) *testutil.SyncBuffer {
	b := &testutil.SyncBuffer{}
	s.log = slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, b), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return b
}

func layerDurable(t *testing.T, s *Store, d Digest) bool {
	t.Helper()
	var durable bool
	must(t, s.db.QueryRow(`SELECT durable FROM layers WHERE digest = ?`, string(d)).Scan(&durable))
	return durable
}

// holdMarks holds back every layer's durable mark until the returned
// function is called.
func holdMarks(s *Store) (release func()) {
	gate := make(chan struct{})
	s.beforeMark = func(_ Digest, err error) error {
		<-gate
		return err
	}
	return sync.OnceFunc(func() { close(gate) })
}

func TestLayerDurableAfterItsFlush(t *testing.T) {
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	release := holdMarks(s)
	defer release()
	d, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	// Recorded and usable, not durable yet.
	if layerDurable(t, s, d) {
		t.Fatalf("layer %s: got durable before its flush ended, want not durable", d)
	}
	im, err := s.CreateImage(ctx, []Digest{d}, ImageConfig{}, "test")
	must(t, err)
	if im.Durable {
		t.Errorf("image on a layer being flushed: got Durable true, want false")
	}
	// A duplicate of the layer waits for the first copy's flush too.
	d2, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	if d2 != d {
		t.Fatalf("same tree again: got %s, want %s", d2, d)
	}
	waited := make(chan error, 2)
	for range 2 {
		go func() { waited <- s.WaitDurable(ctx, d) }()
	}
	select {
	case err := <-waited:
		t.Fatalf("WaitDurable returned %v before the layer was marked durable", err)
	default:
	}
	release()
	for range 2 {
		if err := <-waited; err != nil {
			t.Fatalf("WaitDurable: got %v, want nil", err)
		}
	}
	if !layerDurable(t, s, d) {
		t.Errorf("layer %s: got not durable once WaitDurable returned, want durable", d)
	}
	if im, err := s.Get(ctx, im.ID); err != nil || !im.Durable {
		t.Errorf("image: got Durable %v, %v; want true", im.Durable, err)
	}
	if err := s.WaitDurable(ctx, d); err != nil {
		t.Errorf("WaitDurable on a durable layer: got %v, want nil", err)
	}
	if err := s.WaitDurable(ctx, Digest(digestPrefix+strings.Repeat("0", 64))); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("WaitDurable on an unknown layer: got %v, want ErrNotFound", err)
	}
}

func TestLayerFlushFails(t *testing.T) {
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	logs := recordLogs(t, s)
	s.beforeMark = func(Digest, error) error { return errors.New("injected write-back error") }
	d, _ := imagedLayer(t, s, makeTree(t)) // an image: else start-up drops the layer
	for _, when := range []string{"during the flush", "after it"} {
		if err := s.WaitDurable(ctx, d); err == nil || !strings.Contains(err.Error(), "not written to disk") {
			t.Errorf("WaitDurable %s: got %v, want an error saying the layer is not written to disk", when, err)
		}
	}
	s.bg.wait()
	if layerDurable(t, s, d) {
		t.Fatalf("layer %s: got durable after a failed flush, want not durable", d)
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a failed flush logged no error:\n%s", logs)
	}
	// The next start-up finds it intact (the data is in the page cache).
	s.beforeMark = nil
	must(t, s.Startup(ctx))
	if !layerDurable(t, s, d) {
		t.Errorf("layer %s intact at start-up: got not durable, want durable", d)
	}
}

// otherTree is makeTree's tree plus a file: another layer.
func otherTree(t *testing.T) string {
	t.Helper()
	dir := makeTree(t)
	must(t, os.WriteFile(filepath.Join(dir, "extra"), []byte("x"), 0o644))
	return dir
}

// imagedLayer stores the tree at dir as a layer and records an image of
// it alone.
func imagedLayer(t *testing.T, s *Store, dir string) (Digest, Image) {
	t.Helper()
	ctx := context.Background()
	d, err := s.AddLayerFromDir(ctx, dir)
	must(t, err)
	im, err := s.CreateImage(ctx, []Digest{d}, ImageConfig{}, "test")
	must(t, err)
	return d, im
}

func TestStartupChecksLayersNotDurable(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, s *Store, d Digest) // nil: none (a daemon crash)
	}{
		{"intact", nil},
		{"file changed", func(t *testing.T, s *Store, d Digest) {
			if s.isLayerImage(d) {
				editLayerImage(t, s, d, func(b []byte) []byte { return bytes.Replace(b, []byte("hello"), []byte("hellO"), 1) })
				return
			}
			must(t, os.WriteFile(filepath.Join(s.LayerPath(d), "a/b/file"), []byte("hellO"), 0o644))
		}},
		{"file removed", func(t *testing.T, s *Store, d Digest) {
			if s.isLayerImage(d) { // what a write that never reached the disk leaves
				editLayerImage(t, s, d, func(b []byte) []byte { return make([]byte, len(b)) })
				return
			}
			must(t, os.Remove(filepath.Join(s.LayerPath(d), "top")))
		}},
		{"directory removed", func(t *testing.T, s *Store, d Digest) { removeLayerOnDisk(t, s, d) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t, BaseConfig{})
			ctx := context.Background()
			d, im := imagedLayer(t, s, makeTree(t))
			must(t, s.SetName(ctx, "kept-or-lost", im.ID))
			// Another image, on a layer of its own, is never touched.
			_, oim := imagedLayer(t, s, otherTree(t))
			s.bg.wait()
			// As a crash in the middle of d's flush leaves it.
			_, err := s.db.Exec(`UPDATE layers SET durable = 0 WHERE digest = ?`, string(d))
			must(t, err)
			if tc.damage != nil {
				tc.damage(t, s, d)
			}
			logs := recordLogs(t, s)
			must(t, s.Startup(ctx))
			s.trash.wait()
			if _, err := s.Get(ctx, oim.ID); err != nil {
				t.Errorf("the other image: %v", err)
			}
			got, err := s.Resolve(ctx, "kept-or-lost")
			if tc.damage == nil {
				if err != nil || !got.Durable || !layerDurable(t, s, d) {
					t.Fatalf("intact layer: got image %v (durable %v), layer durable %v; want both durable", err, got.Durable, layerDurable(t, s, d))
				}
				if strings.Contains(logs.String(), "level=ERROR") {
					t.Errorf("an intact layer logged an error:\n%s", logs)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("image on a damaged layer: got %v, want ErrNotFound", err)
			}
			if ok, err := s.hasLayer(ctx, d); err != nil || ok {
				t.Errorf("damaged layer's record: got %v, %v; want gone", ok, err)
			}
			if n := storedLayers(t, s); n != 1 {
				t.Errorf("damaged layer: %d layers stored, want 1 (the other)", n)
			}
			for _, want := range []string{
				`level=ERROR msg="image lost: the machine stopped before its layer was written to disk" image=` + im.ID,
				`level=ERROR msg="layer lost: the machine stopped before its layer was written to disk" layer=` + string(d),
			} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs)
				}
			}
		})
	}
}

func TestGroupWaitsForLateStarters(t *testing.T) {
	var g group
	g.wait() // nothing runs: returns at once
	first, second, started := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var ended sync.WaitGroup
	ended.Add(2)
	g.Go(func() {
		defer ended.Done()
		<-first
		g.Go(func() { defer ended.Done(); <-second })
		close(started)
	})
	waited := make(chan struct{})
	go func() { g.wait(); close(waited) }()
	close(first)
	<-started // the second began while the wait was under way
	select {
	case <-waited:
		t.Fatal("wait returned while a goroutine started during the wait still ran")
	default:
	}
	close(second)
	<-waited
	ended.Wait()
	g.wait() // idle again: returns at once
}

// A layer no image uses (a crash between storing it and recording its
// image) goes at start-up; one an image uses stays.
func TestStartupDropsUnusedLayers(t *testing.T) {
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	used, _ := imagedLayer(t, s, makeTree(t))
	unused, err := s.AddLayerFromDir(ctx, otherTree(t))
	must(t, err)
	s.bg.wait()
	logs := recordLogs(t, s)
	must(t, s.Startup(ctx))
	s.trash.wait()
	if ok, err := s.hasLayer(ctx, used); err != nil || !ok {
		t.Errorf("the layer an image uses: recorded %v, %v; want kept", ok, err)
	}
	if _, err := os.Stat(filepath.Join(s.LayerPath(used), "a/b/file")); err != nil {
		t.Errorf("the layer an image uses: %v", err)
	}
	if ok, err := s.hasLayer(ctx, unused); err != nil || ok {
		t.Errorf("the layer no image uses: recorded %v, %v; want gone", ok, err)
	}
	if n := storedLayers(t, s); n != 1 {
		t.Errorf("%d layers on disk after start-up, want 1", n)
	}
	if want := `msg="removed a layer no image uses" layer=` + string(unused); !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logs)
	}
}

func TestDropLayerIfUnused(t *testing.T) {
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	d, im := imagedLayer(t, s, makeTree(t))
	must(t, s.DropLayerIfUnused(ctx, d))
	if ok, err := s.hasLayer(ctx, d); err != nil || !ok {
		t.Fatalf("a layer an image uses: recorded %v, %v; want kept", ok, err)
	}
	must(t, s.Delete(ctx, im.ID)) // the layer goes with its image
	d, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	must(t, s.DropLayerIfUnused(ctx, d))
	s.trash.wait()
	if ok, err := s.hasLayer(ctx, d); err != nil || ok {
		t.Errorf("a layer no image uses: recorded %v, %v; want gone", ok, err)
	}
	if n := storedLayers(t, s); n != 0 {
		t.Errorf("%d layers on disk, want 0", n)
	}
}
