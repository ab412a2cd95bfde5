package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agentclient"
)

const reaperHelperEnv = "SANDBOXD_AGENT_REAPER_HELPER"

// TestReaperHelper is not a test: TestReapAll runs the test binary with it
// as a child subreaper serving an agent in ReapAll mode, as PID 1 would.
func TestReaperHelper(t *testing.T) {
	if os.Getenv(reaperHelperEnv) != "1" {
		t.Skip("helper process for TestReapAll")
	}
	if err := agent.SetSubreaper(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Token: "reaper"}, agent.Options{ReapAll: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	fmt.Printf("ADDR %s\n", ln.Addr())
	if err := a.Serve(ctx, ln); err != nil {
		t.Fatal(err)
	}
}

// TestReapAll runs the agent as a subreaper that reaps every child: exit
// statuses of execs must still reach their execs, and orphans must not stay
// zombies.
func TestReapAll(t *testing.T) {
	ctx := testCtx(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestReaperHelper$", "-test.v=false")
	cmd.Env = append(os.Environ(), reaperHelperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		t.Fatalf("got helper line %q, %v; want ADDR host:port", line, err)
	}
	c, err := agentclient.Dial(ctx, addr, "reaper")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("exit statuses reach their execs", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Go(func() {
				spec := &agentv1.ProcessSpec{Argv: []string{"sh", "-c", fmt.Sprintf("sleep 0.0%d; exit %d", i%10, i%5)}}
				_, _, ex, err := run(ctx, c, fmt.Sprint("e", i), spec)
				if err != nil || ex.ExitCode != int32(i%5) {
					t.Errorf("exec %d: got exit {%s}, %v; want code %d", i, ex, err, i%5)
				}
			})
		}
		wg.Wait()
	})

	t.Run("orphans are reaped", func(t *testing.T) {
		out, _, _, err := run(ctx, c, "orphan", &agentv1.ProcessSpec{
			Argv: []string{"sh", "-c", "sleep 0.2 >/dev/null 2>&1 & echo $!"}})
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("got output %q, want a pid", out)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				return // gone: reaped
			}
			if time.Now().After(deadline) {
				t.Fatalf("orphan %d still exists: %s", pid, stat)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
