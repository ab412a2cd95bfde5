package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/store"
)

type env struct {
	s     *Store
	clock *clock.Fake
	data  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	data := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(data, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := clock.NewFake(time.Unix(1_700_000_000, 0))
	s, err := New(db, data, c, nil, Config{CollectInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Startup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &env{s: s, clock: c, data: data}
}

// take commits a snapshot holding one pages file.
func (e *env) take(t *testing.T, expires time.Time) Snapshot {
	t.Helper()
	p, err := e.s.Begin()
	if err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(p.Dir, "runsc"), 0o700)
	if err := os.WriteFile(filepath.Join(p.Dir, "runsc", "pages.img"), []byte("some memory pages"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer p.Abort() // as callers do: a no-op after Commit
	sn, err := p.Commit(context.Background(), Snapshot{SourceSandboxID: "sb-0000000000000001", App: "default",
		CreatedAt: e.clock.Now(), ExpiresAt: expires})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	return sn
}

func TestCommitAcquire(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sn := e.take(t, e.clock.Now().Add(time.Hour))
	if !ValidID(sn.ID) || sn.Size == 0 || sn.Checksum == "" {
		t.Fatalf("got %+v, want an id, a size and a checksum", sn)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.data, "snapshots", "tmp")); len(ents) != 0 {
		t.Errorf("got %d entries in tmp after commit, want 0", len(ents))
	}
	got, dir, release, err := e.s.Acquire(ctx, sn.ID)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	if got.ID != sn.ID || dir != filepath.Join(e.data, "snapshots", sn.ID) {
		t.Errorf("acquire: got %s at %s", got.ID, dir)
	}
	if err := e.s.Delete(ctx, sn.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("delete while restoring: got %v, want failed precondition", err)
	}
	release()
	if err := e.s.Delete(ctx, sn.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("files after delete: got %v, want gone", err)
	}
	if _, err := e.s.Get(ctx, sn.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("get after delete: got %v, want not found", err)
	}
}

func TestDamageRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(dir string)
	}{
		{"flipped byte", func(dir string) {
			p := filepath.Join(dir, "runsc", "pages.img")
			b, _ := os.ReadFile(p)
			b[3] ^= 0xff
			os.WriteFile(p, b, 0o600)
		}},
		{"truncated", func(dir string) { os.Truncate(filepath.Join(dir, "runsc", "pages.img"), 4) }},
		{"missing file", func(dir string) { os.Remove(filepath.Join(dir, "runsc", "pages.img")) }},
		{"manifest edited", func(dir string) {
			os.WriteFile(filepath.Join(dir, manifestName), []byte(`{"files":[]}`), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			sn := e.take(t, e.clock.Now().Add(time.Hour))
			tc.damage(filepath.Join(e.data, "snapshots", sn.ID))
			_, _, _, err := e.s.Acquire(context.Background(), sn.ID)
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("got %v, want failed precondition", err)
			}
			// A refused restore holds nothing: the snapshot can be deleted.
			if err := e.s.Delete(context.Background(), sn.ID); err != nil {
				t.Errorf("delete damaged: %v", err)
			}
		})
		// The same damage found by the deferred check: the manifest at
		// AcquireUnverified, the files at Verify.
		t.Run(tc.name+", verified later", func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			sn := e.take(t, e.clock.Now().Add(time.Hour))
			tc.damage(filepath.Join(e.data, "snapshots", sn.ID))
			l, err := e.s.AcquireUnverified(ctx, sn.ID)
			if err == nil {
				err = l.Verify(ctx)
				if err := e.s.Delete(ctx, sn.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Errorf("delete while leased: got %v, want failed precondition", err)
				}
				l.Release()
			}
			if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("got %v, want failed precondition saying damaged", err)
			}
			if err := e.s.Delete(ctx, sn.ID); err != nil {
				t.Errorf("delete damaged after release: %v", err)
			}
		})
	}
}

func TestAcquireUnverifiedIntact(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sn := e.take(t, e.clock.Now().Add(time.Hour))
	l, err := e.s.AcquireUnverified(ctx, sn.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := l.Verify(ctx); err != nil {
		t.Errorf("verify intact snapshot: got %v, want nil", err)
	}
	if l.ID != sn.ID || l.Dir != filepath.Join(e.data, "snapshots", sn.ID) {
		t.Errorf("lease: got %s at %s", l.ID, l.Dir)
	}
}

// Files written while a flush runs, in several directories, are committed
// with every file in the manifest, and the flush ends when stopped.
func TestFlushWhileWriting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p, err := e.s.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Abort()
	stop := p.StartFlush()
	os.Mkdir(filepath.Join(p.Dir, "runsc"), 0o700)
	f, err := os.Create(filepath.Join(p.Dir, "runsc", "pages.img"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for i := range 8 {
		chunk[0] = byte(i)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		time.Sleep(flushEvery / 2) // let the flush see the file grow
	}
	f.Close()
	os.WriteFile(filepath.Join(p.Dir, "agent.json"), []byte("{}"), 0o600)
	stop()
	sn, err := p.Commit(ctx, Snapshot{SourceSandboxID: "sb-0000000000000001", App: "default",
		CreatedAt: e.clock.Now(), ExpiresAt: e.clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	m, err := readManifest(e.s.Path(sn.ID), sn.Checksum)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range m.Files {
		got = append(got, fmt.Sprintf("%s:%d", f.Path, f.Size))
	}
	if want := []string{"agent.json:2", "runsc/pages.img:2097152"}; !slices.Equal(got, want) {
		t.Errorf("manifest: got %v, want %v", got, want)
	}
	if _, _, release, err := e.s.Acquire(ctx, sn.ID); err != nil {
		t.Errorf("acquire: %v", err)
	} else {
		release()
	}
}

func TestCommitRefusesSpecialFiles(t *testing.T) {
	e := newEnv(t)
	p, err := e.s.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Abort()
	os.Symlink("/etc/passwd", filepath.Join(p.Dir, "link"))
	_, err = p.Commit(context.Background(), Snapshot{CreatedAt: e.clock.Now(), ExpiresAt: e.clock.Now().Add(time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("commit with a symlink: got %v, want not a regular file", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.data, "snapshots", "tmp")); len(ents) != 0 {
		t.Errorf("got %d entries in tmp after a failed commit, want 0", len(ents))
	}
}

func TestExpiry(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()
	for _, tc := range []struct {
		name      string
		ttl       time.Duration
		inherited time.Time
		want      time.Time
		class     error
	}{
		{"default", 0, time.Time{}, now.Add(DefaultTTL), nil},
		{"ttl", time.Hour, time.Time{}, now.Add(time.Hour), nil},
		{"maximum", MaxTTL, time.Time{}, now.Add(MaxTTL), nil},
		{"over maximum", MaxTTL + time.Second, time.Time{}, time.Time{}, errdefs.ErrInvalidArgument},
		{"negative", -time.Second, time.Time{}, time.Time{}, errdefs.ErrInvalidArgument},
		{"inherited", 0, now.Add(3 * time.Hour), now.Add(3 * time.Hour), nil},
		{"ttl beats inherited", time.Hour, now.Add(3 * time.Hour), now.Add(time.Hour), nil},
		{"inherited already passed", 0, now.Add(-time.Second), time.Time{}, errdefs.ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.s.Expiry(now, tc.ttl, tc.inherited)
			if tc.class != nil {
				if !errors.Is(err, tc.class) {
					t.Fatalf("got %v, want class %v", err, tc.class)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestExpiredRefusedAndCollected(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	short := e.take(t, e.clock.Now().Add(90*time.Second))
	long := e.take(t, e.clock.Now().Add(time.Hour))
	stop := e.s.StartCollector()
	defer stop()

	e.clock.Advance(90 * time.Second) // expired; the collector's first run is due too
	if _, _, _, err := e.s.Acquire(ctx, short.ID); err != nil && !errors.Is(err, errdefs.ErrExpired) && !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("restore of an expired snapshot: got %v, want expired (or already collected)", err)
	}
	// The row goes first, the files after it (the crash-safe order): wait
	// for both.
	waitFor(t, "the collector deletes the expired snapshot and its files", func() bool {
		_, err := e.s.Get(ctx, short.ID)
		_, serr := os.Stat(filepath.Join(e.data, "snapshots", short.ID))
		return errors.Is(err, errdefs.ErrNotFound) && errors.Is(serr, os.ErrNotExist)
	})
	if _, err := e.s.Get(ctx, long.ID); err != nil {
		t.Errorf("unexpired snapshot: %v", err)
	}
}

func TestAcquireExpired(t *testing.T) {
	e := newEnv(t)
	sn := e.take(t, e.clock.Now().Add(time.Minute))
	e.clock.Advance(time.Minute)
	_, _, _, err := e.s.Acquire(context.Background(), sn.ID)
	if !errors.Is(err, errdefs.ErrExpired) {
		t.Fatalf("got %v, want expired", err)
	}
}

func TestStartupCleans(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	kept := e.take(t, e.clock.Now().Add(time.Hour))
	lost := e.take(t, e.clock.Now().Add(time.Hour))
	root := filepath.Join(e.data, "snapshots")
	os.RemoveAll(filepath.Join(root, lost.ID))                              // files gone: row forgotten
	os.MkdirAll(filepath.Join(root, "sn-00000000000000ff", "runsc"), 0o700) // unknown dir: removed
	p, _ := e.s.Begin()                                                     // interrupted snapshot: removed
	if err := e.s.Startup(ctx); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(root)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != kept.ID || names[1] != "tmp" {
		t.Errorf("after startup: got %v, want [%s tmp]", names, kept.ID)
	}
	if _, err := os.Stat(p.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pending dir after startup: got %v, want gone", err)
	}
	if _, err := e.s.Get(ctx, lost.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("row of a snapshot whose files are gone: got %v, want not found", err)
	}
	if _, _, _, err := e.s.Acquire(ctx, kept.ID); err != nil {
		t.Errorf("kept snapshot after startup: %v", err)
	}
}

func TestOrigin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sn := e.take(t, e.clock.Now().Add(time.Hour))
	if _, ok, err := e.s.OriginOf(ctx, "sb-00000000000000aa"); ok || err != nil {
		t.Fatalf("origin of a created sandbox: got ok=%v %v, want none", ok, err)
	}
	if err := e.s.SetOrigin(ctx, "sb-00000000000000aa", sn); err != nil {
		t.Fatal(err)
	}
	e.s.Delete(ctx, sn.ID) // the origin outlives its snapshot
	o, ok, err := e.s.OriginOf(ctx, "sb-00000000000000aa")
	if !ok || err != nil || o.SnapshotID != sn.ID || !o.ExpiresAt.Equal(sn.ExpiresAt) {
		t.Fatalf("got %+v ok=%v %v, want %s expiring %v", o, ok, err, sn.ID, sn.ExpiresAt)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The collector forgets the origins of finished sandboxes and keeps those
// of running ones.
func TestCollectPrunesOriginsOfFinished(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sn := e.take(t, e.clock.Now().Add(time.Hour))
	for id, state := range map[string]string{"sb-00000000000000aa": "running", "sb-00000000000000bb": "finished"} {
		if _, err := e.s.db.ExecContext(ctx, `INSERT OR IGNORE INTO apps (name, created_at) VALUES ('default', 1)`); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.db.ExecContext(ctx, `INSERT INTO sandboxes (id, app, image_ref, image_id, spec_json, state, created_at) VALUES (?,?,?,?,?,?,?)`,
			id, "default", "busybox", "im-1", "{}", state, 1); err != nil {
			t.Fatal(err)
		}
		if err := e.s.SetOrigin(ctx, id, sn); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.s.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := e.s.OriginOf(ctx, "sb-00000000000000aa"); !ok || err != nil {
		t.Errorf("origin of the running sandbox: ok=%v %v, want kept", ok, err)
	}
	if _, ok, err := e.s.OriginOf(ctx, "sb-00000000000000bb"); ok || err != nil {
		t.Errorf("origin of the finished sandbox: ok=%v %v, want pruned", ok, err)
	}
}
