package image

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func TestImages(t *testing.T) {
	s, clock := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	d1, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	other := makeTree(t)
	must(t, os.WriteFile(other+"/extra", []byte("x"), 0o644))
	d2, err := s.AddLayerFromDir(ctx, other)
	must(t, err)
	cfg := ImageConfig{Env: []string{"PATH=/bin"}, Workdir: "/"}

	a, err := s.CreateImage(ctx, []Digest{d1}, cfg, "test a")
	must(t, err)
	if !strings.HasPrefix(a.ID, "im-") || len(a.ID) != 3+64 {
		t.Fatalf("got id %q, want im-<64 hex>", a.ID)
	}
	again, err := s.CreateImage(ctx, []Digest{d1}, cfg, "other source")
	must(t, err)
	if again.ID != a.ID || again.Source != "test a" {
		t.Fatalf("identical image: got %s (%q), want %s (%q)", again.ID, again.Source, a.ID, "test a")
	}
	clock.Advance(time.Second)
	b, err := s.CreateImage(ctx, []Digest{d1, d2}, cfg, "test b")
	must(t, err)
	if b.ID == a.ID {
		t.Fatalf("different layers gave the same id")
	}
	must(t, s.SetName(ctx, "base", a.ID))
	must(t, s.SetName(ctx, "tool:1", b.ID))

	t.Run("resolve", func(t *testing.T) {
		for ref, want := range map[string]string{"base": a.ID, a.ID: a.ID, "tool:1": b.ID} {
			got, err := s.Resolve(ctx, ref)
			if err != nil || got.ID != want {
				t.Errorf("Resolve(%q): got %s, %v; want %s", ref, got.ID, err, want)
			}
		}
		for _, ref := range []string{"nope", "im-0000", ""} {
			_, err := s.Resolve(ctx, ref)
			if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `"`+ref+`"`) {
				t.Errorf("Resolve(%q): got %v, want ErrNotFound naming the ref", ref, err)
			}
		}
	})
	t.Run("invalid", func(t *testing.T) {
		if err := s.SetName(ctx, "im-x", a.ID); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("SetName(im-x): got %v, want ErrInvalidArgument", err)
		}
		if err := s.SetName(ctx, "x", "im-missing"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("SetName to a missing image: got %v, want ErrNotFound", err)
		}
		if _, err := s.CreateImage(ctx, []Digest{Digest("sha256:" + strings.Repeat("a", 64))}, cfg, ""); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("CreateImage with an unknown layer: got %v, want ErrNotFound", err)
		}
		if _, err := s.CreateImage(ctx, []Digest{"md5:x"}, cfg, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("CreateImage with a bad digest: got %v, want ErrInvalidArgument", err)
		}
		if _, err := s.CreateImage(ctx, []Digest{d1}, ImageConfig{Workdir: "rel"}, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("CreateImage with a relative workdir: got %v, want ErrInvalidArgument", err)
		}
	})
	t.Run("list and touch", func(t *testing.T) {
		clock.Advance(time.Minute)
		must(t, s.TouchLastUsed(ctx, b.ID))
		ims, err := s.List(ctx)
		must(t, err)
		if len(ims) != 2 || ims[0].ID != a.ID || ims[1].ID != b.ID {
			t.Fatalf("List: got %v, want [a b]", ims)
		}
		if !ims[1].LastUsed.Equal(clock.Now()) || !ims[0].LastUsed.IsZero() {
			t.Errorf("LastUsed: got %v and %v, want zero and %v", ims[0].LastUsed, ims[1].LastUsed, clock.Now())
		}
		if len(ims[0].Names) != 1 || ims[0].Names[0] != "base" {
			t.Errorf("names of a: got %v, want [base]", ims[0].Names)
		}
		if err := s.TouchLastUsed(ctx, "im-nope"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("TouchLastUsed(im-nope): got %v, want ErrNotFound", err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if err := s.Delete(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Delete(nope): got %v, want ErrNotFound", err)
		}
		must(t, s.Delete(ctx, "tool:1"))
		// d2 was only b's; d1 is still a's.
		if _, err := os.Stat(s.LayerPath(d2)); !os.IsNotExist(err) {
			t.Errorf("layer only b used: got %v, want it removed", err)
		}
		if _, err := os.Stat(s.LayerPath(d1)); err != nil {
			t.Errorf("layer a still uses: %v", err)
		}
		if _, err := s.Resolve(ctx, "tool:1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("deleted image's name: got %v, want ErrNotFound", err)
		}
		must(t, s.Delete(ctx, a.ID))
		if ents, _ := os.ReadDir(s.layersDir()); len(ents) != 0 {
			t.Errorf("after deleting every image: %d layer dirs, want 0", len(ents))
		}
		var n int
		must(t, s.db.QueryRow(`SELECT COUNT(*) FROM layers`).Scan(&n))
		if n != 0 {
			t.Errorf("after deleting every image: %d layer rows, want 0", n)
		}
	})
}
