package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// Images mounted into RUNNING sandboxes (issue 5): staged on the host under
// the sandbox's shared staging dir, mounted copy-on-write by the agent.

// dirSnapshot makes a directory snapshot of a small project tree and returns
// the image and the tree as treeScript lists it.
func dirSnapshot(t *testing.T) (sandboxd.Image, string) {
	t.Helper()
	base := create(t, sandboxd.CreateOptions{})
	runScript(t, base, `
mkdir -p /srv/proj/src /srv/proj/build
echo 'package main' > /srv/proj/src/main.go
head -c 200000 /dev/urandom > /srv/proj/build/blob
chmod 751 /srv/proj/build
ln -s src/main.go /srv/proj/entry
`)
	tree := execIn(t, base, nil, "sh", "-c", treeScript("/srv/proj")).stdout
	img, err := base.SnapshotDirectory(ctxT(t), "/srv/proj", sandboxd.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.client().DeleteImage(context.Background(), img.ID) })
	base.Terminate(ctxT(t))
	return img, tree
}

func mountIn(t *testing.T, sb *sandboxd.Sandbox, image, path string) sandboxd.LiveMount {
	t.Helper()
	start := time.Now()
	lm, err := sb.MountImage(ctxT(t), image, path)
	if err != nil {
		t.Fatalf("mount %s at %s in %s: %v", image, path, sb.ID, err)
	}
	t.Logf("mount into running %s took %v", sb.ID, time.Since(start))
	return lm
}

// The warm-pool story: a project's directory snapshot mounted into a fresh
// running sandbox, written to privately, unmounted; the stored image never
// changes and cannot be deleted while mounted.
func TestLiveMountDirectorySnapshot(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	img, want := dirSnapshot(t)

	fresh := create(t, sandboxd.CreateOptions{Image: "debian-slim"})
	runScript(t, fresh, `mkdir -p /work/proj; echo before > /work/proj/old`)
	lm := mountIn(t, fresh, img.ID, "/work/proj")
	if lm.Path != "/work/proj" || lm.ImageID != img.ID || lm.MountedAt.IsZero() {
		t.Errorf("got %+v, want /work/proj of %s", lm, img.ID)
	}
	if got := execIn(t, fresh, nil, "sh", "-c", treeScript("/work/proj")).stdout; got != want {
		t.Errorf("mounted tree differs (- snapshot source, + live mount):\n%s", diffLines(want, got))
	}
	if r := execIn(t, fresh, nil, "ls", "/work/proj/old"); r.status.Code == 0 {
		t.Errorf("the path's old content shows through the mount: %q", r.stdout)
	}
	// Private writes; a second sandbox mounting the image sees the original.
	runScript(t, fresh, `echo changed >> /work/proj/src/main.go; rm /work/proj/build/blob; echo n > /work/proj/new`)
	other := create(t, sandboxd.CreateOptions{})
	mountIn(t, other, img.ID, "/srv/proj")
	if r := execIn(t, other, nil, "sh", "-c", "cat /srv/proj/src/main.go; ls /srv/proj/build; ls /srv/proj/new 2>&1"); !strings.HasPrefix(r.stdout, "package main\nblob\n") || !strings.Contains(r.stdout, "No such file") {
		t.Errorf("second mount after the first sandbox's writes: got %q, want the image untouched", r.stdout)
	}
	if r := execIn(t, fresh, nil, "cat", "/work/proj/src/main.go"); r.stdout != "package main\nchanged\n" {
		t.Errorf("writer's own view: got %q", r.stdout)
	}
	// In use while mounted; mounting counted as use.
	after, err := c.GetImage(ctx, img.ID)
	if err != nil || !after.LastUsed.After(img.LastUsed) {
		t.Errorf("mounting did not count as use: last use %v then %v (%v)", img.LastUsed, after.LastUsed, err)
	}
	if ms, err := fresh.Mounts(ctx); err != nil || len(ms) != 1 || ms[0].Path != "/work/proj" {
		t.Errorf("mounts: got %+v, %v", ms, err)
	}
	if err := other.UnmountImage(ctx, "/srv/proj"); err != nil {
		t.Fatal(err)
	}
	err = c.DeleteImage(ctx, img.ID)
	wantClass(t, "delete an image mounted live", err, sandboxd.ErrFailedPrecondition)
	if err == nil || !strings.Contains(err.Error(), fresh.ID) || strings.Contains(err.Error(), other.ID) {
		t.Errorf("delete refused with %v, want it to name %s only", err, fresh.ID)
	}

	// Unmount brings the old content back.
	if err := fresh.UnmountImage(ctx, "/work/proj/"); err != nil {
		t.Fatal(err)
	}
	if r := execIn(t, fresh, nil, "sh", "-c", "ls /work/proj; cat /work/proj/old"); r.stdout != "old\nbefore\n" {
		t.Errorf("after unmount: got %q, want the old content back", r.stdout)
	}
	wantClass(t, "unmount twice", fresh.UnmountImage(ctx, "/work/proj"), sandboxd.ErrNotFound)
	if err := c.DeleteImage(ctx, img.ID); err != nil {
		t.Errorf("delete once unmounted everywhere: %v", err)
	}
}

// A path that did not exist is made; a filesystem snapshot (several layers)
// mounts as its merged tree; mount and unmount again at the same place.
func TestLiveMountNewPathAndLayers(t *testing.T) {
	ctx := ctxT(t)
	src := create(t, sandboxd.CreateOptions{})
	runScript(t, src, `rm /etc/hostname; echo new > /etc/new`)
	fs, err := src.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.client().DeleteImage(context.Background(), fs.ID) })
	sb := create(t, sandboxd.CreateOptions{Image: "debian-slim"})
	mountIn(t, sb, fs.ID, "/opt/not/there")
	mountIn(t, sb, "busybox", "/opt/bb")
	r := execIn(t, sb, nil, "sh", "-c", "ls /opt/not/there/etc; ls /opt/bb/bin/busybox")
	if !strings.Contains(r.stdout, "new\n") || strings.Contains(r.stdout, "hostname") || !strings.Contains(r.stdout, "/opt/bb/bin/busybox") {
		t.Errorf("got %q, want the snapshot's merged /etc (new, no hostname) and busybox", r.stdout)
	}
	for i := 0; i < 2; i++ {
		if err := sb.UnmountImage(ctx, "/opt/bb"); err != nil {
			t.Fatal(err)
		}
		if r := execIn(t, sb, nil, "ls", "-A", "/opt/bb"); r.stdout != "" || r.status.Code != 0 {
			t.Errorf("after unmount: got %q (exit %d), want the empty directory the mount made", r.stdout, r.status.Code)
		}
		mountIn(t, sb, "busybox", "/opt/bb")
	}
}

func TestLiveMountBadInput(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	sb := create(t, sandboxd.CreateOptions{})
	mountIn(t, sb, "busybox", "/a/b")
	for _, tc := range []struct {
		name, sandbox, image, path string
		class                      error
	}{
		{"relative path", sb.ID, "busybox", "work", sandboxd.ErrInvalidArgument},
		{"root", sb.ID, "busybox", "/", sandboxd.ErrInvalidArgument},
		{"root spelled oddly", sb.ID, "busybox", "/x/..", sandboxd.ErrInvalidArgument},
		{"engine path", sb.ID, "busybox", "/.sandboxd/stage", sandboxd.ErrInvalidArgument},
		{"proc", sb.ID, "busybox", "/proc/x", sandboxd.ErrInvalidArgument},
		{"no image", sb.ID, "", "/c", sandboxd.ErrInvalidArgument},
		{"unknown image", sb.ID, "im-" + strings.Repeat("2", 64), "/c", sandboxd.ErrNotFound},
		{"unknown sandbox", "sb-0000000000000000", "busybox", "/c", sandboxd.ErrNotFound},
		{"bad sandbox id", "nope", "busybox", "/c", sandboxd.ErrInvalidArgument},
		{"same path", sb.ID, "busybox", "/a/b", sandboxd.ErrAlreadyExists},
		{"within a live mount", sb.ID, "busybox", "/a/b/c", sandboxd.ErrFailedPrecondition},
		{"above a live mount", sb.ID, "busybox", "/a", sandboxd.ErrFailedPrecondition},
		{"a file in the way", sb.ID, "busybox", "/etc/passwd/x", sandboxd.ErrFailedPrecondition},
	} {
		_, err := c.Sandbox(tc.sandbox).MountImage(ctx, tc.image, tc.path)
		wantClass(t, tc.name, err, tc.class)
	}
	wantClass(t, "unmount what is not mounted", sb.UnmountImage(ctx, "/etc"), sandboxd.ErrNotFound)
	wantClass(t, "unmount a relative path", sb.UnmountImage(ctx, "etc"), sandboxd.ErrInvalidArgument)
	if r := execIn(t, sb, nil, "cat", "/etc/passwd"); r.status.Code != 0 {
		t.Errorf("the refused mount harmed /etc/passwd: %q", r.stderr)
	}
	// The processes the agent runs, root as they are, may not mount.
	if r := execIn(t, sb, nil, "sh", "-c", "grep CapEff /proc/self/status; mount -t tmpfs x /mnt"); r.status.Code == 0 {
		t.Errorf("an exec could mount (%q): CAP_SYS_ADMIN leaked from the agent", r.stdout)
	}
	if err := sb.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := sb.MountImage(ctx, "busybox", "/c")
	wantClass(t, "mount into a finished sandbox", err, sandboxd.ErrFailedPrecondition)

	// The CLI spelling: one line on error, exit 1.
	id := sbxCreate(t, "--image", "busybox")
	if _, errs, code := sbx(t, "", "mount", id, "/mnt/bb", "busybox"); code != 0 {
		t.Fatalf("sbx mount: exit %d: %s", code, errs)
	}
	if out, _, _ := sbx(t, "", "exec", id, "--", "ls", "/mnt/bb/bin/busybox"); out != "/mnt/bb/bin/busybox\n" {
		t.Errorf("after sbx mount: got %q", out)
	}
	if out, _, code := sbx(t, "", "mounts", id); code != 0 || !strings.Contains(out, "/mnt/bb") {
		t.Errorf("sbx mounts: got %q (exit %d)", out, code)
	}
	for _, args := range [][]string{{"mount", id, "rel", "busybox"}, {"mount", id, "/m", "nosuchimage"}, {"unmount", id, "/nothing"}, {"mount", id, "/m"}} {
		if _, errs, code := sbx(t, "", args...); code != 1 || strings.Count(errs, "\n") != 1 {
			t.Errorf("sbx %v: got exit %d %q, want 1 and one line", args, code, errs)
		}
	}
	if _, errs, code := sbx(t, "", "unmount", id, "/mnt/bb"); code != 0 {
		t.Errorf("sbx unmount: exit %d: %s", code, errs)
	}
}

// A memory snapshot of a sandbox holding a live mount restores with the
// mounted files and its private changes; the restored copy can unmount.
func TestLiveMountSnapshotRestore(t *testing.T) {
	ctx := ctxT(t)
	img, _ := dirSnapshot(t)
	sb := create(t, sandboxd.CreateOptions{})
	runScript(t, sb, `mkdir -p /work/proj; echo before > /work/proj/old`)
	mountIn(t, sb, img.ID, "/work/proj")
	runScript(t, sb, `echo private >> /work/proj/src/main.go; echo n > /work/proj/new`)
	// A process holding a file of the mount open across the snapshot.
	runScript(t, sb, `(exec 3</work/proj/src/main.go; sleep 600) >/dev/null 2>&1 &`)
	sn := snapshotOf(t, sb, time.Hour)
	rs := restore(t, sn.ID, sandboxd.RestoreOptions{NoName: true})
	for _, s := range []*sandboxd.Sandbox{rs, sb} {
		if got := sh(t, s, "cat /work/proj/src/main.go /work/proj/new; ls /work/proj"); got != "package main\nprivate\nn\nbuild\nentry\nnew\nsrc\n" {
			t.Errorf("%s: got %q, want the image's files with the private changes", s.ID, got)
		}
	}
	if ms, err := rs.Mounts(ctx); err != nil || len(ms) != 1 || ms[0].ImageID != img.ID {
		t.Errorf("restored sandbox's mounts: got %+v, %v", ms, err)
	}
	// The snapshot needs the image: it stays undeletable once both
	// sandboxes are gone.
	if err := rs.UnmountImage(ctx, "/work/proj"); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, rs, "ls /work/proj; cat /work/proj/old"); got != "old\nbefore\n" {
		t.Errorf("restored sandbox after unmount: got %q, want the old content", got)
	}
	if got := sh(t, sb, "cat /work/proj/new"); got != "n\n" {
		t.Errorf("source after the copy unmounted: got %q", got)
	}
	sb.Terminate(ctx)
	rs.Terminate(ctx)
	err := shared.client().DeleteImage(ctx, img.ID)
	wantClass(t, "delete an image a snapshot's live mount needs", err, sandboxd.ErrFailedPrecondition)
	if err == nil || !strings.Contains(err.Error(), sn.ID) {
		t.Errorf("got %v, want it to name %s", err, sn.ID)
	}
}

// A daemon restart keeps live mounts working; the sandbox's end cleans them
// up (the leak check of shutdown looks for leftover mounts).
func TestLiveMountDaemonRestart(t *testing.T) {
	d := ownDaemon(t, uniqueOpts())
	ctx := ctxT(t)
	sb := createOn(t, d, sandboxd.CreateOptions{})
	if _, err := sb.MountImage(ctx, "busybox", "/opt/bb"); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.MountImage(ctx, "busybox", "/opt/gone"); err != nil {
		t.Fatal(err)
	}
	runScript(t, sb, `echo kept > /opt/bb/kept`)
	d.kill()
	d.restart(t)
	sb = d.client().Sandbox(sb.ID)
	if got := sh(t, sb, "cat /opt/bb/kept; ls /opt/gone/bin/busybox"); got != "kept\n/opt/gone/bin/busybox\n" {
		t.Errorf("after the restart: got %q", got)
	}
	if err := sb.UnmountImage(ctx, "/opt/gone"); err != nil {
		t.Fatalf("unmount after the restart: %v", err)
	}
	if _, err := sb.MountImage(ctx, "busybox", "/opt/again"); err != nil {
		t.Fatalf("mount after the restart: %v", err)
	}
	if ms, err := sb.Mounts(ctx); err != nil || len(ms) != 2 {
		t.Errorf("mounts after the restart: got %+v, %v", ms, err)
	}
	if err := sb.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/proc/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, filepath.Join(d.dir, "sandboxes")) {
			t.Errorf("mount left after the sandbox ended: %s", l)
		}
	}
}
