package secret

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/store"
)

func newStore(t *testing.T) *Store {
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return New(db, clock.NewFake(time.Unix(1000, 0)))
}

func TestPutValuesList(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.Put(ctx, "db", map[string]string{"PASSWORD": "hunter2", "USER": "u"}); err != nil {
		t.Fatal(err)
	}
	s.Put(ctx, "other", map[string]string{"USER": "override"})
	got, err := s.Values(ctx, []string{"db", "other"})
	if err != nil {
		t.Fatal(err)
	}
	if got["PASSWORD"] != "hunter2" || got["USER"] != "override" {
		t.Errorf("got %v, want PASSWORD=hunter2 USER=override", got)
	}
	list, _ := s.List(ctx)
	if len(list) != 2 || strings.Join(list[0].Keys, ",") != "PASSWORD,USER" {
		t.Errorf("got list %+v", list)
	}
}

func TestErrorsNeverHoldValues(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	cases := []struct {
		name   string
		values map[string]string
		class  error
	}{
		{"bad name!", map[string]string{"K": "topsecret"}, errdefs.ErrInvalidArgument},
		{"ok", map[string]string{"bad key": "topsecret"}, errdefs.ErrInvalidArgument},
		{"empty", nil, errdefs.ErrInvalidArgument},
	}
	for _, c := range cases {
		_, err := s.Put(ctx, c.name, c.values)
		if !errors.Is(err, c.class) {
			t.Errorf("Put(%q): got %v, want class %v", c.name, err, c.class)
		}
		if err != nil && strings.Contains(err.Error(), "topsecret") {
			t.Errorf("error %q shows a secret value", err)
		}
	}
	if _, err := s.Values(ctx, []string{"nope"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown secret: got %v, want not found", err)
	}
	if err := s.Delete(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("delete unknown: got %v, want not found", err)
	}
}
