package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/snapshot"
	"github.com/sandboxd/sandboxd/internal/store"
)

// snapProv is a Provisioner and SnapshotEngine that starts nothing: its
// sandboxes "run" as the test process, and a checkpoint is one small file.
type snapProv struct {
	mu        sync.Mutex
	restored  []string
	destroyed []string
}

func (p *snapProv) Provision(ctx context.Context, req ProvisionRequest) (Handle, error) {
	start, _ := ProcStart(os.Getpid())
	return Handle{ID: req.ID, AgentAddr: "fake", AgentToken: "tok-" + req.ID, Pid: os.Getpid(), PidStart: start}, nil
}
func (p *snapProv) Adopt(ctx context.Context, h Handle) (bool, error) { return true, nil }
func (p *snapProv) Destroy(ctx context.Context, h Handle) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.destroyed = append(p.destroyed, h.ID)
	return nil
}
func (p *snapProv) Sweep(ctx context.Context, keep []Handle) error { return nil }

func (p *snapProv) Checkpoint(ctx context.Context, h Handle, dir string) error {
	return os.WriteFile(filepath.Join(dir, "state"), []byte(h.AgentToken), 0o600)
}

func (p *snapProv) Restore(ctx context.Context, req ProvisionRequest, dir string) (Handle, error) {
	tok, err := os.ReadFile(filepath.Join(dir, "state"))
	if err != nil {
		return Handle{}, err
	}
	p.mu.Lock()
	p.restored = append(p.restored, req.ID)
	p.mu.Unlock()
	start, _ := ProcStart(os.Getpid())
	return Handle{ID: req.ID, AgentAddr: "fake", AgentToken: string(tok), Pid: os.Getpid(), PidStart: start}, nil
}

type snapAgent struct{}

func (snapAgent) WaitReady(ctx context.Context) error { return nil }
func (snapAgent) Exec(ctx context.Context, req *agentv1.ExecRequest) (ExecStream, error) {
	return nil, errdefs.Unavailable("no exec in this fake")
}
func (snapAgent) WriteStdin(context.Context, string, int64, []byte, bool) (int64, error) {
	return 0, nil
}
func (snapAgent) Signal(context.Context, string, syscall.Signal) error { return nil }
func (snapAgent) Close()                                               {}

type snapDialer struct {
	mu     sync.Mutex
	tokens []string
}

func (d *snapDialer) Dial(addr, token string) (AgentConn, error) {
	d.mu.Lock()
	d.tokens = append(d.tokens, token)
	d.mu.Unlock()
	return snapAgent{}, nil
}

type snapImages struct{}

func (snapImages) ResolveImage(ctx context.Context, ref string) (ImageInfo, error) {
	if ref != "busybox" && ref != "im-1" {
		return ImageInfo{}, errdefs.NotFound("image %q not found", ref)
	}
	return ImageInfo{ID: "im-1", Layers: []string{"sha256:1"}}, nil
}

type snapSecrets struct{}

func (snapSecrets) Values(ctx context.Context, names []string) (map[string]string, error) {
	return map[string]string{}, nil
}

type snapEnv struct {
	m      *Manager
	prov   *snapProv
	snaps  *Snapshots
	store  *snapshot.Store
	clock  *clock.Fake
	dialer *snapDialer
}

func newSnapEnv(t *testing.T) *snapEnv {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	c := clock.NewFake(time.Unix(1_700_000_000, 0))
	prov := &snapProv{}
	e := &snapEnv{clock: c, prov: prov, dialer: &snapDialer{}}
	log := slog.New(slog.DiscardHandler)
	e.m = New(Config{DataDir: dir, DefaultImage: "busybox"}, Deps{
		DB: db, Provisioner: prov, Agents: e.dialer, Images: snapImages{}, Secrets: snapSecrets{}, Clock: c, Logger: log,
	})
	e.store, err = snapshot.New(db, dir, c, log, snapshot.Config{CollectInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.snaps = NewSnapshots(e.m, e.store, prov, log)
	t.Cleanup(func() {
		e.m.Close()
		db.Close()
	})
	return e
}

func TestSnapshotExpiryInheritance(t *testing.T) {
	e := newSnapEnv(t)
	ctx := context.Background()
	src, err := e.m.Create(ctx, Spec{Name: "web", Tags: map[string]string{"k": "v"}, Timeout: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.snaps.Snapshot(ctx, src.ID, 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clock.Now().Add(3 * time.Hour); !first.ExpiresAt.Equal(want) || first.ParentID != "" {
		t.Fatalf("first: got expiry %v parent %q, want %v and none", first.ExpiresAt, first.ParentID, want)
	}
	e.clock.Advance(time.Hour)
	mid, err := e.snaps.Restore(ctx, first.ID, NameReplace, "web2")
	if err != nil {
		t.Fatal(err)
	}
	if mid.Spec.Name != "web2" || mid.Tags["k"] != "v" || !mid.Deadline.Equal(e.clock.Now().Add(24*time.Hour)) {
		t.Errorf("restored: got name %q tags %v deadline %v", mid.Spec.Name, mid.Tags, mid.Deadline)
	}
	if got := e.dialer.tokens[len(e.dialer.tokens)-1]; got != "tok-"+src.ID {
		t.Errorf("restored agent dialed with token %q, want the snapshot's %q", got, "tok-"+src.ID)
	}
	// Without a TTL a snapshot of the restored sandbox keeps its parent's
	// expiry; with one it gets its own.
	second, err := e.snaps.Snapshot(ctx, mid.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !second.ExpiresAt.Equal(first.ExpiresAt) || second.ParentID != first.ID {
		t.Errorf("inherited: got expiry %v parent %q, want %v and %s", second.ExpiresAt, second.ParentID, first.ExpiresAt, first.ID)
	}
	own, err := e.snaps.Snapshot(ctx, mid.ID, 5*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clock.Now().Add(5 * time.Hour); !own.ExpiresAt.Equal(want) {
		t.Errorf("own ttl: got %v, want %v", own.ExpiresAt, want)
	}
	// A created sandbox's snapshot gets the default.
	dflt, err := e.snaps.Snapshot(ctx, src.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clock.Now().Add(snapshot.DefaultTTL); !dflt.ExpiresAt.Equal(want) {
		t.Errorf("default: got %v, want %v", dflt.ExpiresAt, want)
	}

	// Two hours later the first and its inheritor have expired.
	e.clock.Advance(2 * time.Hour)
	for _, id := range []string{first.ID, second.ID} {
		_, err := e.snaps.Restore(ctx, id, NameClear, "")
		if !errors.Is(err, errdefs.ErrExpired) {
			t.Errorf("restore of expired %s: got %v, want expired", id, err)
		}
	}
	if _, err := e.snaps.Snapshot(ctx, mid.ID, 0); !errors.Is(err, errdefs.ErrExpired) {
		t.Errorf("snapshot inheriting a passed expiry: got %v, want expired", err)
	}
	if _, err := e.snaps.Restore(ctx, own.ID, NameClear, ""); err != nil {
		t.Errorf("restore of the unexpired one: %v", err)
	}
	n, err := e.store.Collect(ctx)
	if err != nil || n != 2 {
		t.Errorf("collect: got %d, %v; want 2 deleted", n, err)
	}
	list, _ := e.snaps.List(ctx)
	if len(list) != 2 {
		t.Errorf("after collect: %d snapshots, want 2", len(list))
	}
}

func TestSnapshotRestoreNames(t *testing.T) {
	e := newSnapEnv(t)
	ctx := context.Background()
	src, err := e.m.Create(ctx, Spec{App: "a", Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := e.snaps.Snapshot(ctx, src.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		mode  NameMode
		given string
		want  string
		class error
	}{
		{"keep while the source runs", NameKeep, "", "", errdefs.ErrAlreadyExists},
		{"clear", NameClear, "", "", nil},
		{"replace", NameReplace, "other", "other", nil},
		{"replace with a used name", NameReplace, "other", "", errdefs.ErrAlreadyExists},
		{"replace with a bad name", NameReplace, "-bad", "", errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb, err := e.snaps.Restore(ctx, sn.ID, tc.mode, tc.given)
			if tc.class != nil {
				if !errors.Is(err, tc.class) {
					t.Fatalf("got %v, want class %v", err, tc.class)
				}
				return
			}
			if err != nil || sb.Spec.Name != tc.want || sb.Spec.App != "a" {
				t.Fatalf("got %+v, %v; want name %q in app a", sb, err, tc.want)
			}
		})
	}
	if _, err := e.m.Terminate(ctx, src.ID); err != nil {
		t.Fatal(err)
	}
	sb, err := e.snaps.Restore(ctx, sn.ID, NameKeep, "")
	if err != nil || sb.Spec.Name != "n" {
		t.Errorf("keep once the source has finished: got %v, %v", sb, err)
	}
}

// A damaged snapshot is refused as such, whether the engine restored from
// its files (the restored sandbox is then destroyed) or failed on them;
// either way nothing runs afterwards.
func TestRestoreDamaged(t *testing.T) {
	for _, tc := range []struct {
		name          string
		damage        func(path string) error
		wantDestroyed bool
	}{
		{"engine restores", func(path string) error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			b[0] ^= 0x01
			return os.WriteFile(path, b, 0o600)
		}, true},
		{"engine fails", os.Remove, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSnapEnv(t)
			ctx := context.Background()
			src, err := e.m.Create(ctx, Spec{App: "a"})
			if err != nil {
				t.Fatal(err)
			}
			sn, err := e.snaps.Snapshot(ctx, src.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(filepath.Join(e.store.Path(sn.ID), "state")); err != nil {
				t.Fatal(err)
			}
			_, err = e.snaps.Restore(ctx, sn.ID, NameClear, "")
			if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("got %v, want failed precondition saying damaged", err)
			}
			e.prov.mu.Lock()
			restored, destroyed := e.prov.restored, e.prov.destroyed
			e.prov.mu.Unlock()
			if got := len(destroyed) == 1 && len(restored) == 1 && destroyed[0] == restored[0]; got != tc.wantDestroyed {
				t.Errorf("restored %v, destroyed %v: want the restored one destroyed: %v", restored, destroyed, tc.wantDestroyed)
			}
			running, err := e.m.List(ctx, "", nil, false)
			if err != nil || len(running) != 1 || running[0].ID != src.ID {
				t.Errorf("running after a refused restore: got %d (%v), want only the source", len(running), err)
			}
			// The lease is released: the snapshot can be deleted.
			if err := e.snaps.Delete(ctx, sn.ID); err != nil {
				t.Errorf("delete after a refused restore: %v", err)
			}
		})
	}
}
