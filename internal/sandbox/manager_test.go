package sandbox

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/store"
)

// fakeProv is a Provisioner that starts nothing; its sandboxes "run" as the
// test process itself, so the liveness check sees them alive.
type fakeProv struct {
	mu        sync.Mutex
	fail      error
	alive     map[string]bool
	destroyed []string
	swept     []string
}

func (p *fakeProv) Provision(ctx context.Context, req ProvisionRequest) (Handle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return Handle{}, p.fail
	}
	start, _ := ProcStart(os.Getpid())
	p.alive[req.ID] = true
	return Handle{ID: req.ID, AgentAddr: "fake", Pid: os.Getpid(), PidStart: start}, nil
}

func (p *fakeProv) Adopt(ctx context.Context, h Handle) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alive[h.ID], nil
}

func (p *fakeProv) Destroy(ctx context.Context, h Handle) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.destroyed = append(p.destroyed, h.ID)
	delete(p.alive, h.ID)
	return nil
}

func (p *fakeProv) Sweep(ctx context.Context, keep []Handle) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range keep {
		p.swept = append(p.swept, h.ID)
	}
	return nil
}

// fakeAgent answers an attach to the entrypoint with scripted events.
type fakeAgent struct{ entrypoint []*agentv1.ExecEvent }

func (a *fakeAgent) WaitReady(ctx context.Context) error { return nil }
func (a *fakeAgent) Exec(ctx context.Context, req *agentv1.ExecRequest) (ExecStream, error) {
	return &fakeStream{events: a.entrypoint}, nil
}
func (a *fakeAgent) WriteStdin(context.Context, string, int64, []byte, bool) (int64, error) {
	return 0, nil
}
func (a *fakeAgent) Signal(context.Context, string, syscall.Signal) error { return nil }
func (a *fakeAgent) Close()                                               {}

type fakeStream struct{ events []*agentv1.ExecEvent }

func (s *fakeStream) Recv() (*agentv1.ExecEvent, error) {
	if len(s.events) == 0 {
		return nil, io.EOF
	}
	ev := s.events[0]
	s.events = s.events[1:]
	return ev, nil
}
func (s *fakeStream) Close() error { return nil }

type fakeDialer struct{ agent *fakeAgent }

func (d fakeDialer) Dial(addr, token string) (AgentConn, error) { return d.agent, nil }

type fakeImages struct{}

func (fakeImages) ResolveImage(ctx context.Context, ref string) (ImageInfo, error) {
	if ref != "busybox" && ref != "im-1" {
		return ImageInfo{}, errdefs.NotFound("image %q not found", ref)
	}
	return ImageInfo{ID: "im-1", Layers: []string{"sha256:1"}, Env: []string{"PATH=/bin"}}, nil
}

type fakeSecrets struct{}

func (fakeSecrets) Values(ctx context.Context, names []string) (map[string]string, error) {
	if len(names) > 0 {
		return nil, errdefs.NotFound("secret %q not found", names[0])
	}
	return map[string]string{}, nil
}

type env struct {
	m     *Manager
	prov  *fakeProv
	clock *clock.Fake
	agent *fakeAgent
	dir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{prov: &fakeProv{alive: map[string]bool{}}, clock: clock.NewFake(time.Unix(1_700_000_000, 0)), agent: &fakeAgent{}, dir: dir}
	e.m = e.start(db)
	return e
}

func (e *env) start(db *sql.DB) *Manager {
	m := New(Config{DataDir: e.dir, DefaultImage: "busybox", LivenessInterval: 10 * time.Millisecond}, Deps{
		DB: db, Provisioner: e.prov, Agents: fakeDialer{e.agent}, Images: fakeImages{}, Secrets: fakeSecrets{},
		Clock: e.clock, Logger: slog.New(slog.DiscardHandler),
	})
	return m
}

func TestCreateTerminateWait(t *testing.T) {
	e := newEnv(t)
	defer e.m.Close()
	ctx := context.Background()
	sb, err := e.m.Create(ctx, Spec{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != StateRunning || sb.Spec.Timeout != DefaultTimeout || sb.Spec.Resources.MemoryMiB != DefaultMemMiB {
		t.Errorf("got %+v, want running with defaults", sb)
	}
	if _, err := e.m.Create(ctx, Spec{Name: "web"}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("duplicate name: got %v, want already exists", err)
	}
	got, done, _ := e.m.Wait(ctx, sb.ID, 0)
	if done || got.State != StateRunning {
		t.Errorf("poll: got done=%v state %s", done, got.State)
	}
	if _, err := e.m.Terminate(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	got, done, _ = e.m.Wait(ctx, sb.ID, -1)
	if !done || got.ExitCode != ExitCodeTerminated || got.FinishReason != ReasonTerminated {
		t.Errorf("after terminate: got %+v", got)
	}
	if len(e.prov.destroyed) != 1 {
		t.Errorf("got %d destroys, want 1", len(e.prov.destroyed))
	}
	if _, err := e.m.Create(ctx, Spec{Name: "web"}); err != nil {
		t.Errorf("name not freed: %v", err)
	}
}

func TestLifetimeTimeoutWithFakeClock(t *testing.T) {
	e := newEnv(t)
	defer e.m.Close()
	ctx := context.Background()
	sb, err := e.m.Create(ctx, Spec{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(59 * time.Second)
	if _, done, _ := e.m.Wait(ctx, sb.ID, 0); done {
		t.Fatal("finished before its timeout")
	}
	e.clock.Advance(2 * time.Second)
	got, done, _ := e.m.Wait(ctx, sb.ID, 5*time.Second)
	if !done || got.FinishReason != ReasonTimeout || got.ExitCode != ExitCodeTimeout {
		t.Errorf("after the timeout: got done=%v %+v", done, got)
	}
}

func TestBadInputRecordsNothing(t *testing.T) {
	e := newEnv(t)
	defer e.m.Close()
	ctx := context.Background()
	cases := []struct {
		name  string
		spec  Spec
		class error
	}{
		{"bad name", Spec{Name: "a b"}, errdefs.ErrInvalidArgument},
		{"relative workdir", Spec{Workdir: "x"}, errdefs.ErrInvalidArgument},
		{"timeout too long", Spec{Timeout: 25 * time.Hour}, errdefs.ErrInvalidArgument},
		{"timeout too short", Spec{Timeout: time.Millisecond}, errdefs.ErrInvalidArgument},
		{"unknown image", Spec{Image: "nope"}, errdefs.ErrNotFound},
		{"unknown secret", Spec{Secrets: []string{"nope"}}, errdefs.ErrNotFound},
		{"cpu", Spec{Resources: Resources{CPU: 100}}, errdefs.ErrInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := e.m.Create(ctx, c.spec); !errors.Is(err, c.class) {
				t.Errorf("got %v, want class %v", err, c.class)
			}
		})
	}
	list, _ := e.m.List(ctx, "", nil, true)
	if len(list) != 0 {
		t.Errorf("bad input recorded %d sandboxes", len(list))
	}
}

func TestProvisionFailureFreesName(t *testing.T) {
	e := newEnv(t)
	defer e.m.Close()
	ctx := context.Background()
	e.prov.fail = errors.New("engine broke")
	if _, err := e.m.Create(ctx, Spec{Name: "x"}); err == nil {
		t.Fatal("create succeeded with a broken engine")
	}
	list, _ := e.m.List(ctx, "", nil, true)
	if len(list) != 1 || list[0].FinishReason != ReasonFailed {
		t.Fatalf("got %+v, want one failed record", list)
	}
	e.prov.fail = nil
	if _, err := e.m.Create(ctx, Spec{Name: "x"}); err != nil {
		t.Errorf("name held by a failed create: %v", err)
	}
}

func TestEntrypointExitFinishesWithCodeAndLogs(t *testing.T) {
	e := newEnv(t)
	defer e.m.Close()
	e.agent.entrypoint = []*agentv1.ExecEvent{
		{Event: &agentv1.ExecEvent_Started{Started: &agentv1.Started{Pid: 2}}},
		{Event: &agentv1.ExecEvent_Stdout{Stdout: &agentv1.Output{Offset: 0, Data: []byte("hello\n")}}},
		{Event: &agentv1.ExecEvent_Stderr{Stderr: &agentv1.Output{Offset: 0, Data: []byte("warn\n")}}},
		{Event: &agentv1.ExecEvent_Exited{Exited: &agentv1.Exited{ExitCode: 3}}},
	}
	ctx := context.Background()
	sb, err := e.m.Create(ctx, Spec{Entrypoint: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	got, done, _ := e.m.Wait(ctx, sb.ID, 5*time.Second)
	if !done || got.ExitCode != 3 || got.FinishReason != ReasonExited {
		t.Fatalf("got done=%v %+v, want exited 3", done, got)
	}
	var out, errb bytes.Buffer
	err = e.m.Logs(ctx, sb.ID, 0, 0, true, func(c LogChunk) error {
		if c.Stderr {
			errb.Write(c.Data)
		} else {
			out.Write(c.Data)
		}
		return nil
	})
	if err != nil || out.String() != "hello\n" || errb.String() != "warn\n" {
		t.Errorf("logs: got %q / %q, %v", out.String(), errb.String(), err)
	}
	// From an offset: only the rest.
	out.Reset()
	e.m.Logs(ctx, sb.ID, 2, 5, false, func(c LogChunk) error { out.Write(c.Data); return nil })
	if out.String() != "llo\n" {
		t.Errorf("logs from offsets: got %q", out.String())
	}
}

func TestRecoverAdoptsLiveAndMarksLost(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	live, _ := e.m.Create(ctx, Spec{Name: "live"})
	gone, _ := e.m.Create(ctx, Spec{Name: "gone"})
	e.m.Close()
	e.prov.mu.Lock()
	delete(e.prov.alive, gone.ID)
	e.prov.mu.Unlock()

	m2 := e.start(e.m.repo.db)
	defer m2.Close()
	if err := m2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := m2.Get(ctx, gone.ID)
	if got.State != StateFinished || got.FinishReason != ReasonLost {
		t.Errorf("dead sandbox: got %s/%s, want finished/lost", got.State, got.FinishReason)
	}
	got, _ = m2.Get(ctx, live.ID)
	if got.State != StateRunning {
		t.Errorf("live sandbox: got %s, want running", got.State)
	}
	if len(e.prov.swept) != 1 || e.prov.swept[0] != live.ID {
		t.Errorf("sweep kept %v, want only %s", e.prov.swept, live.ID)
	}
	if _, err := m2.Terminate(ctx, live.ID); err != nil {
		t.Errorf("terminate after recover: %v", err)
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "A=1"}, map[string]string{"A": "2", "B": "3"}, map[string]string{"B": "s"})
	want := []string{"PATH=/bin", "A=2", "B=s"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %v, want %v", got, want)
		}
	}
}

// Finished sandboxes are forgotten, logs included, once the retention has
// passed; running and recently finished ones stay, and so do their logs.
func TestPruneFinished(t *testing.T) {
	e := newEnv(t)
	defer e.m.Close()
	ctx := context.Background()
	old, err := e.m.Create(ctx, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Terminate(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	recent, err := e.m.Create(ctx, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Terminate(ctx, recent.ID); err != nil {
		t.Fatal(err)
	}
	running, err := e.m.Create(ctx, Spec{Timeout: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(e.dir, "logs", "sb-00000000000000ff")
	for _, id := range []string{old.ID, recent.ID, running.ID} {
		os.MkdirAll(e.m.logDir(id), 0o700)
	}
	os.MkdirAll(orphan, 0o700)

	e.clock.Advance(30 * time.Minute)
	gone, err := e.m.PruneFinished(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || gone[0] != old.ID {
		t.Errorf("pruned %v, want only %s", gone, old.ID)
	}
	if _, err := e.m.Get(ctx, old.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("pruned sandbox: got %v, want not found", err)
	}
	for id, want := range map[string]bool{old.ID: false, recent.ID: true, running.ID: true} {
		if _, err := os.Stat(e.m.logDir(id)); (err == nil) != want {
			t.Errorf("logs of %s: exist=%v, want %v", id, err == nil, want)
		}
		if _, err := e.m.Get(ctx, id); (err == nil) != want {
			t.Errorf("record of %s: %v, want present=%v", id, err, want)
		}
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan log dir: %v, want removed", err)
	}
}
