package sandbox

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/store"
)

// followAgent is a fakeAgent that can follow execs (ExecFollower) and
// records which of its two ways each call took.
type followAgent struct {
	fakeAgent
	mu               sync.Mutex
	followed, execed []string
}

func (a *followAgent) Exec(ctx context.Context, req *agentv1.ExecRequest) (ExecStream, error) {
	a.mu.Lock()
	a.execed = append(a.execed, req.ExecId)
	a.mu.Unlock()
	return a.fakeAgent.Exec(ctx, req)
}

func (a *followAgent) Follow(ctx context.Context, req *agentv1.ExecRequest) (ExecStream, error) {
	a.mu.Lock()
	a.followed = append(a.followed, req.ExecId)
	a.mu.Unlock()
	return &fakeStream{events: []*agentv1.ExecEvent{
		{Event: &agentv1.ExecEvent_Started{Started: &agentv1.Started{Pid: 7, Created: true}}},
		{Event: &agentv1.ExecEvent_Exited{Exited: &agentv1.Exited{}}},
	}}, nil
}

type followDialer struct{ a *followAgent }

func (d followDialer) Dial(addr, token string) (AgentConn, error) { return d.a, nil }

// A client's exec is streamed by the agent conn's Follow when it has one:
// that stream, not the caller, resumes across broken or stalled connections.
func TestExecUsesFollower(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a := &followAgent{}
	m := New(Config{DataDir: dir, DefaultImage: "busybox", LivenessInterval: 10 * time.Millisecond}, Deps{
		DB: db, Provisioner: &fakeProv{alive: map[string]bool{}}, Agents: followDialer{a}, Images: fakeImages{},
		Secrets: fakeSecrets{}, Clock: clock.NewFake(time.Unix(1_700_000_000, 0)), Logger: slog.New(slog.DiscardHandler),
	})
	defer m.Close()
	ctx := context.Background()
	sb, err := m.Create(ctx, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	s, id, err := m.Exec(ctx, sb.ID, ExecRequest{ExecID: "ex-1", Argv: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var events int
	for {
		if _, err := s.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		events++
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if id != "ex-1" || events != 2 || len(a.followed) != 1 || a.followed[0] != "ex-1" {
		t.Errorf("got id %q, %d events, followed %v; want ex-1, 2 events through Follow", id, events, a.followed)
	}
	for _, e := range a.execed {
		if e == "ex-1" {
			t.Errorf("exec ex-1 went through Exec, want Follow")
		}
	}
}
