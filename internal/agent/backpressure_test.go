package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/agentclient"
)

const (
	mib       = 1 << 20
	bigOutput = 20 * mib
)

// bigSpec writes bigOutput zero bytes to stdout.
var bigSpec = &agentv1.ProcessSpec{Argv: []string{"head", "-c", "20971520", "/dev/zero"}}

// gatedSpec waits for a line on stdin, then writes bigOutput bytes.
func gatedSpec(timeoutMs int64) *agentv1.ProcessSpec {
	return &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "read x; exec head -c 20971520 /dev/zero"}, Stdin: true, TimeoutMs: timeoutMs}
}

// startUnread starts a gatedSpec exec, drops its stream before any output
// exists, then lets it write: no reader ever saw a byte.
func startUnread(ctx context.Context, t *testing.T, c *agentclient.Client, id string, spec *agentv1.ProcessSpec) {
	t.Helper()
	s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: id, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := c.WriteStdin(ctx, id, 0, []byte("go\n"), true); err != nil {
		t.Fatal(err)
	}
}

// drain reads s to its end and returns the stdout bytes received.
func drain(t *testing.T, s *agentclient.ExecStream) int64 {
	t.Helper()
	var n int64
	for s.Exited() == nil {
		ev, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv after %d bytes: %v", n, err)
		}
		if o := ev.GetStdout(); o != nil {
			if o.Offset != n {
				t.Fatalf("got output at offset %d, want %d", o.Offset, n)
			}
			n += int64(len(o.Data))
		}
	}
	return n
}

// assertBlocked checks that exec id is still running a while later: its
// writes are blocked, not discarded.
func assertBlocked(ctx context.Context, t *testing.T, c *agentclient.Client, id string) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	execs, err := c.ListExecs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range execs {
		if e.ExecId == id {
			if !e.Running {
				t.Fatalf("got exec %s finished (%v) while no reader read, want it blocked", id, e.Exited)
			}
			return
		}
	}
	t.Fatalf("exec %s not listed", id)
}

func TestBackPressure(t *testing.T) {
	ctx := testCtx(t)

	t.Run("no reader at all", func(t *testing.T) {
		// The entrypoint starts with no reader attached.
		c, _ := agenttest.Start(t, agent.Config{Entrypoint: bigSpec.Argv, OutputLimit: mib}, agent.Options{})
		assertBlocked(ctx, t, c, agent.EntrypointExecID)
		s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: agent.EntrypointExecID, AttachOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got := drain(t, s); got != bigOutput {
			t.Errorf("got %d bytes, want %d", got, bigOutput)
		}
		if ex := s.Exited(); ex.ExitCode != 0 || ex.StdoutSize != bigOutput {
			t.Errorf("got exit {%s}, want code 0 and size %d", ex, bigOutput)
		}
	})

	t.Run("reader comes later", func(t *testing.T) {
		c, _ := agenttest.Start(t, agent.Config{OutputLimit: mib}, agent.Options{})
		startUnread(ctx, t, c, "big", gatedSpec(0))
		assertBlocked(ctx, t, c, "big")
		s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: "big", AttachOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got := drain(t, s); got != bigOutput {
			t.Errorf("got %d bytes, want %d", got, bigOutput)
		}
		// The first bytes were sent, then dropped to make room.
		s2, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: "big", AttachOnly: true})
		if err == nil {
			defer s2.Close()
			_, err = s2.Recv() // Started
			if err == nil {
				_, err = s2.Recv()
			}
		}
		if connect.CodeOf(err) != connect.CodeOutOfRange || !strings.Contains(err.Error(), "dropped") {
			t.Errorf("read from dropped offset 0: got %v, want OutOfRange saying the bytes were dropped", err)
		}
	})

	t.Run("timeout kills a blocked writer", func(t *testing.T) {
		c, _ := agenttest.Start(t, agent.Config{OutputLimit: mib}, agent.Options{})
		// The timeout fires while the writer is blocked: filling the 1 MiB
		// buffer takes a few ms, but a loaded machine once needed more than
		// 200 ms.
		startUnread(ctx, t, c, "big", gatedSpec(1500))
		time.Sleep(2 * time.Second)
		s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: "big", AttachOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		n := drain(t, s)
		if ex := s.Exited(); !ex.TimedOut || ex.ExitCode != 124 || ex.StdoutSize != n {
			t.Errorf("got exit {%s} after %d bytes, want timed out with code 124 and size %d", ex, n, n)
		}
		if n < mib || n >= bigOutput {
			t.Errorf("got %d bytes, want the %d-byte buffer and what the pipe held, not all %d", n, mib, bigOutput)
		}
	})

	t.Run("devnull", func(t *testing.T) {
		c, _ := agenttest.Start(t, agent.Config{OutputLimit: mib}, agent.Options{})
		spec := &agentv1.ProcessSpec{Argv: bigSpec.Argv, Stdout: agentv1.OutputMode_OUTPUT_MODE_DEVNULL}
		_, _, ex, err := run(ctx, c, "big", spec)
		if err != nil || ex.ExitCode != 0 || ex.StdoutSize != 0 {
			t.Errorf("got exit {%s}, %v; want code 0 and size 0", ex, err)
		}
	})
}
