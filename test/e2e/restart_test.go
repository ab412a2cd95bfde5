package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// A daemon killed mid-flight loses nothing: its sandboxes are found again and
// stay usable, a sandbox whose engine died meanwhile is marked lost, and
// nothing leaks.
func TestDaemonRestart(t *testing.T) {
	d := ownDaemon(t, uniqueOpts())
	ctx := ctxT(t)
	c := d.client()
	keep, err := c.Create(ctx, sandboxd.CreateOptions{Image: "busybox", Name: "keeper", Tags: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	logger, err := c.Create(ctx, sandboxd.CreateOptions{Image: "busybox",
		Entrypoint: []string{"sh", "-c", "i=0; while [ $i -lt 40 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done; exit 9"}})
	if err != nil {
		t.Fatal(err)
	}
	doomed, err := c.Create(ctx, sandboxd.CreateOptions{Image: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	// A background process started by exec must survive too.
	if _, err := keep.Exec(ctx, []string{"sh", "-c", "echo before > /tmp/state; sleep 300 &"}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)

	d.kill()
	// While the daemon is down, one sandbox dies.
	runsc := exec.Command("runsc", "--root", filepath.Join(d.dir, "runsc"), "kill", doomed.ID, "KILL")
	if out, err := runsc.CombinedOutput(); err != nil {
		t.Logf("runsc kill: %v %s", err, out)
	}
	time.Sleep(500 * time.Millisecond)

	d.restart(t)
	c = d.client()
	keep2 := c.Sandbox(keep.ID)
	var out bytes.Buffer
	p, err := keep2.Exec(ctx, []string{"cat", "/tmp/state"}, &sandboxd.ExecOptions{Stdout: &out})
	if err != nil {
		t.Fatalf("exec after restart: %v\n%s", err, d.logTail())
	}
	if code, _ := p.Wait(ctx); code != 0 || out.String() != "before\n" {
		t.Errorf("after restart: got %q code %d", out.String(), code)
	}
	if _, info, err := c.FromName(ctx, "", "keeper"); err != nil || info.Tags["k"] != "v" {
		t.Errorf("lookup by name after restart: %+v %v", info, err)
	}
	code, err := c.Sandbox(logger.ID).Wait(ctx)
	if err != nil || code != 9 {
		t.Errorf("entrypoint across restart: got %d, %v; want 9", code, err)
	}
	var logs bytes.Buffer
	c.Sandbox(logger.ID).Logs(ctx, false, &logs, nil)
	if n := strings.Count(logs.String(), "tick "); n != 40 {
		t.Errorf("entrypoint logs across restart: got %d lines, want 40:\n%s", n, logs.String())
	}
	_, info, err := c.Get(ctx, doomed.ID)
	if err != nil || info.State != sandboxd.StateFinished || info.FinishReason != "lost" {
		t.Errorf("a sandbox that died while the daemon was down: got %s/%s %v, want finished/lost", info.State, info.FinishReason, err)
	}
	if err := keep2.Terminate(context.Background()); err != nil {
		t.Error(err)
	}
}
