package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// poolSandboxes returns the sandboxes of daemon d's warm pool: those its log
// says are ready ("warm pool: sandbox ready"), still running, and that no
// sandbox of its API owns (taken).
func poolSandboxes(t *testing.T, d *daemon) []string {
	t.Helper()
	running := containersIn(t, d, "running")
	sbs, err := d.client().List(ctxT(t), sandboxd.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	ready := map[string]bool{}
	for _, l := range strings.Split(d.logText(), "\n") {
		if strings.Contains(l, `msg="warm pool: sandbox ready"`) {
			if _, id, ok := strings.Cut(l, "sandbox_id="); ok {
				ready[strings.Fields(id)[0]] = true
			}
		}
	}
	var ids []string
	for _, id := range running {
		if ready[id] && !slices.ContainsFunc(sbs, func(i sandboxd.Info) bool { return i.ID == id }) {
			ids = append(ids, id)
		}
	}
	return ids
}

// waitPool waits until d's warm pool holds one sandbox other than those in
// not, and returns it.
func waitPool(t *testing.T, d *daemon, not ...string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ids := slices.DeleteFunc(poolSandboxes(t, d), func(id string) bool { return slices.Contains(not, id) })
		if len(ids) == 1 {
			return ids[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm pool: got sandboxes %v, want one (not %v)\n%s", ids, not, d.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A create that fits the warm pool (image and limits) is served by the
// sandbox booted ahead: the create's env, secrets, workdir and entrypoint
// all apply, a memory snapshot of it restores with them, and the pool boots
// the next one. Creates that do not fit boot their own. Pool sandboxes are
// swept after a crash and taken down at a clean stop (shutdown's leak check).
func TestWarmPool(t *testing.T) {
	o := uniqueOpts()
	o.args = []string{"--warm-pool", "size=1,image=busybox,memory=256"}
	d := ownDaemon(t, o)
	c := d.client()
	ctx := ctxT(t)
	if err := c.CreateSecret(ctx, "pool-secret", map[string]string{"TOKEN": "s3cret"}); err != nil {
		t.Fatal(err)
	}
	first := waitPool(t, d)

	sb := createOn(t, d, sandboxd.CreateOptions{
		Image: "busybox", MemoryMiB: 256, Name: "from-pool", Env: map[string]string{"GREETING": "hello"},
		Secrets: []string{"pool-secret"}, Workdir: "/srv/app",
		Entrypoint: []string{"sh", "-c", `echo "entry $GREETING $(pwd)"; read line; echo "got $line"; exit 7`},
	})
	if sb.ID != first {
		t.Fatalf("create fitting the pool got %s, want the pool's sandbox %s", sb.ID, first)
	}
	r := execIn(t, sb, nil, "sh", "-c", `echo "$GREETING $TOKEN $(pwd)"`)
	if want := "hello s3cret /srv/app\n"; r.stdout != want || r.status.Code != 0 {
		t.Errorf("exec in the pool sandbox: got %q (%+v), want %q", r.stdout, r.status, want)
	}
	next := waitPool(t, d, first)

	// A memory snapshot keeps what the create set.
	sn, err := sb.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := c.Restore(ctx, sn.ID, sandboxd.RestoreOptions{NoName: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Terminate(context.Background()) })
	if r := execIn(t, rs, nil, "sh", "-c", `echo "$GREETING $TOKEN $(pwd)"`); r.stdout != "hello s3cret /srv/app\n" {
		t.Errorf("exec in the restored copy: got %q, want the create's env and workdir", r.stdout)
	}
	rs.Terminate(ctx)

	// The entrypoint is the sandbox's: its stdin, output and exit code.
	w := sb.Stdin()
	if _, err := w.Write([]byte("line\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	code, err := sb.Wait(ctx)
	if err != nil || code != 7 {
		t.Errorf("wait: got %d, %v; want the entrypoint's exit code 7", code, err)
	}
	var out, errb bytes.Buffer
	if err := sb.Logs(ctx, false, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if want := "entry hello /srv/app\ngot line\n"; out.String() != want {
		t.Errorf("logs: got %q, want %q", out.String(), want)
	}

	// Other limits: a sandbox of its own.
	other := createOn(t, d, sandboxd.CreateOptions{Image: "busybox"})
	if other.ID == next {
		t.Errorf("a create with other limits took the pool's sandbox")
	}
	if got := waitPool(t, d); got != next {
		t.Errorf("pool sandbox changed from %s to %s", next, got)
	}

	// A crash leaves the pool sandbox to the next start's sweep; the
	// clients' sandboxes are adopted; the pool boots anew.
	d.kill()
	d.restart(t)
	if r := execIn(t, d.client().Sandbox(other.ID), nil, "echo", "adopted"); r.stdout != "adopted\n" {
		t.Errorf("after the restart: got %q", r.stdout)
	}
	if got := waitPool(t, d, next); strings.TrimSpace(got) == "" {
		t.Fatal("no pool sandbox after the restart")
	}
	out2, _ := exec.Command("runsc", "--root", filepath.Join(d.dir, "runsc"), "list", "-quiet").Output()
	if strings.Contains(string(out2), next) {
		t.Errorf("the old pool sandbox %s survived the restart: %s", next, out2)
	}
}

// A create with an image mount that fits the warm pool takes the pool's
// sandbox: the image is mounted into it (as a live mount, no copy) before
// its entrypoint starts, writes under it stay private, a memory snapshot
// restores with it, and it unmounts like any live mount.
func TestWarmPoolWithMount(t *testing.T) {
	o := uniqueOpts()
	o.args = []string{"--warm-pool", "size=1,image=busybox,memory=256"}
	d := ownDaemon(t, o)
	ctx := ctxT(t)
	c := d.client()
	base := createOn(t, d, sandboxd.CreateOptions{})
	runScript(t, base, `mkdir -p /proj/src; echo one > /proj/src/a; ln -s src/a /proj/link`)
	img, err := base.SnapshotDirectory(ctx, "/proj", sandboxd.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base.Terminate(ctx)
	first := waitPool(t, d)

	mount := []sandboxd.Mount{{Image: img.ID, Path: "/work/proj"}}
	sb := createOn(t, d, sandboxd.CreateOptions{Image: "busybox", MemoryMiB: 256, Mounts: mount, Workdir: "/work/proj",
		Entrypoint: []string{"sh", "-c", "cat link > /saw; sleep 100000"}})
	if sb.ID != first {
		t.Fatalf("create with a mount got %s, want the pool's sandbox %s", sb.ID, first)
	}
	if got := sh(t, sb, "for i in 1 2 3 4 5 6 7 8 9 10; do [ -s /saw ] && break; sleep 1; done; cat /saw"); got != "one\n" {
		t.Errorf("the entrypoint saw %q in its workdir inside the mount, want the image's file", got)
	}
	if ms, err := sb.Mounts(ctx); err != nil || len(ms) != 1 || ms[0].Path != "/work/proj" || ms[0].ImageID != img.ID {
		t.Errorf("mounts: got %+v, %v; want the image at /work/proj", ms, err)
	}
	runScript(t, sb, `echo two >> /work/proj/src/a; echo n > /work/proj/new`)

	// The next pool sandbox mounts the image as it was.
	next := waitPool(t, d, first)
	sb2 := createOn(t, d, sandboxd.CreateOptions{Image: "busybox", MemoryMiB: 256, Mounts: mount})
	if sb2.ID != next {
		t.Errorf("second create with a mount got %s, want the pool's sandbox %s", sb2.ID, next)
	}
	if got := sh(t, sb2, "cat /work/proj/src/a; ls /work/proj"); got != "one\nlink\nsrc\n" {
		t.Errorf("second sandbox: got %q, want the image untouched by the first one's writes", got)
	}

	// A memory snapshot carries the mount and the private changes.
	sn, err := sb.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.DeleteSnapshot(context.Background(), sn.ID)
	rs := restoreOn(t, c, sn.ID, sandboxd.RestoreOptions{NoName: true})
	if got := sh(t, rs, "cat /work/proj/src/a /work/proj/new /saw"); got != "one\ntwo\nn\none\n" {
		t.Errorf("restored copy: got %q, want the mount with the private changes", got)
	}
	rs.Terminate(ctx)

	if err := sb2.UnmountImage(ctx, "/work/proj"); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, sb2, "ls -A /work/proj 2>&1; echo end"); got != "end\n" {
		t.Errorf("after unmount: got %q, want the path as it was before (made, empty)", got)
	}
	sb.Terminate(ctx)
	sb2.Terminate(ctx)
}
