package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// execWithSignals starts "sbx exec sb-run -- sleep 9" with a fake signal
// source and returns the channel sbx registered and where its exit code comes.
func execWithSignals(t *testing.T, f *fakeDaemon) (chan<- os.Signal, <-chan int) {
	t.Helper()
	startFakeDaemon(t, f)
	registered := make(chan chan<- os.Signal, 1)
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, newClient: clientFromEnv}
	c := &execCmd{notify: func(c chan<- os.Signal, _ ...os.Signal) { registered <- c }}
	result := make(chan int, 1)
	go func() {
		code, _ := exitCode(c.run(context.Background(), a, "sb-run", []string{"sleep", "9"}))
		result <- code
	}()
	return <-registered, result
}

func TestExecSignals(t *testing.T) {
	t.Run("first signal is forwarded", func(t *testing.T) {
		f := &fakeDaemon{sandboxes: map[string]*pb.Sandbox{"sb-run": runningSandbox()},
			signals: make(chan int32, 2), exitOnSignal: true}
		sigs, result := execWithSignals(t, f)
		sigs <- syscall.SIGTERM
		if got, want := <-result, 128+int(syscall.SIGTERM); got != want {
			t.Errorf("exit code = %d, want %d (the process's, ended by SIGTERM)", got, want)
		}
	})
	t.Run("second signal exits 130", func(t *testing.T) {
		// This process ignores signals: only the second one can end sbx.
		f := &fakeDaemon{sandboxes: map[string]*pb.Sandbox{"sb-run": runningSandbox()}, signals: make(chan int32, 2)}
		sigs, result := execWithSignals(t, f)
		sigs <- syscall.SIGINT
		if got := <-f.signals; got != int32(syscall.SIGINT) {
			t.Fatalf("daemon got signal %d, want SIGINT (%d)", got, syscall.SIGINT)
		}
		sigs <- syscall.SIGINT
		if got := <-result; got != exitSecondInterrupt {
			t.Errorf("exit code = %d, want %d", got, exitSecondInterrupt)
		}
		if n := len(f.signals); n != 0 {
			t.Errorf("daemon got %d more signals, want the first one only", n)
		}
	})
}

func TestExecForwardsStdin(t *testing.T) {
	f := &fakeDaemon{sandboxes: map[string]*pb.Sandbox{"sb-run": runningSandbox()}, exited: &pb.Exited{},
		catStdin: true, stdinClosed: make(chan struct{})}
	startFakeDaemon(t, f)
	code, stdout, stderr := sbx(t, "hello\nworld\n", "exec", "-i", "sb-run", "--", "cat")
	if code != 0 || stdout != "hello\nworld\n" {
		t.Errorf("code %d, stdout %q, stderr %q; want 0, %q", code, stdout, stderr, "hello\nworld\n")
	}
}
