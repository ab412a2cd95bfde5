package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/store"
)

// fakeImageStore holds images that expire at given times on a fake clock.
type fakeImageStore struct {
	clock   *clock.Fake
	mu      sync.Mutex
	expires map[string]time.Time // id -> expiry (zero: never)
	deleted []string
}

func (f *fakeImageStore) ResolveImage(ctx context.Context, ref string) (ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.expires[ref]; !ok {
		return ImageInfo{}, errdefs.NotFound("image %q not found", ref)
	}
	return ImageInfo{ID: ref, Layers: []string{"sha256:" + ref}}, nil
}

func (f *fakeImageStore) ImageFromDiff(context.Context, ImageInfo, RootfsDiff, string, ImageOptions) (ImageInfo, error) {
	return ImageInfo{}, errors.New("not in this fake")
}

func (f *fakeImageStore) ImageFromDir(context.Context, ImageInfo, RootfsDiff, string, string, ImageOptions) (ImageInfo, error) {
	return ImageInfo{}, errors.New("not in this fake")
}

func (f *fakeImageStore) DeleteImage(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.expires, id)
	f.deleted = append(f.deleted, id)
	return nil
}

func (f *fakeImageStore) CollectExpired(ctx context.Context, inUse func(string) bool) ([]string, error) {
	f.mu.Lock()
	var due []string
	for id, at := range f.expires {
		if !at.IsZero() && !at.After(f.clock.Now()) && !inUse(id) {
			due = append(due, id)
		}
	}
	f.mu.Unlock()
	for _, id := range due {
		f.DeleteImage(ctx, id)
	}
	return due, nil
}

func (f *fakeImageStore) gone() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(slices.Values(f.deleted))
}

func newImageEnv(t *testing.T) (*Manager, *fakeImageStore, *clock.Fake) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	imgs := &fakeImageStore{clock: clk, expires: map[string]time.Time{
		"im-root": {}, "im-mounted": clk.Now().Add(time.Hour), "im-idle": clk.Now().Add(time.Hour),
	}}
	m := New(Config{DataDir: dir, DefaultImage: "im-root", LivenessInterval: 10 * time.Millisecond}, Deps{
		DB: db, Provisioner: &fakeProv{alive: map[string]bool{}}, Agents: fakeDialer{&fakeAgent{}}, Images: imgs,
		Secrets: fakeSecrets{}, Clock: clk, Logger: slog.New(slog.DiscardHandler),
	})
	t.Cleanup(m.Close)
	return m, imgs, clk
}

func TestDeleteImageRefusedWhileUsed(t *testing.T) {
	m, imgs, _ := newImageEnv(t)
	ctx := context.Background()
	sb, err := m.Create(ctx, Spec{Mounts: []ImageMount{{Image: "im-mounted", Path: "/work/"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := sb.Spec.Mounts[0]; got.ImageID != "im-mounted" || got.Path != "/work" {
		t.Errorf("recorded mount: got %+v, want the resolved id and a clean path", got)
	}
	for _, id := range []string{"im-root", "im-mounted"} {
		err := m.DeleteImage(ctx, id)
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), sb.ID) {
			t.Errorf("delete %s in use: got %v, want ErrFailedPrecondition naming %s", id, err, sb.ID)
		}
	}
	if err := m.DeleteImage(ctx, "im-nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("delete unknown: got %v, want ErrNotFound", err)
	}
	if _, err := m.Terminate(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteImage(ctx, "im-mounted"); err != nil {
		t.Errorf("delete once unused: %v", err)
	}
	if got := imgs.gone(); !slices.Equal(got, []string{"im-mounted"}) {
		t.Errorf("deleted: got %v, want [im-mounted]", got)
	}
}

func TestImageCollectorSkipsImagesInUse(t *testing.T) {
	m, imgs, clk := newImageEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sb, err := m.Create(ctx, Spec{Timeout: MaxTimeout, Mounts: []ImageMount{{Image: "im-mounted", Path: "/w"}}})
	if err != nil {
		t.Fatal(err)
	}
	go m.RunImageCollector(ctx, time.Minute)
	waitFor := func(want []string) {
		t.Helper()
		for i := 0; i < 200 && !slices.Equal(imgs.gone(), want); i++ {
			clk.Advance(time.Minute) // each advance may fire the collector's timer
			time.Sleep(5 * time.Millisecond)
		}
		if got := imgs.gone(); !slices.Equal(got, want) {
			t.Fatalf("collected: got %v, want %v", got, want)
		}
	}
	waitFor([]string{"im-idle"}) // im-mounted expired too but is in use
	if _, err := m.Terminate(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	waitFor([]string{"im-idle", "im-mounted"})
}

func TestCheckMounts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mounts []ImageMount
		ok     bool
	}{
		{"one", []ImageMount{{Image: "i", Path: "/work"}}, true},
		{"siblings", []ImageMount{{Image: "i", Path: "/a/b"}, {Image: "i", Path: "/a/bc"}}, true},
		{"relative", []ImageMount{{Image: "i", Path: "work"}}, false},
		{"root", []ImageMount{{Image: "i", Path: "/"}}, false},
		{"root via dots", []ImageMount{{Image: "i", Path: "/a/../"}}, false},
		{"empty", []ImageMount{{Image: "i", Path: ""}}, false},
		{"engine mount", []ImageMount{{Image: "i", Path: "/.sandboxd/bin"}}, false},
		{"tmp", []ImageMount{{Image: "i", Path: "/tmp"}}, false},
		{"nested", []ImageMount{{Image: "i", Path: "/a"}, {Image: "i", Path: "/a/b"}}, false},
		{"twice", []ImageMount{{Image: "i", Path: "/a"}, {Image: "j", Path: "/a/"}}, false},
		{"no image", []ImageMount{{Path: "/a"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkMounts(tc.mounts)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errdefs.ErrInvalidArgument)) {
				t.Errorf("got %v, want ok=%v (else ErrInvalidArgument)", err, tc.ok)
			}
		})
	}
}
