package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testutil"
	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// The file API inside sandboxes, through the SDK and sbx.

func TestFilesCalls(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	f := sb.Files()
	ctx := ctxT(t)
	bin := make([]byte, 70000)
	for i := range bin {
		bin[i] = byte(i) ^ byte(i>>8) // every byte value, NULs included
	}
	t.Run("write and read binary", func(t *testing.T) {
		if err := f.WriteFile(ctx, "/data/bin", bin, &sandboxd.WriteOptions{MakeParents: true, Mode: 0o640}); err != nil {
			t.Fatal(err)
		}
		got, err := f.ReadFile(ctx, "/data/bin")
		if err != nil || !bytes.Equal(got, bin) {
			t.Fatalf("read back %d bytes, %v; want the %d written", len(got), err, len(bin))
		}
		// The process side sees the same bytes.
		r := execIn(t, sb, nil, "sha256sum", "/data/bin")
		sum := sha256.Sum256(bin)
		if !strings.HasPrefix(r.stdout, hex.EncodeToString(sum[:])) {
			t.Errorf("sha256sum in the sandbox: got %q, want %x", r.stdout, sum)
		}
	})
	// Files up to 1 MiB move in one call (PutFile, GetFile), larger ones
	// stream: both sides of that line, and a file the stat size of which
	// is not its content.
	t.Run("one call and stream", func(t *testing.T) {
		for _, n := range []int{0, 1, 1 << 20, 1<<20 + 1, 3<<20 + 5} {
			data := bytes.Repeat(bin, n/len(bin)+1)[:n]
			p := "/data/sized"
			if err := f.WriteFile(ctx, p, data, &sandboxd.WriteOptions{Mode: 0o666}); err != nil {
				t.Fatalf("write %d bytes: %v", n, err)
			}
			got, err := f.ReadFile(ctx, p)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, %v; want the %d written", len(got), err, n)
			}
			if wn, err := f.WriteFrom(ctx, p, bytes.NewReader(data), &sandboxd.WriteOptions{Append: true}); err != nil || wn != int64(n) {
				t.Fatalf("append %d bytes from a reader: wrote %d, %v", n, wn, err)
			}
			if fi, err := f.Stat(ctx, p); err != nil || fi.Size != 2*int64(n) || fi.Mode != 0o666 {
				t.Errorf("after %d bytes and as many appended: got %+v, %v; want %d bytes, mode 0666 (no umask)", n, fi, err, 2*n)
			}
			f.Remove(ctx, p)
		}
		got, err := f.ReadFile(ctx, "/proc/self/status")
		if err != nil || !bytes.Contains(got, []byte("Pid:")) {
			t.Errorf("read /proc/self/status: got %q, %v", got, err)
		}
	})
	t.Run("range read", func(t *testing.T) {
		r, err := f.OpenRange(ctx, "/data/bin", 65530, 10)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, bin[65530:65540]) {
			t.Errorf("got %v, %v; want %v", got, err, bin[65530:65540])
		}
	})
	t.Run("stat", func(t *testing.T) {
		fi, err := f.Stat(ctx, "/data/bin")
		if err != nil {
			t.Fatal(err)
		}
		if fi.Type != sandboxd.TypeFile || fi.Size != int64(len(bin)) || fi.Mode != 0o640 || time.Since(fi.ModTime) > time.Minute {
			t.Errorf("got %+v, want a file of %d bytes, mode 0640, just written", fi, len(bin))
		}
		execIn(t, sb, nil, "ln", "-s", "/data/bin", "/data/link")
		fi, err = f.Stat(ctx, "/data/link")
		if err != nil || fi.Type != sandboxd.TypeSymlink || fi.SymlinkTarget != "/data/bin" {
			t.Errorf("symlink: got %+v, %v", fi, err)
		}
		if fi, err = f.StatFollow(ctx, "/data/link"); err != nil || fi.Type != sandboxd.TypeFile {
			t.Errorf("followed symlink: got %+v, %v", fi, err)
		}
	})
	t.Run("append and exclusive", func(t *testing.T) {
		f.WriteFile(ctx, "/data/log", []byte("a\n"), nil)
		if err := f.WriteFile(ctx, "/data/log", []byte("b\n"), &sandboxd.WriteOptions{Append: true}); err != nil {
			t.Fatal(err)
		}
		if got, _ := f.ReadFile(ctx, "/data/log"); string(got) != "a\nb\n" {
			t.Errorf("append: got %q", got)
		}
		err := f.WriteFile(ctx, "/data/log", []byte("c"), &sandboxd.WriteOptions{Exclusive: true})
		wantClass(t, "exclusive create of an existing file", err, sandboxd.ErrAlreadyExists)
		if err := f.WriteFile(ctx, "/data/new", []byte("c"), &sandboxd.WriteOptions{Exclusive: true}); err != nil {
			t.Errorf("exclusive create of a new file: %v", err)
		}
		if err := f.WriteFile(ctx, "/data/log", nil, nil); err != nil {
			t.Fatal(err)
		}
		if got, _ := f.ReadFile(ctx, "/data/log"); len(got) != 0 {
			t.Errorf("truncate: got %q, want empty", got)
		}
	})
	t.Run("mkdir list rename remove exists", func(t *testing.T) {
		if err := f.MkdirAll(ctx, "/tree/a/b"); err != nil {
			t.Fatal(err)
		}
		if err := f.MkdirAll(ctx, "/tree/a/b"); err != nil {
			t.Errorf("MkdirAll of an existing directory: %v", err)
		}
		if err := f.Mkdir(ctx, "/tree/c", 0o700); err != nil {
			t.Fatal(err)
		}
		f.WriteFile(ctx, "/tree/a/b/f", []byte("x"), nil)
		list, err := f.ReadDir(ctx, "/tree")
		if got := names(list); err != nil || got != "/tree/a /tree/c" {
			t.Errorf("ReadDir: got %q, %v", got, err)
		}
		list, err = f.List(ctx, "/tree", true)
		if got := names(list); err != nil || got != "/tree/a /tree/a/b /tree/a/b/f /tree/c" {
			t.Errorf("recursive List: got %q, %v", got, err)
		}
		if len(list) == 4 && (list[3].Mode != 0o700 || !list[3].IsDir()) {
			t.Errorf("mkdir mode: got %+v, want a directory of mode 0700", list[3])
		}
		if err := f.Rename(ctx, "/tree/a/b/f", "/tree/c/g"); err != nil {
			t.Fatal(err)
		}
		if ok, err := f.Exists(ctx, "/tree/c/g"); !ok || err != nil {
			t.Errorf("Exists after rename: %v, %v", ok, err)
		}
		if ok, err := f.Exists(ctx, "/tree/a/b/f"); ok || err != nil {
			t.Errorf("Exists of the old name: %v, %v", ok, err)
		}
		if err := f.Remove(ctx, "/tree/a/b"); err != nil {
			t.Errorf("remove an empty directory: %v", err)
		}
		if err := f.RemoveAll(ctx, "/tree"); err != nil {
			t.Fatal(err)
		}
		if err := f.RemoveAll(ctx, "/tree"); err != nil {
			t.Errorf("RemoveAll of a missing path: %v", err)
		}
		if r := execIn(t, sb, nil, "ls", "/tree"); r.status.Code == 0 {
			t.Errorf("/tree still there: %q", r.stdout)
		}
	})
}

func names(l []sandboxd.FileInfo) string {
	var s []string
	for _, fi := range l {
		s = append(s, fi.Path)
	}
	return strings.Join(s, " ")
}

func TestFilesErrors(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	f := sb.Files()
	ctx := ctxT(t)
	execIn(t, sb, nil, "sh", "-c", "mkdir -p /e/full/sub && echo x > /e/file")
	tests := []struct {
		name  string
		err   error
		kinds []error
	}{
		{"read missing", errOf(f.ReadFile(ctx, "/e/nope")), []error{sandboxd.ErrNotFound, fs.ErrNotExist}},
		{"stat missing", errOf(f.Stat(ctx, "/e/nope")), []error{sandboxd.ErrNotFound}},
		{"read a directory", errOf(f.ReadFile(ctx, "/e/full")), []error{sandboxd.ErrIsDirectory, sandboxd.ErrFailedPrecondition}},
		{"write a directory", f.WriteFile(ctx, "/e/full", []byte("x"), nil), []error{sandboxd.ErrIsDirectory}},
		{"list a file", errOf(f.ReadDir(ctx, "/e/file")), []error{sandboxd.ErrNotDirectory}},
		{"write under a file", f.WriteFile(ctx, "/e/file/x", nil, nil), []error{sandboxd.ErrNotDirectory}},
		{"remove a full directory", f.Remove(ctx, "/e/full"), []error{sandboxd.ErrDirectoryNotEmpty}},
		{"mkdir existing", f.Mkdir(ctx, "/e/full", 0), []error{sandboxd.ErrAlreadyExists, fs.ErrExist}},
		{"mkdir without parent", f.Mkdir(ctx, "/e/no/such", 0), []error{sandboxd.ErrNotFound}},
		{"rename missing", f.Rename(ctx, "/e/nope", "/e/x"), []error{sandboxd.ErrNotFound}},
		{"relative path", errOf(f.ReadFile(ctx, "../../etc/passwd")), []error{sandboxd.ErrInvalidPath, sandboxd.ErrInvalidArgument}},
		{"empty path", errOf(f.Stat(ctx, "")), []error{sandboxd.ErrInvalidArgument}},
		{"too large", f.WriteFile(ctx, "/e/big", make([]byte, 4096), &sandboxd.WriteOptions{SizeLimit: 1000}),
			[]error{sandboxd.ErrFileTooLarge, sandboxd.ErrResourceExhausted}},
		// Root in the sandbox: permission comes from what even root may not do.
		{"permission", f.WriteFile(ctx, "/proc/x", []byte("x"), nil), []error{sandboxd.ErrPermissionDenied, fs.ErrPermission}},
		{"read-only", f.Mkdir(ctx, "/sys/x", 0), []error{sandboxd.ErrPermissionDenied}},
		{"remove /", f.RemoveAll(ctx, "/"), []error{sandboxd.ErrInvalidArgument}},
		{"missing sandbox", errOf(shared.client().Sandbox("sb-00000000000000ff").Files().ReadFile(ctx, "/e/file")), []error{sandboxd.ErrNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range tt.kinds {
				if !errors.Is(tt.err, k) {
					t.Errorf("got %v, want it to match %q", tt.err, k)
				}
			}
		})
	}
}

func errOf[T any](_ T, err error) error { return err }

// detRand is a deterministic stream of pseudo-random bytes.
type detRand struct{ r *rand.ChaCha8 }

func (d detRand) Read(p []byte) (int, error) { return d.r.Read(p) }

func TestFilesLarge(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	f := sb.Files()
	ctx := ctxT(t)
	const size = 150 << 20
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(detRand{rand.NewChaCha8([32]byte{1})}, size), h)
	start := time.Now()
	n, err := f.WriteFrom(ctx, "/tmp/large", src, nil)
	if err != nil || n != size {
		t.Fatalf("write: %d bytes, %v", n, err)
	}
	t.Logf("wrote %d MiB in %v", size>>20, time.Since(start))
	want := hex.EncodeToString(h.Sum(nil))
	if r := execIn(t, sb, nil, "sha256sum", "/tmp/large"); !strings.HasPrefix(r.stdout, want) {
		t.Errorf("sha256sum in the sandbox: got %q, want %s", r.stdout, want)
	}
	start = time.Now()
	r, err := f.Open(ctx, "/tmp/large")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h2 := sha256.New()
	if n, err := io.Copy(h2, r); err != nil || n != size {
		t.Fatalf("read: %d bytes, %v", n, err)
	}
	t.Logf("read %d MiB in %v", size>>20, time.Since(start))
	if got := hex.EncodeToString(h2.Sum(nil)); got != want {
		t.Errorf("read back sha256 %s, want %s", got, want)
	}
}

func TestFilesWatch(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	f := sb.Files()
	ctx := ctxT(t)
	execIn(t, sb, nil, "mkdir", "/w")
	w, err := f.Watch(ctx, "/w", &sandboxd.WatchOptions{Recursive: true, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	execIn(t, sb, nil, "sh", "-c", "mkdir /w/d && sleep 0.2 && echo hi > /w/d/f && mv /w/d/f /w/g && rm /w/g")
	want := []sandboxd.WatchEvent{
		{Type: sandboxd.EventCreate, Path: "/w/d", IsDir: true},
		{Type: sandboxd.EventCreate, Path: "/w/d/f"},
		{Type: sandboxd.EventModify, Path: "/w/d/f"},
		{Type: sandboxd.EventRename, Path: "/w/d/f"},
		{Type: sandboxd.EventCreate, Path: "/w/g"},
		{Type: sandboxd.EventRemove, Path: "/w/g"},
	}
	for i, we := range want {
		ev, err := w.Next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev != we {
			t.Errorf("event %d: got %+v, want %+v", i, ev, we)
		}
	}
	t.Run("timeout ends the stream", func(t *testing.T) {
		w, err := f.Watch(ctx, "/w", &sandboxd.WatchOptions{Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Next(); err != io.EOF {
			t.Errorf("got %v, want io.EOF", err)
		}
	})
	t.Run("file", func(t *testing.T) {
		execIn(t, sb, nil, "touch", "/w/one")
		w, err := f.Watch(ctx, "/w/one", &sandboxd.WatchOptions{Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		execIn(t, sb, nil, "sh", "-c", "echo x >> /w/one")
		if ev, err := w.Next(); err != nil || ev.Type != sandboxd.EventModify || ev.Path != "/w/one" {
			t.Errorf("got %+v, %v; want modify /w/one", ev, err)
		}
	})
	t.Run("missing path", func(t *testing.T) {
		_, err := f.Watch(ctx, "/w/nope", nil)
		wantClass(t, "watch a missing path", err, sandboxd.ErrNotFound)
	})
}

// TestFilesPathEscape shows that no path leads out of the sandbox's root:
// a marker file on the host is unreadable through "..", through symlinks
// to "/" and "/..", and through absolute host paths.
func TestFilesPathEscape(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	f := sb.Files()
	ctx := ctxT(t)
	hostDir := t.TempDir()
	marker := filepath.Join(hostDir, "host-marker")
	if err := os.WriteFile(marker, []byte("HOST SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	execIn(t, sb, nil, "sh", "-c", "mkdir -p /esc && ln -s / /esc/root && ln -s /.. /esc/up && ln -s ../../../../.. /esc/rel")
	paths := []string{
		marker,
		"/../../.." + marker,
		"/esc/root" + marker,
		"/esc/up" + marker,
		"/esc/rel" + marker,
		"/esc/root/../../.." + marker,
		"/proc/1/root" + marker,
	}
	for _, p := range paths {
		got, err := f.ReadFile(ctx, p)
		if err == nil || bytes.Contains(got, []byte("HOST SECRET")) {
			t.Errorf("read %s: got %q, %v; want not found", p, got, err)
		}
	}
	// "/../../etc/passwd" is the sandbox's own /etc/passwd.
	own := execIn(t, sb, nil, "cat", "/etc/passwd").stdout
	if got, err := f.ReadFile(ctx, "/../../etc/passwd"); err != nil || string(got) != own {
		t.Errorf("/../../etc/passwd: got %q, %v; want the sandbox's %q", got, err, own)
	}
	// Writes through the same paths land inside the sandbox, never on the host.
	if err := f.WriteFile(ctx, "/esc/up"+hostDir+"/written", []byte("x"), &sandboxd.WriteOptions{MakeParents: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(hostDir, "written")); err == nil {
		t.Errorf("a write inside the sandbox reached the host's %s", hostDir)
	}
	if r := execIn(t, sb, nil, "cat", hostDir+"/written"); r.stdout != "x" {
		t.Errorf("the write should be inside the sandbox: got %q", r.stdout)
	}
	// Copying a tree with a symlink to "/" out copies the link, not the host.
	local := t.TempDir()
	if err := f.CopyFrom(ctx, "/esc", local); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(local, "esc", "root")); err != nil || target != "/" {
		t.Errorf("copied symlink: got %q, %v; want a link to /", target, err)
	}
}

func TestFilesCopyTree(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	src := filepath.Join(t.TempDir(), "proj")
	os.MkdirAll(filepath.Join(src, "bin"), 0o750)
	os.WriteFile(filepath.Join(src, "bin", "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755)
	os.WriteFile(filepath.Join(src, "secret"), []byte("s"), 0o600)
	os.Symlink("bin/run.sh", filepath.Join(src, "run"))
	os.Symlink("/etc/hostname", filepath.Join(src, "abs"))

	id := sb.ID
	execIn(t, sb, nil, "mkdir", "/opt") // an existing directory receives proj/
	if _, errs, code := sbx(t, "", "cp", src, id+":/opt"); code != 0 {
		t.Fatalf("sbx cp in: %s", errs)
	}
	r := execIn(t, sb, nil, "sh", "-c", "cd /opt/proj && stat -c '%n %a %F' bin bin/run.sh secret run abs && readlink run && readlink abs && ./run")
	want := "bin 750 directory\nbin/run.sh 755 regular file\nsecret 600 regular file\nrun 777 symbolic link\nabs 777 symbolic link\nbin/run.sh\n/etc/hostname\nran\n"
	if r.stdout != want {
		t.Errorf("in the sandbox: got\n%s\nwant\n%s%s", r.stdout, want, r.stderr)
	}
	// A single file to a new name.
	if _, errs, code := sbx(t, "", "cp", filepath.Join(src, "secret"), id+":/opt/copy"); code != 0 {
		t.Fatalf("sbx cp file: %s", errs)
	}
	if r := execIn(t, sb, nil, "stat", "-c", "%a %s", "/opt/copy"); r.stdout != "600 1\n" {
		t.Errorf("copied file: got %q", r.stdout)
	}
	// And back out.
	back := t.TempDir()
	if _, errs, code := sbx(t, "", "cp", id+":/opt/proj", back); code != 0 {
		t.Fatalf("sbx cp out: %s", errs)
	}
	for _, c := range []struct {
		name string
		mode fs.FileMode
	}{{"bin", fs.ModeDir | 0o750}, {"bin/run.sh", 0o755}, {"secret", 0o600}, {"run", fs.ModeSymlink | 0o777}} {
		fi, err := os.Lstat(filepath.Join(back, "proj", c.name))
		if err != nil || fi.Mode() != c.mode {
			t.Errorf("%s: got %v, %v; want mode %v", c.name, fi.Mode(), err, c.mode)
		}
	}
	if target, _ := os.Readlink(filepath.Join(back, "proj", "abs")); target != "/etc/hostname" {
		t.Errorf("abs link: got %q", target)
	}
	if _, errs, code := sbx(t, "", "cp", id+":/opt/nope", back); code == 0 || !strings.Contains(errs, "no such file") {
		t.Errorf("cp of a missing file: code %d, %q", code, errs)
	}
}

func TestFSCLI(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	id := sb.ID
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errs, code := sbx(t, stdin, append([]string{"fs"}, args...)...)
		if code != 0 {
			t.Fatalf("sbx fs %v: code %d, %s", args, code, errs)
		}
		return out
	}
	run("", "mkdir", "-p", id, "/x/y")
	run("hello\x00world", "write", id, "/x/y/f")
	if got := run("", "cat", id, "/x/y/f"); got != "hello\x00world" {
		t.Errorf("cat: got %q", got)
	}
	if got := run("", "stat", id, "/x/y/f"); !strings.Contains(got, "type: file\nsize: 11\nmode: 0644") {
		t.Errorf("stat: got %q", got)
	}
	run("", "mv", id, "/x/y/f", "/x/g")
	if got := run("", "ls", "-R", id, "/x"); !strings.Contains(got, "/x/g") || !strings.Contains(got, "/x/y\n") || strings.Contains(got, "/x/y/f") {
		t.Errorf("ls -R: got %q", got)
	}
	if _, errs, code := sbx(t, "", "fs", "rm", id, "/x"); code == 0 || !strings.Contains(errs, "not empty") {
		t.Errorf("rm of a full directory: code %d, %q", code, errs)
	}
	run("", "rm", "-r", id, "/x")
	if _, errs, code := sbx(t, "", "fs", "cat", id, "/x/g"); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("cat of a removed file: code %d, %q", code, errs)
	}
	// watch: one event a line, until the timeout.
	done := make(chan string)
	go func() {
		out, _, _ := sbx(t, "", "fs", "watch", "--timeout", "3s", id, "/tmp")
		done <- out
	}()
	time.Sleep(time.Second) // the watch is in place well before
	execIn(t, sb, nil, "touch", "/tmp/seen")
	if got := <-done; !strings.Contains(got, "create /tmp/seen\n") {
		t.Errorf("watch: got %q", got)
	}
}

func TestTTY(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{})
	ctx := ctxT(t)
	r := execIn(t, sb, &sandboxd.ExecOptions{TTY: true}, "sh", "-c", "tty; stty size; echo err >&2")
	if !strings.HasPrefix(r.stdout, "/dev/pts/") || !strings.Contains(r.stdout, "24 80\r\n") ||
		!strings.Contains(r.stdout, "err\r\n") || r.stderr != "" {
		t.Errorf("got stdout %q stderr %q; want a terminal of 24x80 with merged output", r.stdout, r.stderr)
	}
	if r := execIn(t, sb, nil, "tty"); r.status.Code == 0 {
		t.Errorf("without tty: got %q, want not a tty", r.stdout)
	}
	t.Run("resize", func(t *testing.T) {
		var out testutil.SyncBuffer
		p, err := sb.Exec(ctx, []string{"sh"}, &sandboxd.ExecOptions{TTY: true, Stdin: true, Rows: 30, Cols: 100, Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(p.Stdin, "stty size\n")
		waitFor(t, &out, "30 100")
		if err := p.Resize(ctx, 50, 132); err != nil {
			t.Fatal(err)
		}
		io.WriteString(p.Stdin, "stty size; exit 3\n")
		waitFor(t, &out, "50 132")
		if code, err := p.Wait(ctx); code != 3 || err != nil {
			t.Errorf("exit: got %d, %v; want 3", code, err)
		}
		wantClass(t, "resize after exit", p.Resize(ctx, 10, 10), sandboxd.ErrFailedPrecondition)
	})
	t.Run("sbx exec -t", func(t *testing.T) {
		out, errs, code := sbx(t, "", "exec", "-t", sb.ID, "--", "sh", "-c", "tty && exit 7")
		if code != 7 || !strings.HasPrefix(out, "/dev/pts/") {
			t.Errorf("got %q / %q code %d; want a pts and code 7", out, errs, code)
		}
	})
}

func waitFor(t *testing.T, b *testutil.SyncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q never showed %q", b.String(), s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
