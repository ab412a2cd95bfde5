package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// Memory snapshots (issue 4): a restored sandbox continues where its source
// was, processes, memory, files and listeners included.

// sh runs a shell script in sb and returns its stdout; a non-zero exit fails t.
func sh(t *testing.T, sb *sandboxd.Sandbox, script string) string {
	t.Helper()
	r := execIn(t, sb, nil, "sh", "-c", script)
	if r.status.Code != 0 {
		t.Fatalf("%s in %s: exit %d, stderr %q", script, sb.ID, r.status.Code, r.stderr)
	}
	return r.stdout
}

// counter reads the value a background counter keeps in /tmp/count.
func counter(t *testing.T, sb *sandboxd.Sandbox) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(sh(t, sb, "cat /tmp/count")))
	if err != nil {
		t.Fatalf("counter in %s: %v", sb.ID, err)
	}
	return n
}

// waitCounterAbove waits until sb's counter passes n: the counting process runs.
func waitCounterAbove(t *testing.T, sb *sandboxd.Sandbox, n int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := counter(t, sb)
		if got > n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter in %s stays at %d, want it above %d", sb.ID, got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startCounter starts, through exec, a background process that counts in
// memory (a shell variable) and writes the count to /tmp/count.
// Each value is written beside and renamed over, so a reader never sees
// the file empty (truncated, not yet written).
const startCounter = `i=0; (while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done) >/dev/null 2>&1 &
while [ ! -s /tmp/count ]; do sleep 0.01; done`

func snapshotOf(t *testing.T, sb *sandboxd.Sandbox, ttl time.Duration) sandboxd.Snapshot {
	t.Helper()
	sn, err := sb.Snapshot(ctxT(t), ttl)
	if err != nil {
		t.Fatalf("snapshot %s: %v", sb.ID, err)
	}
	t.Cleanup(func() { shared.client().DeleteSnapshot(context.Background(), sn.ID) })
	return sn
}

func restoreOn(t *testing.T, c *sandboxd.Client, id string, o sandboxd.RestoreOptions) *sandboxd.Sandbox {
	t.Helper()
	sb, err := c.Restore(ctxT(t), id, o)
	if err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	return sb
}

func restore(t *testing.T, id string, o sandboxd.RestoreOptions) *sandboxd.Sandbox {
	t.Helper()
	return restoreOn(t, shared.client(), id, o)
}

func TestMemSnapshotRestoreContinues(t *testing.T) {
	ctx := ctxT(t)
	app := fmt.Sprintf("snap-%d", time.Now().UnixNano())
	src := create(t, sandboxd.CreateOptions{App: app, Name: "orig", Tags: map[string]string{"team": "x"},
		CPU: 0.5, MemoryMiB: 256, Timeout: 10 * time.Minute})
	sh(t, src, startCounter)
	// A listening server, started by exec, in the background.
	sh(t, src, `mkdir -p /www && echo hello from inside > /www/index.html && httpd -p 8080 -h /www && echo kept > /tmp/file`)
	before := waitCounterAbove(t, src, 2)

	sn := snapshotOf(t, src, 0)
	if !strings.HasPrefix(sn.ID, "sn-") || sn.SourceSandboxID != src.ID || sn.ParentID != "" || sn.App != app ||
		sn.Name != "orig" || sn.Size <= 0 || sn.Checksum == "" {
		t.Errorf("snapshot: got %+v", sn)
	}
	if d := sn.ExpiresAt.Sub(sn.CreatedAt); d < 7*24*time.Hour-time.Minute || d > 7*24*time.Hour+time.Minute {
		t.Errorf("default lifetime: got %v, want 7 days", d)
	}
	// The source keeps running.
	waitCounterAbove(t, src, counter(t, src))

	// A kept name obeys the unique-while-running rule.
	_, err := shared.client().Restore(ctx, sn.ID, sandboxd.RestoreOptions{})
	wantClass(t, "restore keeping the name of a running sandbox", err, sandboxd.ErrAlreadyExists)

	dst := restore(t, sn.ID, sandboxd.RestoreOptions{Name: "copy"})
	if dst.ID == src.ID {
		t.Fatalf("restored sandbox has the source's id %s", dst.ID)
	}
	_, info, err := shared.client().Get(ctx, dst.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.App != app || info.Name != "copy" || info.Tags["team"] != "x" || info.CPU != 0.5 || info.MemoryMiB != 256 ||
		info.State != sandboxd.StateRunning || info.Timeout != 10*time.Minute {
		t.Errorf("restored sandbox: got %+v", info)
	}
	if d := time.Until(info.Deadline); d < 9*time.Minute {
		t.Errorf("restored sandbox's lifetime: %v left, want a fresh 10 minutes", d)
	}
	// The counter goes on from where it was (its memory came along).
	if got := waitCounterAbove(t, dst, before); got < before {
		t.Errorf("counter after restore: got %d, want at least %d", got, before)
	}
	if got := sh(t, dst, "cat /tmp/file"); got != "kept\n" {
		t.Errorf("file after restore: got %q", got)
	}
	if got := sh(t, dst, "wget -qO- http://127.0.0.1:8080/index.html"); got != "hello from inside\n" {
		t.Errorf("server after restore: got %q", got)
	}
	// Both go on independently.
	sh(t, dst, "echo copy > /tmp/file")
	if got := sh(t, src, "cat /tmp/file; wget -qO- http://127.0.0.1:8080/index.html"); got != "kept\nhello from inside\n" {
		t.Errorf("source after the copy changed: got %q", got)
	}
	if _, err := dst.Snapshot(ctx, -time.Second); err == nil {
		t.Errorf("negative ttl: got no error")
	}
}

func TestMemSnapshotExecBackgroundSurvives(t *testing.T) {
	src := create(t, sandboxd.CreateOptions{})
	// A background process started by exec, and not attached to anything.
	sh(t, src, `(sleep 1000; echo never) >/dev/null 2>&1 & echo $! > /tmp/bgpid`)
	pid := strings.TrimSpace(sh(t, src, "cat /tmp/bgpid"))
	sn := snapshotOf(t, src, 0)
	dst := restore(t, sn.ID, sandboxd.RestoreOptions{NoName: true})
	if got := sh(t, dst, "cat /proc/"+pid+"/cmdline | tr '\\0' ' '"); !strings.Contains(got, "sleep 1000") {
		t.Errorf("background process %s after restore: got cmdline %q", pid, got)
	}
}

func TestMemSnapshotDuringExec(t *testing.T) {
	ctx := ctxT(t)
	src := create(t, sandboxd.CreateOptions{})
	var out bytes.Buffer
	p, err := src.Exec(ctx, []string{"sh", "-c",
		"i=0; while [ $i -lt 30 ]; do echo line $i; i=$((i+1)); sleep 0.1; done; echo finished > /tmp/fg; exit 3"},
		&sandboxd.ExecOptions{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	sn := snapshotOf(t, src, 0)
	// The client's exec goes on, whole, in the source.
	code, err := p.Wait(ctx)
	if err != nil || code != 3 || strings.Count(out.String(), "line ") != 30 {
		t.Errorf("exec across a snapshot: got code %d, %v, %d lines; want 3 and 30 lines", code, err, strings.Count(out.String(), "line "))
	}
	// In the copy the process runs on, detached from any client, and ends.
	dst := restore(t, sn.ID, sandboxd.RestoreOptions{NoName: true})
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := execIn(t, dst, nil, "cat", "/tmp/fg")
		if r.stdout == "finished\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exec running at snapshot time did not finish in the copy: %q %q", r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestMemSnapshotBranches(t *testing.T) {
	src := create(t, sandboxd.CreateOptions{})
	sh(t, src, startCounter+"; echo base > /tmp/who")
	sn := snapshotOf(t, src, 0)
	var wg sync.WaitGroup
	branches := make([]*sandboxd.Sandbox, 3)
	errs := make([]error, 3)
	for i := range branches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			branches[i], errs[i] = shared.client().Restore(ctxT(t), sn.ID, sandboxd.RestoreOptions{NoName: true})
		}()
	}
	wg.Wait()
	for i, b := range branches {
		if errs[i] != nil {
			t.Fatalf("branch %d: %v", i, errs[i])
		}
		t.Cleanup(func() { b.Terminate(context.Background()) })
	}
	for i, b := range branches {
		sh(t, b, fmt.Sprintf("echo branch%d > /tmp/who", i))
	}
	for i, b := range branches {
		if got := sh(t, b, "cat /tmp/who"); got != fmt.Sprintf("branch%d\n", i) {
			t.Errorf("branch %d sees %q", i, got)
		}
		waitCounterAbove(t, b, counter(t, b))
	}
	if got := sh(t, src, "cat /tmp/who"); got != "base\n" {
		t.Errorf("source sees %q", got)
	}
}

func TestMemSnapshotResnapshot(t *testing.T) {
	ctx := ctxT(t)
	src := create(t, sandboxd.CreateOptions{})
	sh(t, src, "echo one > /tmp/a")
	first := snapshotOf(t, src, 2*time.Hour)
	mid := restore(t, first.ID, sandboxd.RestoreOptions{NoName: true})
	sh(t, mid, "echo two > /tmp/b")

	second := snapshotOf(t, mid, 0) // inherits the first's expiry
	if second.ParentID != first.ID || second.SourceSandboxID != mid.ID {
		t.Errorf("re-snapshot: got parent %q source %q, want %s and %s", second.ParentID, second.SourceSandboxID, first.ID, mid.ID)
	}
	if !second.ExpiresAt.Equal(first.ExpiresAt) {
		t.Errorf("re-snapshot expiry: got %v, want the parent's %v", second.ExpiresAt, first.ExpiresAt)
	}
	third := snapshotOf(t, mid, time.Hour) // a TTL overrides the inheritance
	if d := third.ExpiresAt.Sub(third.CreatedAt); d != time.Hour {
		t.Errorf("re-snapshot with a TTL: lives %v, want 1h", d)
	}
	last := restore(t, second.ID, sandboxd.RestoreOptions{NoName: true})
	if got := sh(t, last, "cat /tmp/a /tmp/b"); got != "one\ntwo\n" {
		t.Errorf("restore of a re-snapshot: got %q", got)
	}
	if got, err := shared.client().GetSnapshot(ctx, second.ID); err != nil || got.ParentID != first.ID || got.Size != second.Size {
		t.Errorf("inspect: got %+v, %v", got, err)
	}
}

func TestMemSnapshotRefusals(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	src := create(t, sandboxd.CreateOptions{})
	before, _ := c.List(ctx, sandboxd.ListOptions{})

	t.Run("damaged", func(t *testing.T) {
		sn := snapshotOf(t, src, 0)
		pages := filepath.Join(shared.dir, "snapshots", sn.ID, "runsc", "pages.img")
		b, err := os.ReadFile(pages)
		if err != nil || len(b) == 0 {
			t.Fatalf("read pages: %v (%d bytes)", err, len(b))
		}
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(pages, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = c.Restore(ctx, sn.ID, sandboxd.RestoreOptions{NoName: true})
		wantClass(t, "restore of a damaged snapshot", err, sandboxd.ErrFailedPrecondition)
		if err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("damaged: got %v, want it to say damaged", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		sn := snapshotOf(t, src, time.Millisecond)
		time.Sleep(5 * time.Millisecond)
		_, err := c.Restore(ctx, sn.ID, sandboxd.RestoreOptions{NoName: true})
		wantClass(t, "restore of an expired snapshot", err, sandboxd.ErrExpired)
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("expired: got %v, want it to say expired", err)
		}
	})
	t.Run("ttl over the maximum", func(t *testing.T) {
		_, err := src.Snapshot(ctx, 31*24*time.Hour)
		wantClass(t, "ttl of 31 days", err, sandboxd.ErrInvalidArgument)
	})
	t.Run("unknown", func(t *testing.T) {
		_, err := c.Restore(ctx, "sn-0000000000000000", sandboxd.RestoreOptions{})
		wantClass(t, "restore unknown", err, sandboxd.ErrNotFound)
		wantClass(t, "delete unknown", c.DeleteSnapshot(ctx, "sn-0000000000000000"), sandboxd.ErrNotFound)
		_, err = c.Sandbox("sb-0000000000000000").Snapshot(ctx, 0)
		wantClass(t, "snapshot of an unknown sandbox", err, sandboxd.ErrNotFound)
	})
	// Refused restores leave no sandbox running.
	after, _ := c.List(ctx, sandboxd.ListOptions{})
	if len(after) != len(before) {
		t.Errorf("running sandboxes: %d before the refusals, %d after", len(before), len(after))
	}
}

func TestMemSnapshotCLI(t *testing.T) {
	id := sbxCreate(t, "--image", "busybox")
	sbx(t, "", "exec", id, "--", "sh", "-c", "echo cli > /tmp/x")
	out, errs, code := sbx(t, "", "snapshot", "--ttl", "1h", id)
	sn := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(sn, "sn-") {
		t.Fatalf("sbx snapshot: got %q / %q code %d", out, errs, code)
	}
	out, errs, code = sbx(t, "", "restore", "--no-name", sn)
	rid := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(rid, "sb-") {
		t.Fatalf("sbx restore: got %q / %q code %d", out, errs, code)
	}
	t.Cleanup(func() { sbx(t, "", "terminate", rid) })
	if out, _, _ := sbx(t, "", "exec", rid, "--", "cat", "/tmp/x"); out != "cli\n" {
		t.Errorf("restored by sbx: got %q", out)
	}
	out, _, code = sbx(t, "", "snapshots", "ls", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 {
		t.Fatalf("snapshots ls --json: %v code %d\n%s", err, code, out)
	}
	found := false
	for _, s := range list {
		found = found || s["id"] == sn
	}
	if !found {
		t.Errorf("snapshots ls --json does not list %s", sn)
	}
	if out, _, code := sbx(t, "", "snapshots", "inspect", sn); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "expires:") {
		t.Errorf("snapshots inspect: got %q code %d", out, code)
	}
	if _, errs, code := sbx(t, "", "snapshots", "rm", sn); code != 0 {
		t.Errorf("snapshots rm: %q code %d", errs, code)
	}
	if _, errs, code := sbx(t, "", "restore", sn); code == 0 || !strings.Contains(errs, "not found") {
		t.Errorf("restore after rm: got %q code %d", errs, code)
	}
}

// A daemon restart keeps every snapshot usable, and sandboxes restored
// before it stay adopted.
func TestMemSnapshotDaemonRestart(t *testing.T) {
	d := ownDaemon(t, uniqueOpts())
	ctx := ctxT(t)
	c := d.client()
	src, err := c.Create(ctx, sandboxd.CreateOptions{Image: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	sh(t, src, "echo first > /tmp/f")
	first, err := src.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	mid, err := c.Restore(ctx, first.ID, sandboxd.RestoreOptions{NoName: true})
	if err != nil {
		t.Fatal(err)
	}
	sh(t, mid, "echo second >> /tmp/f")
	second, err := mid.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}

	d.kill()
	d.restart(t)
	c = d.client()

	list, err := c.ListSnapshots(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("snapshots after restart: got %d, %v; want 2", len(list), err)
	}
	if got := sh(t, c.Sandbox(mid.ID), "cat /tmp/f"); got != "first\nsecond\n" {
		t.Errorf("restored sandbox adopted after restart: got %q", got)
	}
	for _, tc := range []struct {
		sn   sandboxd.Snapshot
		want string
	}{{first, "first\n"}, {second, "first\nsecond\n"}} {
		sb, err := c.Restore(ctx, tc.sn.ID, sandboxd.RestoreOptions{NoName: true})
		if err != nil {
			t.Fatalf("restore %s after restart: %v\n%s", tc.sn.ID, err, d.logTail())
		}
		if got := sh(t, sb, "cat /tmp/f"); got != tc.want {
			t.Errorf("%s after restart: got %q, want %q", tc.sn.ID, got, tc.want)
		}
		// A re-snapshot after the restart still knows its parent.
		if tc.sn.ID == second.ID {
			again, err := sb.Snapshot(ctx, 0)
			if err != nil || again.ParentID != second.ID || !again.ExpiresAt.Equal(second.ExpiresAt) {
				t.Errorf("re-snapshot after restart: got %+v, %v", again, err)
			}
		}
	}
	list, _ = c.ListSnapshots(ctx)
	for _, sn := range list {
		if err := c.DeleteSnapshot(ctx, sn.ID); err != nil {
			t.Error(err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(d.dir, "snapshots")); len(ents) != 1 { // tmp
		t.Errorf("snapshot dirs left after deleting all: %d entries", len(ents))
	}
}
