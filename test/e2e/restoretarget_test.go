package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// createdContainers returns the engine containers of daemon d that are
// created but not started: its restore targets.
func createdContainers(t *testing.T, d *daemon) []string {
	return containersIn(t, d, "created")
}

// containersIn returns the engine containers of daemon d in status.
func containersIn(t *testing.T, d *daemon, status string) []string {
	t.Helper()
	out, err := exec.Command("runsc", "--root", filepath.Join(d.dir, "runsc"), "list", "--format", "json").Output()
	if err != nil {
		t.Fatalf("runsc list: %v", err)
	}
	var list []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("runsc list: %v: %s", err, out)
	}
	var ids []string
	for _, c := range list {
		if c.Status == status {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

func waitCreated(t *testing.T, d *daemon, want func([]string) bool, what string) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ids := createdContainers(t, d)
		if want(ids) {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: created containers %v", what, ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A snapshot gets a restore prepared ahead (a created engine container);
// the next restore resumes into it, with the same result as a cold one, and
// prepares the next; deleting the snapshot removes its target.
func TestMemSnapshotRestoreTarget(t *testing.T) {
	// shutdown's leak check also shows that stopping removes targets.
	d := ownDaemon(t, uniqueOpts())
	c := d.client()
	ctx := ctxT(t)
	src := createOn(t, d, sandboxd.CreateOptions{Image: "busybox", Timeout: 5 * time.Minute})
	sh(t, src, startCounter+` && echo kept > /tmp/file`)
	before := counter(t, src)
	sn, err := src.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	// One more, kept: its target must be gone after the daemon stops.
	_, err = src.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	targets := waitCreated(t, d, func(ids []string) bool { return len(ids) == 2 }, "the snapshots' restore targets")

	dst, err := c.Restore(ctx, sn.ID, sandboxd.RestoreOptions{})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { dst.Terminate(context.Background()) })
	if dst.ID != targets[0] && dst.ID != targets[1] {
		t.Errorf("restored sandbox %s, want it in a prepared target %v", dst.ID, targets)
	}
	into := false
	for _, l := range strings.Split(d.logText(), "\n") {
		into = into || strings.Contains(l, `msg="sandbox restored"`) && strings.Contains(l, "sandbox_id="+dst.ID) &&
			strings.Contains(l, "prepared_target=true")
	}
	if !into {
		t.Errorf("daemon log does not show a restore into the target:\n%s", d.logTail())
	}
	if got := waitCounterAbove(t, dst, before); got <= before {
		t.Errorf("counter after restore: %d, want above %d", got, before)
	}
	if got := sh(t, dst, "cat /tmp/file"); got != "kept\n" {
		t.Errorf("file after restore: %q", got)
	}
	// The next restore of the same snapshot gets a new target.
	next := waitCreated(t, d, func(ids []string) bool { return len(ids) == 2 && ids[0] != dst.ID && ids[1] != dst.ID }, "the next target")
	if err := c.DeleteSnapshot(ctx, sn.ID); err != nil {
		t.Fatal(err)
	}
	waitCreated(t, d, func(ids []string) bool { return len(ids) == 1 }, "the target's removal after deleting "+sn.ID+fmt.Sprint(" (targets ", next, ")"))
}
