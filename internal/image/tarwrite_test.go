package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// richTree writes a tree with every kind of entry the canonical tar knows,
// files around the read-ahead limit and more entries than the read-ahead
// window. With root it adds what needs root (devices, whiteouts, opaque
// directories, ownership).
func richTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mk := func(p string, size int) {
		t.Helper()
		b := bytes.Repeat([]byte{byte(len(p))}, size)
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, p), b, 0o644))
	}
	for _, size := range []int{0, 1, 4096, readAheadMax - 1, readAheadMax, readAheadMax + 1, 3 << 20} {
		mk(fmt.Sprintf("sizes/f%d", size), size)
	}
	for i := range 3 * canonWindow {
		mk(fmt.Sprintf("many/d%d/f%03d", i%7, i), 100+i)
	}
	must(t, os.Link(filepath.Join(dir, "sizes/f1"), filepath.Join(dir, "a-hard")))
	must(t, os.Link(filepath.Join(dir, fmt.Sprintf("sizes/f%d", 3<<20)), filepath.Join(dir, "zz-big-hard")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "abs-link")))
	must(t, os.Symlink("../sizes", filepath.Join(dir, "many/dir-link")))
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(t, os.Chmod(filepath.Join(dir, "sizes/f1"), 0o4755))
	must(t, unix.Setxattr(filepath.Join(dir, "sizes/f4096"), "user.note", []byte("kept"), 0))
	if l, err := net.Listen("unix", filepath.Join(dir, "sock")); err == nil {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	}
	if os.Geteuid() == 0 {
		must(t, unix.Mknod(filepath.Join(dir, "gone"), unix.S_IFCHR, 0))
		must(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(t, os.Mkdir(filepath.Join(dir, "opq"), 0o755))
		must(t, unix.Setxattr(filepath.Join(dir, "opq"), opaqueXattr, []byte("y"), 0))
		must(t, os.Lchown(filepath.Join(dir, "many/d3"), 1000, 1001))
	}
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		mt := time.Unix(1_600_000_000+int64(len(p)), 123)
		ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
	return dir
}

func TestCanonicalTarMatchesReference(t *testing.T) {
	dir := richTree(t)
	var got, want bytes.Buffer
	n, err := writeCanonicalTar(context.Background(), dir, &got)
	must(t, err)
	wn, err := legacyCanonicalTar(context.Background(), dir, &want)
	must(t, err)
	if n != int64(got.Len()) {
		t.Errorf("got size %d, but wrote %d bytes", n, got.Len())
	}
	if n != wn || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("canonical tar: got %d bytes, want the reference's %d (identical)", n, wn)
	}
	for i := range 3 { // the same bytes every time
		var again bytes.Buffer
		_, err := writeCanonicalTar(context.Background(), dir, &again)
		must(t, err)
		if !bytes.Equal(again.Bytes(), want.Bytes()) {
			t.Fatalf("run %d: got different bytes", i)
		}
	}
}

type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.left < len(p) {
		return 0, errors.New("disk full")
	}
	w.left -= len(p)
	return len(p), nil
}

func TestCanonicalTarStops(t *testing.T) {
	dir := richTree(t)
	before := runtime.NumGoroutine()
	fds := func() int { ents, _ := os.ReadDir("/proc/self/fd"); return len(ents) }
	fdsBefore := fds()
	cases := []struct {
		name string
		run  func() error
	}{
		{"writer fails", func() error {
			_, err := writeCanonicalTar(context.Background(), dir, &failingWriter{left: 64 << 10})
			return err
		}},
		{"context cancelled", func() error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := writeCanonicalTar(ctx, dir, &bytes.Buffer{})
			return err
		}},
		{"missing directory", func() error {
			_, err := writeCanonicalTar(context.Background(), filepath.Join(dir, "nope"), &bytes.Buffer{})
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.run(); err == nil {
				t.Fatal("got no error, want one")
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("got %d goroutines after, want at most %d (the walker or a worker leaked)", n, before)
	}
	if n := fds(); n > fdsBefore {
		t.Fatalf("got %d open descriptors after, want at most %d (a directory left open)", n, fdsBefore)
	}
}

// TestStoredDigestIsTheTreeDigest checks that a layer extracted here, its
// digest taken with what the extraction knows (no file xattrs to read),
// has the digest its directory gives when read in full.
func TestStoredDigestIsTheTreeDigest(t *testing.T) {
	requireRoot(t)
	mt := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name  string
		xattr bool
	}{{"no file xattrs", false}, {"a file with a user xattr", true}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			hdrs := []*tar.Header{
				{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
				{Name: "./d/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7, ModTime: mt},
				{Name: "./d/f", Typeflag: tar.TypeReg, Mode: 0o640, Size: 5, ModTime: mt},
				{Name: "./d/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: readAheadMax + 1, ModTime: mt},
				{Name: "./d/empty", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: mt},
				{Name: "./l", Typeflag: tar.TypeSymlink, Linkname: "d/f", ModTime: mt},
			}
			if tc.xattr {
				hdrs[2].PAXRecords = map[string]string{"SCHILY.xattr.user.note": "kept"}
			}
			for _, h := range hdrs {
				must(t, tw.WriteHeader(h))
				tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
			must(t, tw.Close())
			s, _ := newTestStore(t, BaseConfig{})
			d, err := s.AddLayerFromUpperTar(context.Background(), &buf, nil)
			must(t, err)
			if got := treeDigest(t, s.LayerPath(d)); got != d {
				t.Fatalf("stored as %s, got %s reading the layer in full", d, got)
			}
			xs, err := readXattrs(filepath.Join(s.LayerPath(d), "d/f"))
			must(t, err)
			if got := xs["user.note"] == "kept"; got != tc.xattr {
				t.Fatalf("d/f xattrs: got %v, want user.note: %v", xs, tc.xattr)
			}
		})
	}
}

// TestCanonicalTarNoFileXattrs checks the shortcut on a tree whose files
// have no extended attributes: the same tar as reading them.
func TestCanonicalTarNoFileXattrs(t *testing.T) {
	dir := richTree(t)
	must(t, unix.Removexattr(filepath.Join(dir, "sizes/f4096"), "user.note"))
	var full, short bytes.Buffer
	_, err := writeCanonicalTar(context.Background(), dir, &full)
	must(t, err)
	_, err = writeCanonicalTarOpts(context.Background(), dir, &short, canonOptions{noFileXattrs: true})
	must(t, err)
	if !bytes.Equal(full.Bytes(), short.Bytes()) {
		t.Fatalf("got %d bytes with noFileXattrs, want the same %d as a full read", short.Len(), full.Len())
	}
}
