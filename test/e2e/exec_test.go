package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

func TestExecOptions(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{Env: map[string]string{"SANDBOX_VAR": "s"}, Workdir: "/srv/app"})
	t.Run("default workdir is the sandbox's, created if missing", func(t *testing.T) {
		if r := execIn(t, sb, nil, "pwd"); r.stdout != "/srv/app\n" {
			t.Errorf("got %q, want /srv/app", r.stdout)
		}
	})
	t.Run("workdir", func(t *testing.T) {
		if r := execIn(t, sb, &sandboxd.ExecOptions{Workdir: "/tmp"}, "pwd"); r.stdout != "/tmp\n" {
			t.Errorf("got %q, want /tmp", r.stdout)
		}
	})
	t.Run("env on top of the sandbox's", func(t *testing.T) {
		r := execIn(t, sb, &sandboxd.ExecOptions{Env: map[string]string{"EXEC_VAR": "e"}}, "sh", "-c", "echo $SANDBOX_VAR$EXEC_VAR")
		if r.stdout != "se\n" {
			t.Errorf("got %q, want se", r.stdout)
		}
	})
	t.Run("timeout kills and says so", func(t *testing.T) {
		r := execIn(t, sb, &sandboxd.ExecOptions{Timeout: 500 * time.Millisecond}, "sleep", "30")
		if !r.status.TimedOut || r.status.Code != 124 {
			t.Errorf("got %+v, want a timeout with code 124", r.status)
		}
	})
	t.Run("stdin off reads EOF", func(t *testing.T) {
		if r := execIn(t, sb, nil, "cat"); r.stdout != "" || r.status.Code != 0 {
			t.Errorf("got %q code %d", r.stdout, r.status.Code)
		}
	})
	t.Run("stdin on", func(t *testing.T) {
		ctx := ctxT(t)
		p, err := sb.Exec(ctx, []string{"sh", "-c", "tr a-z A-Z"}, &sandboxd.ExecOptions{Stdin: true})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(p.Stdin, "hello ")
		io.WriteString(p.Stdin, "world\n")
		p.Stdin.Close()
		out, _ := io.ReadAll(p.Stdout)
		code, err := p.Wait(ctx)
		if string(out) != "HELLO WORLD\n" || code != 0 || err != nil {
			t.Errorf("got %q code %d err %v", out, code, err)
		}
	})
	t.Run("signal", func(t *testing.T) {
		ctx := ctxT(t)
		p, err := sb.Exec(ctx, []string{"sleep", "60"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(ctx, int(syscall.SIGTERM)); err != nil {
			t.Fatal(err)
		}
		st, err := p.WaitStatus(ctx)
		if err != nil || st.Code != 128+15 || st.Signal != 15 {
			t.Errorf("got %+v, %v; want killed by SIGTERM (143)", st, err)
		}
	})
	t.Run("command not found", func(t *testing.T) {
		ctx := ctxT(t)
		p, err := sb.Exec(ctx, []string{"/no/such/program"}, nil)
		if err == nil {
			code, _ := p.Wait(ctx)
			if code == 0 {
				t.Error("a missing program exited 0")
			}
		}
	})
}

func TestExecConcurrent(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var out bytes.Buffer
			p, err := sb.Exec(context.Background(), []string{"sh", "-c", fmt.Sprintf("sleep 0.5; echo %d", i)}, &sandboxd.ExecOptions{Stdout: &out})
			if err != nil {
				errs <- err.Error()
				return
			}
			if code, err := p.Wait(context.Background()); code != 0 || err != nil || out.String() != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Sprintf("exec %d: got %q code %d err %v", i, out.String(), code, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestExecLargeOutput(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	ctx := ctxT(t)
	// 32 MiB read in full, byte for byte.
	p, err := sb.Exec(ctx, []string{"sh", "-c", "head -c 33554432 /dev/urandom | tee /tmp/data | sha256sum"}, &sandboxd.ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := io.ReadAll(p.Stdout)
	p.Wait(ctx)
	p2, err := sb.Exec(ctx, []string{"cat", "/tmp/data"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, _ := io.Copy(h, p2.Stdout)
	p2.Wait(ctx)
	if got := fmt.Sprintf("%x", h.Sum(nil)); n != 32<<20 || !strings.HasPrefix(string(sum), got) {
		t.Errorf("read %d bytes with sum %s, want %d bytes with sum %s", n, got, 32<<20, sum)
	}
	// Output nobody reads, sent to /dev/null, does not block the process.
	r := execIn(t, sb, &sandboxd.ExecOptions{DiscardStdout: true, Timeout: time.Minute}, "sh", "-c", "head -c 67108864 /dev/zero; echo end >&2")
	if r.status.Code != 0 || r.status.TimedOut || r.stderr != "end\n" {
		t.Errorf("discarded output: got %+v stderr %q", r.status, r.stderr)
	}
}

func TestExecUnreadOutputKeptWithBackPressure(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	ctx := ctxT(t)
	// A process writing more than the buffers on the way hold waits for a
	// reader instead of losing output. On the way: the agent's 4 MiB per
	// stream, the sandbox's and the host's TCP buffers (Linux 6.18 grows a
	// socket's receive buffer up to 32 MiB), an HTTP/2 stream window to
	// the client. 17-36 MiB fitted here. The writer notes each MiB it got
	// out; with nobody reading, the count stops short of the end.
	const mib = 128
	p, err := sb.Exec(ctx, []string{"sh", "-c", fmt.Sprintf(
		"for i in $(seq %d); do head -c 1048576 /dev/zero; echo $i > /tmp/progress; done", mib)},
		&sandboxd.ExecOptions{ExecID: "bp-1"})
	if err != nil {
		t.Fatal(err)
	}
	written := func() string {
		r := execIn(t, sb, nil, "cat", "/tmp/progress")
		return strings.TrimSpace(r.stdout)
	}
	// Until the count stays put between two looks (it may creep while the
	// kernel grows its buffers), or reaches the end.
	last, stalled := "", false
	for deadline := time.Now().Add(20 * time.Second); !stalled && time.Now().Before(deadline); {
		time.Sleep(700 * time.Millisecond)
		now := written()
		if now == fmt.Sprint(mib) {
			break
		}
		stalled, last = now != "" && now == last, now
	}
	if !stalled {
		t.Errorf("with nobody reading, the writer got out %s of %d MiB and did not stop: it did not wait", last, mib)
	}
	t.Logf("with nobody reading, the writer waits after %s MiB", last)
	n, _ := io.Copy(io.Discard, p.Stdout)
	if code, _ := p.Wait(ctx); code != 0 || n != mib<<20 {
		t.Errorf("got %d bytes, code %d; want %d bytes, 0", n, code, mib<<20)
	}
}

func TestExecAttachByID(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	ctx := ctxT(t)
	first, err := sb.Exec(ctx, []string{"sh", "-c", "echo one; sleep 1; echo two"}, &sandboxd.ExecOptions{ExecID: "job-42"})
	if err != nil {
		t.Fatal(err)
	}
	// The same id again is the same exec: no second process, and the output from the start.
	var out bytes.Buffer
	second, err := sb.Exec(ctx, []string{"sh", "-c", "echo a-second-process"}, &sandboxd.ExecOptions{ExecID: "job-42", Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := second.Wait(ctx)
	b1, _ := io.ReadAll(first.Stdout)
	c1, _ := first.Wait(ctx)
	if string(b1) != "one\ntwo\n" || out.String() != "one\ntwo\n" || c1 != 0 || c2 != 0 {
		t.Errorf("got %q and %q (codes %d %d), want one/two twice", b1, out.String(), c1, c2)
	}
	if first.ExecID != "job-42" || second.ExecID != "job-42" {
		t.Errorf("got exec ids %q %q", first.ExecID, second.ExecID)
	}
}
