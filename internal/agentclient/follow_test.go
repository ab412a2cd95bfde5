package agentclient_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/agentclient"
)

// follow reads s to its end: stdout, stderr, the number of Started events
// and the exit.
func follow(t *testing.T, s *agentclient.FollowStream, onEvent func(*agentv1.ExecEvent)) (string, string, int, *agentv1.Exited) {
	t.Helper()
	var out, errOut strings.Builder
	started := 0
	for {
		ev, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("recv after stdout %q: %v", out.String(), err)
		}
		switch e := ev.Event.(type) {
		case *agentv1.ExecEvent_Started:
			started++
		case *agentv1.ExecEvent_Stdout:
			out.Write(e.Stdout.Data)
		case *agentv1.ExecEvent_Stderr:
			errOut.Write(e.Stderr.Data)
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	return out.String(), errOut.String(), started, s.Exited()
}

func TestFollowResumes(t *testing.T) {
	_, addr := agenttest.Start(t, agent.Config{}, agent.Options{})
	spec := &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "echo a; echo x >&2; sleep 0.4; echo b; echo y >&2; exit 3"}}
	for _, tc := range []struct {
		name         string
		stalledFirst int  // connections stalled from the start
		stallOutput  bool // stall the connections after the first output
		breaking     bool // close the connections after the first output
	}{
		{name: "stalled after the first output", stallOutput: true},
		{name: "request never delivered", stalledFirst: 1},
		{name: "broken connection", breaking: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Bounded well below the test's deadline: a hang fails here.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var target string
			var onEvent func(*agentv1.ExecEvent)
			if tc.breaking {
				p := newProxy(t, addr)
				target = p.addr()
				var once sync.Once
				onEvent = func(ev *agentv1.ExecEvent) {
					if _, ok := ev.Event.(*agentv1.ExecEvent_Stdout); ok {
						once.Do(p.cut)
					}
				}
			} else {
				p := newStallProxy(t, addr, tc.stalledFirst)
				target = p.addr()
				var once sync.Once
				onEvent = func(ev *agentv1.ExecEvent) {
					if _, ok := ev.Event.(*agentv1.ExecEvent_Stdout); ok && tc.stallOutput {
						once.Do(p.stall)
					}
				}
			}
			c := agentclient.New(target, agenttest.Token)
			defer c.Close()
			s := c.Follow(ctx, &agentv1.ExecRequest{ExecId: "f-" + strings.ReplaceAll(tc.name, " ", "-"), Spec: spec},
				agentclient.FollowOptions{SilenceCheck: 100 * time.Millisecond})
			defer s.Close()
			out, errOut, started, ex := follow(t, s, onEvent)
			if out != "a\nb\n" || errOut != "x\ny\n" || started != 1 || ex == nil || ex.ExitCode != 3 {
				t.Errorf("got stdout %q stderr %q, %d Started, exit {%v}; want %q, %q, 1 Started, code 3",
					out, errOut, started, ex, "a\nb\n", "x\ny\n")
			}
		})
	}
}
