package agentclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
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

func TestWaitReady(t *testing.T) {
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens yet: connections are refused

	c := agentclient.New(addr, agenttest.Token)
	defer c.Close()
	go func() {
		time.Sleep(50 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listen again: %v", err)
			return
		}
		agenttest.StartOn(t, ln, agent.Config{SandboxID: "late"}, agent.Options{})
	}()
	info, err := c.WaitReady(ctx)
	if err != nil || info.SandboxId != "late" {
		t.Fatalf("got %v, %v; want Info of sandbox late", info, err)
	}

	t.Run("gives up when ctx ends", func(t *testing.T) {
		c := agentclient.New(addr+"0", agenttest.Token) // nothing there
		defer c.Close()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		if _, err := c.WaitReady(ctx); !errors.Is(err, errdefs.ErrDeadlineExceeded) {
			t.Errorf("got %v, want deadline exceeded", err)
		}
	})
	t.Run("stops at once on a bad token", func(t *testing.T) {
		c := agentclient.New(addr, "bad")
		defer c.Close()
		start := time.Now()
		_, err := c.WaitReady(ctx)
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Errorf("got %v, want Unauthenticated (class permission denied)", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("took %v, want an immediate failure", d)
		}
	})
}

// proxy forwards TCP connections to target. cut closes them, as a network
// failure would; stall makes the connections open so far silent for good
// (what they carry is swallowed, none is closed), as a connection stalled
// by a frozen peer would be.
type proxy struct {
	ln     net.Listener
	mu     sync.Mutex
	flags  []*atomic.Bool
	conns  []net.Conn
	nFirst int // the first nFirst connections are stalled from the start
}

func newProxy(t *testing.T, target string) *proxy { return newStallProxy(t, target, 0) }

// newStallProxy is newProxy with its first stalledFirst connections
// stalled from the start.
func newStallProxy(t *testing.T, target string, stalledFirst int) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, nFirst: stalledFirst}
	t.Cleanup(func() { ln.Close(); p.cut() })
	fwd := func(dst, src net.Conn, stalled *atomic.Bool) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !stalled.Load() {
				dst.Write(buf[:n])
			}
			if err != nil {
				dst.Close()
				return
			}
		}
	}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			stalled := new(atomic.Bool)
			p.mu.Lock()
			stalled.Store(len(p.flags) < p.nFirst)
			p.flags = append(p.flags, stalled)
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go fwd(out, in, stalled)
			go fwd(in, out, stalled)
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// cut closes every connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// stall silences every connection open so far.
func (p *proxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.flags {
		f.Store(true)
	}
}

func TestRunResumesAfterBrokenConnection(t *testing.T) {
	ctx := testCtx(t)
	_, addr := agenttest.Start(t, agent.Config{}, agent.Options{})
	p := newProxy(t, addr)
	c := agentclient.New(p.addr(), agenttest.Token)
	defer c.Close()

	go func() {
		time.Sleep(150 * time.Millisecond)
		p.cut()
	}()
	var out, errOut bytes.Buffer
	spec := &agentv1.ProcessSpec{Argv: []string{"sh", "-c", "echo a; echo x >&2; sleep 0.4; echo b; echo y >&2"}}
	ex, err := c.Run(ctx, "resume", spec, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "a\nb\n" || errOut.String() != "x\ny\n" || ex.ExitCode != 0 {
		t.Errorf("got stdout %q stderr %q exit {%s}, want %q, %q, code 0", out.String(), errOut.String(), ex, "a\nb\n", "x\ny\n")
	}
}

func TestReconnect(t *testing.T) {
	ctx := testCtx(t)
	_, addr := agenttest.Start(t, agent.Config{SandboxID: "moved"}, agent.Options{})
	p1, p2 := newProxy(t, addr), newProxy(t, addr)
	c := agentclient.New(p1.addr(), agenttest.Token)
	defer c.Close()
	if _, err := c.Info(ctx); err != nil {
		t.Fatal(err)
	}
	// The sandbox moved: the old address is gone.
	p1.ln.Close()
	p1.cut()
	c.Reconnect(p2.addr())
	if got := c.Addr(); got != p2.addr() {
		t.Errorf("got Addr %s, want %s", got, p2.addr())
	}
	info, err := c.WaitReady(ctx)
	if err != nil || info.SandboxId != "moved" {
		t.Errorf("got %v, %v; want Info of sandbox moved", info, err)
	}
}

func TestErrorClasses(t *testing.T) {
	ctx := testCtx(t)
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"signal unknown", func() error { return c.Signal(ctx, "nope", 15) }, errdefs.ErrNotFound},
		{"stdin unknown", func() error { _, err := c.WriteStdin(ctx, "nope", 0, nil, false); return err }, errdefs.ErrNotFound},
		{"bad signal", func() error { return c.Signal(ctx, "nope", 0) }, errdefs.ErrInvalidArgument},
		{"empty exec id", func() error {
			_, err := c.Run(ctx, "", &agentv1.ProcessSpec{Argv: []string{"true"}}, nil, nil)
			return err
		},
			errdefs.ErrInvalidArgument},
		{"attach only", func() error {
			_, err := c.Run(ctx, "nope", nil, nil, nil)
			return err
		}, errdefs.ErrInvalidArgument}, // a new exec without a spec
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want class %v", err, tt.want)
			}
		})
	}
}

// TestExecTrueLatency measures the round trip of an Exec of /bin/true
// through the client on loopback (start, Started, Exited).
func TestExecTrueLatency(t *testing.T) {
	ctx := testCtx(t)
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	const n = 100
	d := make([]time.Duration, 0, n)
	for i := range n + 5 {
		start := time.Now()
		ex, err := c.Run(ctx, fmt.Sprint("true-", i), &agentv1.ProcessSpec{Argv: []string{"/bin/true"}}, nil, nil)
		if err != nil || ex.ExitCode != 0 {
			t.Fatalf("got {%s}, %v; want exit 0", ex, err)
		}
		if i >= 5 { // warm-up
			d = append(d, time.Since(start))
		}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	t.Logf("Exec /bin/true round trip over %d runs: p50 %v, p90 %v, p99 %v, min %v",
		n, d[n/2], d[n*9/10], d[n*99/100], d[0])
}

func BenchmarkExecTrue(b *testing.B) {
	ctx := context.Background()
	c, _ := agenttest.Start(b, agent.Config{}, agent.Options{})
	spec := &agentv1.ProcessSpec{Argv: []string{"/bin/true"}}
	i := 0
	for b.Loop() {
		i++
		if _, err := c.Run(ctx, fmt.Sprint("true-", i), spec, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInfo(b *testing.B) {
	ctx := context.Background()
	c, _ := agenttest.Start(b, agent.Config{}, agent.Options{})
	for b.Loop() {
		if _, err := c.Info(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	mu sync.Mutex
	n  int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return c, err
}

func (l *countingListener) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Execs one after another, and the calls between them, share one
// connection: a stream closed after its exit is read to its end, so its
// connection is kept (a new one into a sandbox costs milliseconds).
func TestExecsReuseTheConnection(t *testing.T) {
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	c, _ := agenttest.StartOn(t, cl, agent.Config{}, agent.Options{})
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		s, err := c.Exec(ctx, &agentv1.ExecRequest{ExecId: fmt.Sprintf("e%d", i), Spec: &agentv1.ProcessSpec{Argv: []string{"true"}}})
		if err != nil {
			t.Fatal(err)
		}
		for {
			ev, err := s.Recv()
			if err != nil {
				t.Fatalf("exec %d: %v", i, err)
			}
			if ev.GetExited() != nil {
				break
			}
		}
		s.Close() // right after the exit, as the daemon does
		if _, err := c.Info(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := cl.accepted(); n != 1 {
		t.Errorf("the agent accepted %d connections for 5 execs and 6 calls in sequence, want 1", n)
	}
}
