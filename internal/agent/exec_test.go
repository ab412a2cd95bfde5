package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/agentclient"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// run runs spec to its end and returns its output and exit.
func run(ctx context.Context, c *agentclient.Client, id string, spec *agentv1.ProcessSpec) (stdout, stderr string, ex *agentv1.Exited, err error) {
	var o, e bytes.Buffer
	ex, err = c.Run(ctx, id, spec, &o, &e)
	return o.String(), e.String(), ex, err
}

func TestExec(t *testing.T) {
	c, _ := agenttest.Start(t, agent.Config{
		Env:     []string{"PATH=/usr/bin:/bin", "BASE=base", "OVER=base"},
		Workdir: "/tmp",
	}, agent.Options{})
	devnull := agentv1.OutputMode_OUTPUT_MODE_DEVNULL
	tests := []struct {
		name       string
		spec       *agentv1.ProcessSpec
		wantOut    string
		wantErr    string
		wantExit   *agentv1.Exited
		wantClass  error
		wantCode   connect.Code
		maxElapsed time.Duration
	}{
		{name: "echo", spec: &agentv1.ProcessSpec{Argv: []string{"echo", "hello"}},
			wantOut: "hello\n", wantExit: &agentv1.Exited{StdoutSize: 6}},
		{name: "stderr", spec: &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "echo oops >&2"}},
			wantErr: "oops\n", wantExit: &agentv1.Exited{StderrSize: 5}},
		{name: "exit code", spec: &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "exit 3"}},
			wantExit: &agentv1.Exited{ExitCode: 3}},
		{name: "killed by signal", spec: &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "kill -TERM $$"}},
			wantExit: &agentv1.Exited{ExitCode: 128 + 15, Signal: 15}},
		{name: "timeout kills the group", spec: &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "sleep 30 & sleep 30"}, TimeoutMs: 100},
			wantExit: &agentv1.Exited{ExitCode: 124, TimedOut: true, Signal: 9}, maxElapsed: 5 * time.Second},
		{name: "default workdir and base env", spec: &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "pwd; echo $BASE $OVER"}},
			wantOut: "/tmp\nbase base\n", wantExit: &agentv1.Exited{StdoutSize: 15}},
		{name: "workdir and env", spec: &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "pwd; echo $BASE $OVER $NEW"},
			Workdir: "/", Env: map[string]string{"OVER": "over", "NEW": "new"}},
			wantOut: "/\nbase over new\n", wantExit: &agentv1.Exited{StdoutSize: 16}},
		{name: "stdin off reads EOF", spec: &agentv1.ProcessSpec{Argv: []string{"cat"}},
			wantExit: &agentv1.Exited{}},
		{name: "devnull", spec: &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "echo out; echo err >&2"}, Stdout: devnull},
			wantErr: "err\n", wantExit: &agentv1.Exited{StderrSize: 4}},
		{name: "background child keeps stdout open", spec: &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "sleep 2 & echo done"}},
			wantOut: "done\n", wantExit: &agentv1.Exited{StdoutSize: 5}, maxElapsed: 1500 * time.Millisecond},
		{name: "relative workdir", spec: &agentv1.ProcessSpec{Argv: []string{"true"}, Workdir: "tmp"},
			wantClass: errdefs.ErrInvalidArgument, wantCode: connect.CodeInvalidArgument},
		{name: "missing workdir", spec: &agentv1.ProcessSpec{Argv: []string{"true"}, Workdir: "/nonexistent"},
			wantClass: errdefs.ErrNotFound, wantCode: connect.CodeNotFound},
		{name: "missing binary", spec: &agentv1.ProcessSpec{Argv: []string{"no-such-binary"}},
			wantClass: errdefs.ErrNotFound, wantCode: connect.CodeNotFound},
		{name: "empty argv", spec: &agentv1.ProcessSpec{},
			wantClass: errdefs.ErrInvalidArgument, wantCode: connect.CodeInvalidArgument},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			out, errOut, ex, err := run(testCtx(t), c, fmt.Sprintf("exec-%d", i), tt.spec)
			if tt.wantClass != nil {
				if !errors.Is(err, tt.wantClass) || connect.CodeOf(err) != tt.wantCode {
					t.Fatalf("got error %v (code %v), want class %v and code %v", err, connect.CodeOf(err), tt.wantClass, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if out != tt.wantOut || errOut != tt.wantErr {
				t.Errorf("got stdout %q stderr %q, want %q and %q", out, errOut, tt.wantOut, tt.wantErr)
			}
			if got, want := ex.String(), tt.wantExit.String(); got != want {
				t.Errorf("got exit {%s}, want {%s}", got, want)
			}
			if tt.maxElapsed > 0 && time.Since(start) > tt.maxElapsed {
				t.Errorf("took %v, want at most %v", time.Since(start), tt.maxElapsed)
			}
		})
	}
}

func TestSignal(t *testing.T) {
	ctx := testCtx(t)
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	tests := []struct {
		name string
		sig  syscall.Signal
		want *agentv1.Exited
	}{
		{"kill", syscall.SIGKILL, &agentv1.Exited{ExitCode: 137, Signal: 9}},
		{"term", syscall.SIGTERM, &agentv1.Exited{ExitCode: 143, Signal: 15}},
		{"int", syscall.SIGINT, &agentv1.Exited{ExitCode: 130, Signal: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "sig-" + tt.name
			s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: id, Spec: &agentv1.ProcessSpec{Argv: []string{"sleep", "30"}}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Recv(); err != nil || s.Started() == nil {
				t.Fatalf("got first event error %v, want Started", err)
			}
			if err := c.Signal(ctx, id, tt.sig); err != nil {
				t.Fatalf("Signal: %v", err)
			}
			for s.Exited() == nil {
				if _, err := s.Recv(); err != nil {
					t.Fatalf("Recv: %v", err)
				}
			}
			if got, want := s.Exited().String(), tt.want.String(); got != want {
				t.Errorf("got exit {%s}, want {%s}", got, want)
			}
			if err := c.Signal(ctx, id, tt.sig); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("signal after exit: got %v, want FailedPrecondition", err)
			}
		})
	}
	if err := c.Signal(ctx, "nope", syscall.SIGTERM); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("signal unknown exec: got %v, want NotFound", err)
	}
}

func TestStdin(t *testing.T) {
	ctx := testCtx(t)
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	const id = "cat"
	s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: id, Spec: &agentv1.ProcessSpec{Argv: []string{"cat"}, Stdin: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	steps := []struct {
		name     string
		off      int64
		data     string
		close    bool
		wantNext int64
		wantCode connect.Code // 0: success
	}{
		{"first write", 0, "hello ", false, 6, 0},
		{"duplicate re-send", 0, "hello ", false, 6, 0},
		{"overlapping re-send", 0, "hello world", false, 11, 0},
		{"gap", 20, "x", false, 0, connect.CodeOutOfRange},
		{"negative", -1, "x", false, 0, connect.CodeInvalidArgument},
		{"suffix", 11, "!\n", false, 13, 0},
		{"close", 13, "", true, 13, 0},
		{"re-sent close", 11, "!\n", true, 13, 0},
		{"write after close", 13, "more", false, 0, connect.CodeFailedPrecondition},
	}
	for _, st := range steps {
		next, err := c.WriteStdin(ctx, id, st.off, []byte(st.data), st.close)
		if st.wantCode != 0 {
			if connect.CodeOf(err) != st.wantCode {
				t.Errorf("%s: got error %v, want code %v", st.name, err, st.wantCode)
			}
			continue
		}
		if err != nil || next != st.wantNext {
			t.Errorf("%s: got next %d, error %v; want %d", st.name, next, err, st.wantNext)
		}
	}
	var out strings.Builder
	for s.Exited() == nil {
		ev, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if o := ev.GetStdout(); o != nil {
			out.Write(o.Data)
		}
	}
	if got, want := out.String(), "hello world!\n"; got != want {
		t.Errorf("got stdout %q, want %q", got, want)
	}
	_, err = c.WriteStdin(ctx, "no-stdin", 0, nil, false)
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("stdin of unknown exec: got %v, want NotFound", err)
	}
}

func TestStdinOff(t *testing.T) {
	ctx := testCtx(t)
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	if _, _, _, err := run(ctx, c, "t", &agentv1.ProcessSpec{Argv: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteStdin(ctx, "t", 0, []byte("x"), false); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("got %v, want FailedPrecondition", err)
	}
}

// TestAttachResume loses a stream in the middle and attaches again by id.
func TestAttachResume(t *testing.T) {
	ctx := testCtx(t)
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	const id = "resumable"
	spec := &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "echo first; read x; echo second; echo err >&2"}, Stdin: true}

	sctx, cancel := context.WithCancel(ctx)
	s, err := c.Exec(sctx, &agentv1.ExecRequest{ExecId: id, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	var pid int32
	for {
		ev, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if st := ev.GetStarted(); st != nil {
			if !st.Created {
				t.Errorf("got created=false on first Exec, want true")
			}
			pid = st.Pid
		}
		if o, _ := s.Offsets(); o == 6 {
			break
		}
	}
	cancel() // the connection is "lost"

	st, err := c.ListExecs(ctx)
	if err != nil || len(st) != 1 || !st[0].Running || st[0].Pid != pid {
		t.Fatalf("got ListExecs %v, %v; want one running exec of pid %d", st, err, pid)
	}
	if _, err := c.WriteStdin(ctx, id, 0, []byte("\n"), true); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		stdoutOff        int64
		stderrOff        int64
		wantOut, wantErr string
	}{
		{"resume", 6, 0, "second\n", "err\n"},
		{"from start", 0, 0, "first\nsecond\n", "err\n"},
		{"past stderr", 13, 4, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A different spec is ignored when attaching.
			s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: id, Spec: &agentv1.ProcessSpec{Argv: []string{"false"}},
				StdoutOffset: tt.stdoutOff, StderrOffset: tt.stderrOff})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var out, errOut strings.Builder
			for s.Exited() == nil {
				ev, err := s.Recv()
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case ev.GetStarted() != nil:
					if ev.GetStarted().Created || ev.GetStarted().Pid != pid {
						t.Errorf("got Started %v, want created=false pid=%d", ev.GetStarted(), pid)
					}
				case ev.GetStdout() != nil:
					out.Write(ev.GetStdout().Data)
				case ev.GetStderr() != nil:
					errOut.Write(ev.GetStderr().Data)
				}
			}
			if out.String() != tt.wantOut || errOut.String() != tt.wantErr {
				t.Errorf("got stdout %q stderr %q, want %q and %q", out.String(), errOut.String(), tt.wantOut, tt.wantErr)
			}
			if ex := s.Exited(); ex.ExitCode != 0 || ex.StdoutSize != 13 || ex.StderrSize != 4 {
				t.Errorf("got exit {%s}, want code 0, sizes 13 and 4", ex)
			}
		})
	}

	t.Run("beyond the end", func(t *testing.T) {
		_, _, _, err := run(ctx, c, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: id, StdoutOffset: 14})
		if err == nil {
			for err == nil {
				_, err = s.Recv()
			}
		}
		if connect.CodeOf(err) != connect.CodeOutOfRange {
			t.Errorf("got %v, want OutOfRange", err)
		}
	})
	t.Run("attach only to unknown", func(t *testing.T) {
		s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: "unknown", AttachOnly: true})
		if err == nil {
			_, err = s.Recv()
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("got %v, want NotFound", err)
		}
	})
}

func TestManyConcurrentExecs(t *testing.T) {
	ctx := testCtx(t)
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("c%d", i)
			spec := &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "sleep 0.1; echo $N; exit $((N % 7))"},
				Env: map[string]string{"N": fmt.Sprint(i)}}
			out, _, ex, err := run(ctx, c, id, spec)
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %w", id, err)
			case out != fmt.Sprintf("%d\n", i) || ex.ExitCode != int32(i%7):
				errs <- fmt.Errorf("%s: got %q exit %d, want %q exit %d", id, out, ex.ExitCode, fmt.Sprintf("%d\n", i), i%7)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	info, err := c.Info(ctx)
	if err != nil || info.RunningExecs != 0 {
		t.Errorf("got Info %v, %v; want 0 running execs", info, err)
	}
}

func TestBadToken(t *testing.T) {
	ctx := testCtx(t)
	_, addr := agenttest.Start(t, agent.Config{}, agent.Options{})
	for _, token := range []string{"wrong", "", agenttest.Token + "x"} {
		c := agentclient.New(addr, token)
		defer c.Close()
		if _, err := c.Info(ctx); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("token %q: got %v, want Unauthenticated", token, err)
		}
		s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: "x", Spec: &agentv1.ProcessSpec{Argv: []string{"true"}}})
		if err == nil {
			_, err = s.Recv()
		}
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("token %q: Exec got %v, want Unauthenticated", token, err)
		}
	}
}

func TestEntrypoint(t *testing.T) {
	ctx := testCtx(t)
	t.Run("started at boot", func(t *testing.T) {
		c, _ := agenttest.Start(t, agent.Config{SandboxID: "sb1", Entrypoint: []string{"sh", "-c", "echo booted; cat"}}, agent.Options{})
		info, err := c.WaitReady(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.SandboxId != "sb1" || info.RunningExecs != 1 || info.BootUnixNano == 0 || info.Pid == 0 {
			t.Errorf("got Info {%s}, want sandbox sb1 with 1 running exec", info)
		}
		if _, err := c.WriteStdin(ctx, agent.EntrypointExecID, 0, []byte("input\n"), true); err != nil {
			t.Fatal(err)
		}
		out, _, ex, err := run(ctx, c, agent.EntrypointExecID, nil)
		if err != nil || out != "booted\ninput\n" || ex.ExitCode != 0 {
			t.Errorf("got %q, exit {%s}, %v; want %q, exit 0", out, ex, err, "booted\ninput\n")
		}
	})
	t.Run("failed to start", func(t *testing.T) {
		c, _ := agenttest.Start(t, agent.Config{Entrypoint: []string{"/no/such/entrypoint"}}, agent.Options{})
		_, errOut, ex, err := run(ctx, c, agent.EntrypointExecID, nil)
		if err != nil || ex.ExitCode != 127 || !strings.Contains(errOut, "/no/such/entrypoint") {
			t.Errorf("got stderr %q, exit {%s}, %v; want exit 127 and the error", errOut, ex, err)
		}
	})
}

// Output written just before the process exits is all kept, whether the
// process group is gone at once (read without waiting for EOF) or a
// background child keeps writing for a while (read until the grace ends).
func TestOutputAroundExit(t *testing.T) {
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{ExitGrace: 500 * time.Millisecond})
	ctx := context.Background()
	out, _, ex, err := run(ctx, c, "burst", &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"}})
	if err != nil || ex.ExitCode != 0 || len(out) != 300000 {
		t.Errorf("burst then exit: got %d bytes, exit %v, err %v; want 300000", len(out), ex, err)
	}
	out, _, _, err = run(ctx, c, "bg", &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "echo a; (sleep 0.1; echo b) & exit 0"}})
	if err != nil || out != "a\nb\n" {
		t.Errorf("background child within the grace: got %q, %v; want a and b", out, err)
	}
}

// An agent started idle takes its settings once, from Configure, and runs
// the entrypoint from then on; an agent started with its settings refuses.
func TestConfigureIdle(t *testing.T) {
	ctx := testCtx(t)
	if _, err := agent.New(agent.Config{Token: "t", Idle: true, Entrypoint: []string{"true"}}, agent.Options{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("idle config with an entrypoint: got %v, want invalid argument", err)
	}
	c, _ := agenttest.Start(t, agent.Config{SandboxID: "sb1", Idle: true, Env: []string{"POOL=1"}}, agent.Options{})
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() + "/work/dir"
	if err := c.Configure(ctx, []string{"A=1", "relative"}, dir, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad env: got %v, want invalid argument", err)
	}
	if err := c.Configure(ctx, nil, "rel", nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("relative workdir: got %v, want invalid argument", err)
	}
	if err := c.Configure(ctx, []string{"A=1", "PATH=" + os.Getenv("PATH")}, dir, []string{"sh", "-c", "echo $A $POOL; pwd; cat"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Configure(ctx, nil, "/", nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second Configure: got %v, want failed precondition", err)
	}
	if _, err := c.WriteStdin(ctx, agent.EntrypointExecID, 0, nil, true); err != nil {
		t.Fatal(err)
	}
	want := "1\n" + dir + "\n"
	if out, _, ex, err := run(ctx, c, agent.EntrypointExecID, nil); err != nil || out != want || ex.ExitCode != 0 {
		t.Errorf("entrypoint: got %q, exit {%s}, %v; want %q (the pool's env replaced)", out, ex, err, want)
	}
	if out, _, _, err := run(ctx, c, "later", &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "echo $A; pwd"}}); err != nil || out != want {
		t.Errorf("exec after Configure: got %q, %v; want %q", out, err, want)
	}

	fixed, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	if err := fixed.Configure(ctx, nil, "/", nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Configure of an agent not started idle: got %v, want failed precondition", err)
	}
}
