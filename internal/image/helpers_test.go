package image

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/testutil"
)

// fakeClock is a Clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestStore opens a store in a fresh directory: root is <dir>/images.
func newTestStore(t testing.TB, bases BaseConfig) (*Store, *fakeClock) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	s, err := New(db, filepath.Join(dir, "images"), testLogger(t), clock, bases)
	if err != nil {
		t.Fatal(err)
	}
	// The layers' flushes end before the database closes.
	t.Cleanup(s.Close)
	s.checkStreamed = true // every streamed digest is checked against a walk
	if os.Getenv("SANDBOXD_TEST_LAYERS") == "tree" {
		s.UseTreeLayers() // scripts/test.sh runs the package's tests both ways
	}
	if err := s.Startup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, clock
}

// requireRoot: see testutil.RequireRoot.
func requireRoot(t testing.TB) { testutil.RequireRoot(t, "ownership, device nodes, overlay mounts") }

// storedLayers counts the layers layers/sha256/ holds (a layer image is a
// file and the directory it is mounted on).
func storedLayers(t testing.TB, s *Store) int {
	t.Helper()
	ents, err := os.ReadDir(s.layersDir())
	if err != nil {
		t.Fatal(err)
	}
	hexes := map[string]bool{}
	for _, e := range ents {
		hex, _ := layerEntryName(e.Name())
		hexes[hex] = true
	}
	return len(hexes)
}

// removeLayerOnDisk removes what holds layer d on disk, as a disk that lost
// it would, and leaves the metadata alone.
func removeLayerOnDisk(t testing.TB, s *Store, d Digest) {
	t.Helper()
	if err := UnmountRootfs(s.LayerPath(d)); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.RemoveAll(s.LayerPath(d)), os.RemoveAll(s.layerImagePath(d))); err != nil {
		t.Fatal(err)
	}
}

// editLayerImage rewrites layer d's image file (unmounted for the edit and
// left so; Startup mounts it again) with edit.
func editLayerImage(t testing.TB, s *Store, d Digest, edit func([]byte) []byte) {
	t.Helper()
	if err := UnmountRootfs(s.LayerPath(d)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.layerImagePath(d))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.layerImagePath(d), edit(b), 0o644); err != nil {
		t.Fatal(err)
	}
}
