package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// sumsScript prints the SHA-256 of every file under the directory it is
// given, sorted, named relative to it.
const sumsScript = `cd "$1" && find . -type f -exec sha256sum {} + | sort`

func sums(t *testing.T, sb *sandboxd.Sandbox, dir string) string {
	t.Helper()
	r := execIn(t, sb, nil, "sh", "-c", sumsScript, "sh", dir)
	if r.status.Code != 0 || r.stdout == "" {
		t.Fatalf("checksums of %s: exit %d, %q %s", dir, r.status.Code, r.stdout, r.stderr)
	}
	return r.stdout
}

// Filesystem and directory snapshots of one sandbox, taken all at once,
// all succeed; those of the same content are one image (content
// addressed); and each holds what the sandbox held.
func TestSnapshotsConcurrent(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	runScript(t, sb, `mkdir -p /data/tree/d
head -c 3000000 /dev/urandom > /data/big
for i in $(seq 40); do head -c 5000 /dev/urandom > /data/tree/d/f$i; done`)
	wantAll, wantTree := sums(t, sb, "/data"), sums(t, sb, "/data/tree")
	ctx := ctxT(t)
	c := shared.client()

	type made struct {
		fs  bool
		im  sandboxd.Image
		err error
	}
	const n = 3
	out := make(chan made, 2*n)
	for range n {
		go func() {
			im, err := sb.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
			out <- made{true, im, err}
		}()
		go func() {
			im, err := sb.SnapshotDirectory(ctx, "/data/tree", sandboxd.SnapshotOptions{})
			out <- made{false, im, err}
		}()
	}
	ids := map[bool]map[string]bool{true: {}, false: {}}
	var errs []error
	for range 2 * n {
		m := <-out
		if m.err != nil {
			errs = append(errs, m.err)
			continue
		}
		ids[m.fs][m.im.ID] = true
	}
	t.Cleanup(func() {
		for _, set := range ids {
			for id := range set {
				c.DeleteImage(context.Background(), id)
			}
		}
	})
	if len(errs) > 0 {
		t.Fatalf("snapshots taken at once failed: %v", errors.Join(errs...))
	}
	if len(ids[true]) != 1 || len(ids[false]) != 1 {
		t.Fatalf("%d snapshots of each kind of one unchanged sandbox gave filesystem images %v and directory images %v, want one of each", n, ids[true], ids[false])
	}
	var fsImage, dirImage string
	for id := range ids[true] {
		fsImage = id
	}
	for id := range ids[false] {
		dirImage = id
	}
	sb2 := create(t, sandboxd.CreateOptions{Image: fsImage, Mounts: []sandboxd.Mount{{Image: dirImage, Path: "/mnt/tree"}}})
	if got := sums(t, sb2, "/data"); got != wantAll {
		t.Errorf("the filesystem snapshot holds other files under /data:\n%s", diffLines(wantAll, got))
	}
	if got := sums(t, sb2, "/mnt/tree"); got != wantTree {
		t.Errorf("the directory snapshot holds other files:\n%s", diffLines(wantTree, got))
	}
}

// A snapshot whose sandbox is terminated while its tar is being read ends,
// with the image or, when the sandbox went first, an error saying so
// (ErrFailedPrecondition), and leaves nothing in the store's tmp/.
func TestSnapshotWhileTerminated(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{MemoryMiB: 1024})
	runScript(t, sb, "head -c 209715200 /dev/urandom > /big")
	ctx := ctxT(t)
	type made struct {
		im  sandboxd.Image
		err error
	}
	done := make(chan made, 1)
	go func() {
		im, err := sb.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
		done <- made{im, err}
	}()
	time.Sleep(30 * time.Millisecond)
	if err := sb.Terminate(ctx); err != nil {
		t.Fatalf("terminate: %v", err)
	}
	select {
	case m := <-done:
		if m.err == nil {
			t.Logf("the snapshot ended first: %s", m.im.ID)
			shared.client().DeleteImage(context.Background(), m.im.ID)
		} else {
			t.Logf("the snapshot failed: %v", m.err)
			wantClass(t, "snapshot of a sandbox terminated meanwhile", m.err, sandboxd.ErrFailedPrecondition)
			if !strings.Contains(m.err.Error(), "stopped running during the snapshot") {
				t.Errorf("the error does not say the sandbox stopped: %v", m.err)
			}
		}
	case <-time.After(time.Minute):
		t.Fatal("the snapshot did not end within a minute of its sandbox")
	}
	// What the store made for it is gone (the removal of a discarded
	// image may finish just after the call).
	left := storeTmpFiles(t, shared.dir)
	if len(left) > 0 {
		t.Errorf("left in the store's tmp/: %v", left)
	}
}

// A daemon killed in the middle of a filesystem snapshot comes back with
// nothing half-made: no partial image listed, nothing left in tmp/, and the
// sandbox snapshots as before.
func TestSnapshotDaemonKilledMidway(t *testing.T) {
	d := ownDaemon(t, uniqueOpts())
	ctx := ctxT(t)
	c := d.client()
	sb, err := c.Create(ctx, sandboxd.CreateOptions{Image: "busybox", MemoryMiB: 1024})
	if err != nil {
		t.Fatal(err)
	}
	runScript(t, sb, "mkdir /data; head -c 209715200 /dev/urandom > /data/big; echo here > /data/marker")
	want := sums(t, sb, "/data")
	go sb.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{}) // cut off by the kill
	time.Sleep(60 * time.Millisecond)
	d.kill()
	d.restart(t)
	c = d.client()
	sb = c.Sandbox(sb.ID)

	if left := storeTmpFiles(t, d.dir); len(left) > 0 {
		t.Errorf("left in the store's tmp/ after the restart: %v", left)
	}
	// Any image the cut-off snapshot made is whole.
	ims, err := c.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range ims {
		if !strings.HasPrefix(im.Source, "snapshot-fs:") {
			continue
		}
		t.Logf("the cut-off snapshot made %s", im.ID)
		sb2, err := c.Create(ctx, sandboxd.CreateOptions{Image: im.ID})
		if err != nil {
			t.Fatalf("create from %s: %v", im.ID, err)
		}
		if got := sums(t, sb2, "/data"); got != want {
			t.Errorf("image %s from the cut-off snapshot differs:\n%s", im.ID, diffLines(want, got))
		}
		sb2.Terminate(ctx)
	}
	im, err := sb.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
	if err != nil {
		t.Fatalf("snapshot after the restart: %v\n%s", err, d.logTail())
	}
	sb3, err := c.Create(ctx, sandboxd.CreateOptions{Image: im.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got := sums(t, sb3, "/data"); got != want {
		t.Errorf("the snapshot after the restart differs:\n%s", diffLines(want, got))
	}
	sb3.Terminate(ctx)
	sb.Terminate(ctx)
	c.DeleteImage(ctx, im.ID)
}

// storeTmpFiles lists what a snapshot under way leaves in the image store's
// tmp/ under data dir dir (tar- and layer- files), waiting up to 5 seconds
// for it to be gone.
func storeTmpFiles(t *testing.T, dir string) []string {
	t.Helper()
	tmp := filepath.Join(dir, "tmp")
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		left = left[:0]
		ents, err := os.ReadDir(tmp)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "tar-") || strings.HasPrefix(e.Name(), "layer-") {
				left = append(left, e.Name())
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}
