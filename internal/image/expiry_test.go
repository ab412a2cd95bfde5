package image

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func TestExpiryByLastUse(t *testing.T) {
	s, clock := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	d1, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	other := makeTree(t)
	must(t, os.WriteFile(other+"/extra", []byte("x"), 0o644))
	d2, err := s.AddLayerFromDir(ctx, other)
	must(t, err)
	const day = 24 * time.Hour

	base, err := s.CreateImageWithTTL(ctx, []Digest{d1}, ImageConfig{}, "base", 0)
	must(t, err)
	dir, err := s.CreateImageWithTTL(ctx, []Digest{d2}, ImageConfig{}, "dir", 30*day)
	must(t, err)
	short, err := s.CreateImageWithTTL(ctx, []Digest{d1, d2}, ImageConfig{}, "short", time.Hour)
	must(t, err)
	if !base.ExpiresAt.IsZero() || !dir.ExpiresAt.Equal(clock.Now().Add(30*day)) {
		t.Fatalf("got expiries %v / %v, want never / now+30d", base.ExpiresAt, dir.ExpiresAt)
	}
	inUse := map[string]bool{}
	collect := func() []string {
		t.Helper()
		gone, err := s.CollectExpired(ctx, func(id string) bool { return inUse[id] })
		must(t, err)
		return gone
	}

	t.Run("asking again for a shorter life keeps the longer", func(t *testing.T) {
		again, err := s.CreateImageWithTTL(ctx, []Digest{d2}, ImageConfig{}, "dir", time.Minute)
		must(t, err)
		if again.ID != dir.ID || again.IdleTTL != 30*day {
			t.Errorf("got %s ttl %v, want %s ttl 30d", again.ID, again.IdleTTL, dir.ID)
		}
	})
	t.Run("in use is kept past expiry", func(t *testing.T) {
		clock.Advance(2 * time.Hour)
		inUse[short.ID] = true
		if gone := collect(); len(gone) != 0 {
			t.Errorf("got %v collected, want none (in use)", gone)
		}
		inUse[short.ID] = false
		if gone := collect(); !slices.Equal(gone, []string{short.ID}) {
			t.Errorf("got %v collected, want [%s]", gone, short.ID)
		}
		if _, err := s.Get(ctx, short.ID); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("collected image: got %v, want not found", err)
		}
		// Its layers live on in the images that share them.
		if _, err := os.Stat(s.LayerPath(d1)); err != nil {
			t.Errorf("shared layer removed: %v", err)
		}
	})
	t.Run("use pushes expiry back", func(t *testing.T) {
		clock.Advance(29 * day)
		must(t, s.TouchLastUsed(ctx, dir.ID))
		clock.Advance(29 * day)
		if gone := collect(); len(gone) != 0 {
			t.Errorf("got %v collected 29 days after last use, want none", gone)
		}
		clock.Advance(2 * day)
		if gone := collect(); !slices.Equal(gone, []string{dir.ID}) {
			t.Errorf("got %v collected 31 days after last use, want [%s]", gone, dir.ID)
		}
	})
	t.Run("no ttl never expires", func(t *testing.T) {
		clock.Advance(10000 * day)
		if gone := collect(); len(gone) != 0 {
			t.Errorf("got %v collected, want none", gone)
		}
		if _, err := s.Get(ctx, base.ID); err != nil {
			t.Errorf("base image: %v", err)
		}
	})
}
