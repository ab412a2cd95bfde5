package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// manifestScript prints one line per path of the root filesystem (the
// engine's own mounts left out): type, mode, owner, link count, symlink
// target; then the SHA-256 of every regular file. busybox has all it needs.
const manifestScript = `
prune='( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /.sandboxd ) -prune'
find / $prune -o -exec stat -c '%n|%F|%a|%u|%g|%h|%N' {} + | sort
find / $prune -o -type f -exec sha256sum {} + | sort
`

// manifest returns sb's root filesystem as manifestScript sees it.
func manifest(t *testing.T, sb *sandboxd.Sandbox) string {
	t.Helper()
	r := execIn(t, sb, nil, "sh", "-c", manifestScript)
	if r.status.Code != 0 {
		t.Fatalf("manifest: exit %d: %s", r.status.Code, r.stderr)
	}
	return r.stdout
}

func runScript(t *testing.T, sb *sandboxd.Sandbox, script string) {
	t.Helper()
	r := execIn(t, sb, nil, "sh", "-ec", script)
	if r.status.Code != 0 {
		t.Fatalf("script exited %d: %s%s", r.status.Code, r.stdout, r.stderr)
	}
}

// diffLines reports the lines only a has and only b has.
func diffLines(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// everyKindOfChange touches the busybox image in every way a layer must
// carry: added, changed, deleted and re-created files, symlinks, mode and
// owner changes, hard links, a FIFO, a directory replaced whole.
const everyKindOfChange = `
mkdir -p /work/sub /work/empty
echo added > /work/sub/new.txt
head -c 300000 /dev/urandom > /work/sub/rand.bin
chown 1000:1001 /work/sub/rand.bin
chmod 4750 /work/sub/new.txt
ln /work/sub/new.txt /work/hard
ln -s /etc/passwd /work/link
ln -s ../sub/missing /work/empty/dangling
mkfifo /work/fifo
echo changed >> /etc/passwd
rm /etc/hostname
rm /etc/hosts; echo recreated > /etc/hosts
chmod 600 /etc/group
rm /bin/ls; ln -s /bin/busybox /bin/list
rm -rf /var; mkdir /var; echo only > /var/only
`

func TestFilesystemSnapshotRestoresByteForByte(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	src := create(t, sandboxd.CreateOptions{})
	runScript(t, src, everyKindOfChange)
	want := manifest(t, src)
	for _, line := range []string{
		"/work/sub/new.txt|regular file|4750|0|0|2|", "/work/hard|regular file|4750|0|0|2|",
		"/work/sub/rand.bin|regular file|644|1000|1001|1|", "/work/fifo|fifo|", "'/work/link' -> '/etc/passwd'",
		"'/bin/list' -> '/bin/busybox'", "/etc/group|regular file|600|", "/var/only|", "  /etc/hosts\n",
	} {
		if !strings.Contains(want, line) {
			t.Fatalf("the source's manifest lacks %q: the test script did not do what it should\n%s", line, want)
		}
	}
	for _, gone := range []string{"/etc/hostname", "/bin/ls|"} {
		if strings.Contains(want, gone) {
			t.Fatalf("the source's manifest still has %q", gone)
		}
	}

	start := time.Now()
	img, err := src.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("filesystem snapshot took %v: %s, %d layers, %d bytes", time.Since(start), img.ID, len(img.Layers), img.Size)
	if !strings.HasPrefix(img.ID, "im-") || len(img.Layers) != 2 || !img.ExpiresAt.IsZero() {
		t.Errorf("got image %+v, want im-..., 2 layers, no expiry", img)
	}
	// The sandbox keeps running and keeps its files.
	if r := execIn(t, src, nil, "cat", "/work/sub/new.txt"); r.stdout != "added\n" {
		t.Errorf("source after snapshot: got %q", r.stdout)
	}

	dst := create(t, sandboxd.CreateOptions{Image: img.ID})
	if got := manifest(t, dst); got != want {
		t.Errorf("restored filesystem differs (- source, + restored):\n%s", diffLines(want, got))
	}
	info, _ := dst.Info(ctx)
	if info.ImageID != img.ID {
		t.Errorf("got image id %s, want %s", info.ImageID, img.ID)
	}

	t.Run("identical layers are stored once", func(t *testing.T) {
		again, err := src.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != img.ID {
			t.Errorf("unchanged sandbox snapshot twice: got %s then %s, want the same image", img.ID, again.ID)
		}
		listed, _ := c.ListImages(ctx)
		n := 0
		for _, im := range listed {
			if im.ID == img.ID {
				n++
			}
		}
		if n != 1 {
			t.Errorf("image listed %d times, want once", n)
		}
	})
}

func TestFilesystemSnapshotChain(t *testing.T) {
	ctx := ctxT(t)
	sb := create(t, sandboxd.CreateOptions{})
	steps := []string{
		`mkdir /proj; echo one > /proj/a; echo keep > /proj/k`,
		`echo two > /proj/b; rm /proj/a; chmod 700 /proj`,
		`echo three > /proj/a; rm -rf /proj/b; ln -s k /proj/l`,
	}
	var prev sandboxd.Image
	for i, step := range steps {
		runScript(t, sb, step)
		want := manifest(t, sb)
		// The second waits until durable, on top of a layer that may still
		// be flushed in the background.
		wait := i == 1
		img, err := sb.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{WaitDurable: wait})
		if err != nil {
			t.Fatalf("snapshot %d: %v", i+1, err)
		}
		if wait && !img.Durable {
			t.Errorf("snapshot %d with WaitDurable: got Durable false, want true", i+1)
		}
		if len(img.Layers) != i+2 {
			t.Errorf("snapshot %d: got %d layers, want %d", i+1, len(img.Layers), i+2)
		}
		if i > 0 && strings.Join(img.Layers[:i+1], ",") != strings.Join(prev.Layers, ",") {
			t.Errorf("snapshot %d: layers %v do not extend %v", i+1, img.Layers, prev.Layers)
		}
		next := create(t, sandboxd.CreateOptions{Image: img.ID})
		if got := manifest(t, next); got != want {
			t.Errorf("snapshot %d restores differently (- source, + restored):\n%s", i+1, diffLines(want, got))
		}
		sb, prev = next, img
	}
	if r := execIn(t, sb, nil, "sh", "-c", "cat /proj/a /proj/k; ls /proj"); r.stdout != "three\nkeep\na\nk\nl\n" {
		t.Errorf("end of chain: got %q", r.stdout)
	}
}

func TestDeleteImageInUseRefused(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	src := create(t, sandboxd.CreateOptions{})
	runScript(t, src, `echo x > /x`)
	ttl := time.Hour
	img, err := src.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{TTL: &ttl})
	if err != nil {
		t.Fatal(err)
	}
	if img.IdleTTL != time.Hour || img.ExpiresAt.IsZero() {
		t.Errorf("got ttl %v expiry %v, want 1h and a time", img.IdleTTL, img.ExpiresAt)
	}
	user := create(t, sandboxd.CreateOptions{Image: img.ID})
	err = c.DeleteImage(ctx, img.ID)
	wantClass(t, "delete an image in use", err, sandboxd.ErrFailedPrecondition)
	if err != nil && !strings.Contains(err.Error(), user.ID) {
		t.Errorf("got %q, want the message to name %s", err, user.ID)
	}
	err = c.DeleteImage(ctx, "busybox")
	wantClass(t, "delete a base image in use", err, sandboxd.ErrFailedPrecondition)
	if r := execIn(t, user, nil, "cat", "/x"); r.stdout != "x\n" {
		t.Errorf("user sandbox after refused delete: got %q", r.stdout)
	}
	// A memory snapshot of the user needs the image to be restored.
	snap, err := user.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := user.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	err = c.DeleteImage(ctx, img.ID)
	wantClass(t, "delete an image a memory snapshot needs", err, sandboxd.ErrFailedPrecondition)
	if err != nil && !strings.Contains(err.Error(), snap.ID) {
		t.Errorf("got %q, want the message to name %s", err, snap.ID)
	}
	if err := c.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteImage(ctx, img.ID); err != nil {
		t.Fatalf("delete once unused: %v", err)
	}
	_, err = c.GetImage(ctx, img.ID)
	wantClass(t, "get a deleted image", err, sandboxd.ErrNotFound)
	// The base image's layer is still there for everyone else.
	create(t, sandboxd.CreateOptions{})
}

func TestSnapshotBadInput(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	sb := create(t, sandboxd.CreateOptions{})
	for _, p := range []string{"relative/dir", "/", "", "/proc/1", "/.sandboxd/bin"} {
		_, err := sb.SnapshotDirectory(ctx, p, sandboxd.SnapshotOptions{})
		wantClass(t, "snapshot-dir "+p, err, sandboxd.ErrInvalidArgument)
	}
	_, err := sb.SnapshotDirectory(ctx, "/no/such/dir", sandboxd.SnapshotOptions{})
	wantClass(t, "snapshot-dir of a missing dir", err, sandboxd.ErrNotFound)
	_, err = c.Sandbox("sb-0000000000000000").SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
	wantClass(t, "snapshot of an unknown sandbox", err, sandboxd.ErrNotFound)
	neg := -time.Second
	_, err = sb.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{TTL: &neg})
	wantClass(t, "negative ttl", err, sandboxd.ErrInvalidArgument)
	_, err = c.Create(ctx, sandboxd.CreateOptions{Image: "im-" + strings.Repeat("0", 64)})
	wantClass(t, "create from an unknown image", err, sandboxd.ErrNotFound)
	_, err = c.GetImage(ctx, "no-such-image")
	wantClass(t, "get an unknown image", err, sandboxd.ErrNotFound)
	wantClass(t, "delete an unknown image", c.DeleteImage(ctx, "im-"+strings.Repeat("1", 64)), sandboxd.ErrNotFound)

	done := create(t, sandboxd.CreateOptions{})
	done.Terminate(ctx)
	_, err = done.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
	wantClass(t, "snapshot of a finished sandbox", err, sandboxd.ErrFailedPrecondition)
}

func TestImagesCLI(t *testing.T) {
	id := sbxCreate(t, "--image", "busybox")
	if _, errs, code := sbx(t, "", "exec", id, "--", "sh", "-c", "echo cli > /cli"); code != 0 {
		t.Fatalf("exec: %s", errs)
	}
	out, errs, code := sbx(t, "", "snapshot-fs", "--ttl", "2h", "--sync", id)
	img := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(img, "im-") || strings.Count(out, "\n") != 1 {
		t.Fatalf("snapshot-fs: got %q / %q code %d, want the image id alone", out, errs, code)
	}
	out, _, code = sbx(t, "", "images", "ls")
	if code != 0 || !strings.Contains(out, img) || !strings.Contains(out, "snapshot-fs:"+id) {
		t.Errorf("images ls: got %q", out)
	}
	out, _, _ = sbx(t, "", "images", "ls", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) < 3 {
		t.Errorf("images ls --json: got %v, %q", err, out)
	}
	out, _, code = sbx(t, "", "images", "inspect", img)
	var v struct {
		ID        string   `json:"id"`
		Layers    []string `json:"layers"`
		IdleTTL   string   `json:"idle_ttl"`
		ExpiresAt string   `json:"expires_at"`
		LastUsed  string   `json:"last_used"`
		Durable   bool     `json:"durable"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 || v.ID != img || len(v.Layers) != 2 ||
		v.IdleTTL != "2h0m0s" || v.ExpiresAt == "" || v.LastUsed == "" || !v.Durable {
		t.Errorf("images inspect: got %+v (%v) code %d from %q", v, err, code, out)
	}
	user := sbxCreate(t, "--image", img)
	if out, _, _ := sbx(t, "", "exec", user, "--", "cat", "/cli"); out != "cli\n" {
		t.Errorf("sandbox from the snapshot: got %q", out)
	}
	_, errs, code = sbx(t, "", "images", "rm", img)
	if code == 0 || !strings.Contains(errs, user) {
		t.Errorf("images rm in use: got code %d %q, want a failure naming %s", code, errs, user)
	}
	sbx(t, "", "terminate", user)
	if _, errs, code := sbx(t, "", "images", "rm", img); code != 0 {
		t.Errorf("images rm: got code %d %q", code, errs)
	}
	if _, _, code := sbx(t, "", "images", "inspect", img); code == 0 {
		t.Errorf("inspect of a removed image succeeded")
	}
}
