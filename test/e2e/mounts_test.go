package e2e

import (
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// The warm-pool story: a base sandbox prepares a project; its directory is
// snapshotted and mounted, without copying, into fresh sandboxes of another
// image, each of which changes it privately.
func TestDirectorySnapshotMountedIntoFreshSandbox(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	base := create(t, sandboxd.CreateOptions{})
	runScript(t, base, `
mkdir -p /srv/proj/src /srv/proj/build
echo 'package main' > /srv/proj/src/main.go
head -c 200000 /dev/urandom > /srv/proj/build/blob
chmod 751 /srv/proj/build
ln -s src/main.go /srv/proj/entry
ln /srv/proj/src/main.go /srv/proj/hard
echo outside > /srv/other
`)
	want := execIn(t, base, nil, "sh", "-c", treeScript("/srv/proj")).stdout
	img, err := base.SnapshotDirectory(ctx, "/srv/proj", sandboxd.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 1 || img.IdleTTL != 30*24*time.Hour || img.ExpiresAt.IsZero() {
		t.Errorf("got %+v, want one layer and 30 days after last use", img)
	}

	start := time.Now()
	fresh := create(t, sandboxd.CreateOptions{Image: "debian-slim", Mounts: []sandboxd.Mount{{Image: img.ID, Path: "/work/proj"}}})
	t.Logf("create with a mount took %v", time.Since(start))
	got := execIn(t, fresh, nil, "sh", "-c", treeScript("/work/proj")).stdout
	if got != want {
		t.Errorf("mounted tree differs (- snapshot source, + mount):\n%s", diffLines(want, got))
	}
	if r := execIn(t, fresh, nil, "sh", "-c", "cat /etc/debian_version; ls /work/proj/other /srv 2>&1"); !strings.HasPrefix(r.stdout, "12") || strings.Contains(r.stdout, "outside") {
		t.Errorf("fresh sandbox: got %q, want debian's root and only the snapshotted directory", r.stdout)
	}

	// Writes stay private to each sandbox.
	runScript(t, fresh, `echo changed >> /work/proj/src/main.go; rm /work/proj/build/blob`)
	other := create(t, sandboxd.CreateOptions{Mounts: []sandboxd.Mount{{Image: img.ID, Path: "/srv/proj"}}})
	if r := execIn(t, other, nil, "sh", "-c", "cat /srv/proj/src/main.go; ls /srv/proj/build"); r.stdout != "package main\nblob\n" {
		t.Errorf("second mount after the first sandbox's writes: got %q, want the snapshot untouched", r.stdout)
	}
	if r := execIn(t, fresh, nil, "cat", "/work/proj/src/main.go"); r.stdout != "package main\nchanged\n" {
		t.Errorf("writer's own view: got %q", r.stdout)
	}

	after, err := c.GetImage(ctx, img.ID)
	if err != nil || !after.LastUsed.After(img.LastUsed) {
		t.Errorf("mounting did not count as use: last use %v then %v (%v)", img.LastUsed, after.LastUsed, err)
	}
	err = c.DeleteImage(ctx, img.ID)
	wantClass(t, "delete a mounted image", err, sandboxd.ErrFailedPrecondition)
}

// A mount replaces what the path held, and a filesystem snapshot (several
// layers, with whiteouts) mounts as its merged tree.
func TestMountReplacesPathAndMergesLayers(t *testing.T) {
	ctx := ctxT(t)
	src := create(t, sandboxd.CreateOptions{})
	runScript(t, src, `rm /etc/hostname; echo new > /etc/new`)
	fs, err := src.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sb := create(t, sandboxd.CreateOptions{Mounts: []sandboxd.Mount{
		{Image: fs.ID, Path: "/etc/passwd/under-a-file"}, // a file on the way is replaced by a directory
		{Image: "busybox", Path: "/opt/bb"},
	}})
	r := execIn(t, sb, nil, "sh", "-c", "ls /etc/passwd/under-a-file/etc; ls /opt/bb/bin/busybox")
	if !strings.Contains(r.stdout, "new\n") || strings.Contains(r.stdout, "hostname") || !strings.Contains(r.stdout, "/opt/bb/bin/busybox") {
		t.Errorf("got %q, want the snapshot's merged /etc (new, no hostname) and busybox", r.stdout)
	}
}

func TestMountBadInput(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	for _, tc := range []struct {
		name   string
		mounts []sandboxd.Mount
		class  error
	}{
		{"relative path", []sandboxd.Mount{{Image: "busybox", Path: "work"}}, sandboxd.ErrInvalidArgument},
		{"root", []sandboxd.Mount{{Image: "busybox", Path: "/"}}, sandboxd.ErrInvalidArgument},
		{"root spelled oddly", []sandboxd.Mount{{Image: "busybox", Path: "/x/.."}}, sandboxd.ErrInvalidArgument},
		{"engine path", []sandboxd.Mount{{Image: "busybox", Path: "/proc/x"}}, sandboxd.ErrInvalidArgument},
		{"nested", []sandboxd.Mount{{Image: "busybox", Path: "/a"}, {Image: "busybox", Path: "/a/b"}}, sandboxd.ErrInvalidArgument},
		{"unknown image", []sandboxd.Mount{{Image: "im-" + strings.Repeat("2", 64), Path: "/a"}}, sandboxd.ErrNotFound},
		{"no image", []sandboxd.Mount{{Path: "/a"}}, sandboxd.ErrInvalidArgument},
	} {
		sb, err := c.Create(ctx, sandboxd.CreateOptions{Image: "busybox", Mounts: tc.mounts})
		if err == nil {
			sb.Terminate(ctx)
		}
		wantClass(t, tc.name, err, tc.class)
	}
	// The CLI spelling.
	img := strings.TrimSpace(func() string {
		id := sbxCreate(t, "--image", "busybox")
		sbx(t, "", "exec", id, "--", "mkdir", "-p", "/d/e")
		out, errs, code := sbx(t, "", "snapshot-dir", "--ttl", "never", id, "/d")
		if code != 0 {
			t.Fatalf("snapshot-dir: %s", errs)
		}
		return out
	}())
	id := sbxCreate(t, "--image", "busybox", "--mount", img+":/mnt/d")
	if out, errs, code := sbx(t, "", "exec", id, "--", "ls", "/mnt/d"); out != "e\n" || code != 0 {
		t.Errorf("sbx create --mount: got %q / %q", out, errs)
	}
	if _, errs, code := sbx(t, "", "create", "--image", "busybox", "--mount", img+":rel"); code == 0 || !strings.Contains(errs, "IMAGE:/PATH") {
		t.Errorf("--mount with a relative path: got code %d %q", code, errs)
	}
	if out, _, _ := sbx(t, "", "images", "inspect", img); strings.Contains(out, "expires_at") {
		t.Errorf("--ttl never: got %s, want no expiry", out)
	}
}

// treeScript lists the tree at dir the same way under busybox and coreutils:
// type, mode, owner, link count, symlink targets, checksums.
func treeScript(dir string) string {
	return "cd " + dir + ` && find . -exec stat -c '%n|%F|%a|%u|%g|%h' {} + | sort
find . -type l | sort | while read -r l; do echo "$l -> $(readlink "$l")"; done
find . -type f -exec sha256sum {} + | sort`
}
