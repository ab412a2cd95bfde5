package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// snapshotTree makes a tree of what snapshots carry, without extended
// attributes on files (the streamed digest gives those up): owners, modes
// with special bits, times, empty, small and big files (big enough for the
// kernel's copy), hard links, symlinks, a fifo, a whiteout, an opaque
// directory, a directory attribute, and names whose order differs between
// a sort of whole paths and a walk ("a", "a-b", "a/x").
func snapshotTree(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	mt := time.Unix(1_700_000_123, 0)
	big := bytes.Repeat([]byte("0123456789abcdef"), (2<<20)/16)
	for _, f := range []struct {
		p    string
		size int
		mode os.FileMode
		uid  int
	}{
		{"a/x", 5, 0o644, 0}, {"a-b", 0, 0o600, 7}, {"a.b", 1, 0o4755, 0},
		{"a/z/big", len(big), 0o640, 1000}, {"a/z/mid", 300 << 10, 0o644, 0},
		{"b/c/d/e", 16 << 10, 0o444, 3}, {"opq/kept", 3, 0o644, 0},
	} {
		p := filepath.Join(dir, f.p)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, big[:f.size], 0o600))
		must(t, os.Chown(p, f.uid, f.uid+1))
		must(t, os.Chmod(p, f.mode))
	}
	must(t, os.Chmod(filepath.Join(dir, "b"), 0o1777))
	must(t, os.Chmod(filepath.Join(dir, "b/c"), 0o2750))
	must(t, os.Link(filepath.Join(dir, "a/z/mid"), filepath.Join(dir, "b/c/mid-link")))
	must(t, os.Link(filepath.Join(dir, "b/c/mid-link"), filepath.Join(dir, "b/link2")))
	must(t, os.Symlink("../a-b", filepath.Join(dir, "a/rel")))
	must(t, os.Symlink("/nowhere", filepath.Join(dir, "abs")))
	must(t, unix.Mkfifo(filepath.Join(dir, "b/fifo"), 0o620))
	must(t, unix.Mknod(filepath.Join(dir, "a/gone"), unix.S_IFCHR, 0)) // a whiteout
	must(t, unix.Lsetxattr(filepath.Join(dir, "opq"), opaqueXattr, []byte("y"), 0))
	must(t, unix.Lsetxattr(filepath.Join(dir, "b/c"), "user.note", []byte("kept"), 0))
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano() + 5e8)}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
	return dir
}

// streamExtract extracts the tar read from r into a new directory with a
// streamed digest over the part under, and returns the directory and the
// digest's result.
func streamExtract(t *testing.T, r *os.File, under string) (string, Digest, string, bool) {
	t.Helper()
	dst := t.TempDir()
	x, err := newExtractor(dst)
	must(t, err)
	x.sd = newStreamDigest(under)
	defer x.sd.stop()
	must(t, x.readTar(context.Background(), r))
	must(t, x.finishDirs())
	x.close()
	d, _, why, ok := x.sd.result()
	return dst, d, why, ok
}

// tarFile writes the canonical tar of dir into a file and opens it.
func tarFile(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "layer.tar"))
	must(t, err)
	t.Cleanup(func() { f.Close() })
	_, err = writeCanonicalTar(context.Background(), dir, f)
	must(t, err)
	_, err = f.Seek(0, 0)
	must(t, err)
	return f
}

// A tar in the canonical order is digested while extracted, with the digest
// a walk of the extracted tree (and of the tree it came from) gives.
func TestStreamDigestMatchesWalk(t *testing.T) {
	src := snapshotTree(t)
	want := treeDigest(t, src)
	dst, got, why, ok := streamExtract(t, tarFile(t, src), "")
	if !ok {
		t.Fatalf("streamed digest given up: %s", why)
	}
	if got != want {
		t.Fatalf("streamed digest %s, want %s (the source tree's)", got, want)
	}
	if wd := treeDigest(t, dst); wd != want {
		t.Fatalf("extracted tree's digest %s, want %s", wd, want)
	}
}

// A directory's tree (under) is digested as a layer of its own holds it:
// names relative to it, without overlay markers.
func TestStreamDigestUnder(t *testing.T) {
	src := snapshotTree(t)
	must(t, os.Remove(filepath.Join(src, "a/gone")))
	sub := filepath.Join(src, "a")
	want := treeDigest(t, sub)
	// The tar of the whole tree, with a whiteout and an opaque directory
	// below a, which the directory's layer leaves out.
	must(t, unix.Mknod(filepath.Join(src, "a/z/gone"), unix.S_IFCHR, 0))
	must(t, os.Mkdir(filepath.Join(src, "a/o"), 0o755))
	must(t, unix.Lsetxattr(filepath.Join(src, "a/o"), opaqueXattr, []byte("y"), 0))
	// (their parents' times as before)
	for _, p := range []string{"a", "a/z", "a/o"} {
		mt := time.Unix(1_700_000_123, 0)
		must(t, os.Chtimes(filepath.Join(src, p), mt, mt))
	}
	_, got, why, ok := streamExtract(t, tarFile(t, src), "a")
	if !ok {
		t.Fatalf("streamed digest given up: %s", why)
	}
	// The tree a layer of a holds: a/o is an empty directory there.
	must(t, unix.Removexattr(filepath.Join(src, "a/o"), opaqueXattr))
	must(t, os.Remove(filepath.Join(src, "a/z/gone")))
	for _, p := range []string{"a", "a/z"} {
		mt := time.Unix(1_700_000_123, 0)
		must(t, os.Chtimes(filepath.Join(src, p), mt, mt))
	}
	if want = treeDigest(t, sub); got != want {
		t.Fatalf("streamed digest of a %s, want %s", got, want)
	}
}

// What the streamed digest cannot vouch for gives it up, and says why.
func TestStreamDigestGivesUp(t *testing.T) {
	mt := time.Unix(1_700_000_000, 0)
	tarOf := func(t *testing.T, hdrs ...*tar.Header) *os.File {
		f, err := os.Create(filepath.Join(t.TempDir(), "l.tar"))
		must(t, err)
		t.Cleanup(func() { f.Close() })
		tw := tar.NewWriter(f)
		for _, h := range hdrs {
			h.ModTime = mt
			must(t, tw.WriteHeader(h))
			tw.Write(bytes.Repeat([]byte("n"), int(h.Size)))
		}
		must(t, tw.Close())
		_, err = f.Seek(0, 0)
		must(t, err)
		return f
	}
	reg := func(name string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}
	}
	dir := func(name string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}
	}
	for _, c := range []struct {
		name string
		tar  func(t *testing.T) *os.File
		why  string
	}{
		{"out of order", func(t *testing.T) *os.File { return tarOf(t, reg("b"), reg("a")) }, "does not come after"},
		{"a whole path sort", func(t *testing.T) *os.File {
			return tarOf(t, dir("a/"), reg("a-b"), reg("a/x")) // a walk has a/x before a-b
		}, "was left"},
		{"implicit directory", func(t *testing.T) *os.File { return tarOf(t, reg("d/f")) }, "without an entry"},
		{"twice", func(t *testing.T) *os.File { return tarOf(t, reg("f"), reg("f")) }, "replaced"},
		{"hard link to a symlink", func(t *testing.T) *os.File {
			return tarOf(t, &tar.Header{Name: "f", Typeflag: tar.TypeSymlink, Linkname: "x"},
				&tar.Header{Name: "g", Typeflag: tar.TypeLink, Linkname: "f"})
		}, "not a file made before"},
		{"file attribute", func(t *testing.T) *os.File {
			h := reg("f")
			h.PAXRecords = map[string]string{"SCHILY.xattr.user.x": "1"}
			return tarOf(t, h)
		}, "extended attribute"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, why, ok := streamExtract(t, c.tar(t), "")
			if ok || !strings.Contains(why, c.why) {
				t.Fatalf("got ok=%v why=%q, want given up with %q", ok, why, c.why)
			}
		})
	}
}

// The store digests a canonical tar while extracting it, and a tar in
// another order by a walk: the same digest either way.
func TestAddLayerStreamedOrWalked(t *testing.T) {
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	src := snapshotTree(t)
	d1, err := s.AddLayerFromTar(ctx, tarFile(t, src))
	must(t, err)
	if n := s.streamedDigests.Load(); n != 1 {
		t.Fatalf("streamed digests: got %d, want 1", n)
	}
	// The same tree in another order: walked.
	var buf bytes.Buffer
	tr := tar.NewReader(tarFile(t, src))
	type ent struct {
		h *tar.Header
		b []byte
	}
	var ents []ent
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		var b bytes.Buffer
		b.ReadFrom(tr)
		ents = append(ents, ent{h, b.Bytes()})
	}
	// The first file at the top ("a-b") moved to the end: parents still
	// come before what they hold.
	for i, e := range ents {
		if e.h.Typeflag == tar.TypeReg && !strings.Contains(e.h.Name, "/") {
			ents = append(append(ents[:i:i], ents[i+1:]...), e)
			break
		}
	}
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		must(t, tw.WriteHeader(e.h))
		tw.Write(e.b)
	}
	must(t, tw.Close())
	d2, err := s.AddLayerFromTar(ctx, &buf)
	must(t, err)
	if n := s.streamedDigests.Load(); n != 1 {
		t.Fatalf("streamed digests after a tar out of order: got %d, want still 1", n)
	}
	if d1 != d2 {
		t.Fatalf("same tree: streamed %s, walked %s", d1, d2)
	}
}

// A hard link naming another link resolves to the file's first name, as a
// walk of the tree has it.
func TestStreamDigestLinkToLink(t *testing.T) {
	requireRoot(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "l.tar"))
	must(t, err)
	defer f.Close()
	tw := tar.NewWriter(f)
	mt := time.Unix(1_700_000_000, 0)
	for _, h := range []*tar.Header{
		{Name: "f", Typeflag: tar.TypeReg, Mode: 0o640, Size: 3, ModTime: mt},
		{Name: "g", Typeflag: tar.TypeLink, Linkname: "f"},
		{Name: "h", Typeflag: tar.TypeLink, Linkname: "g"},
	} {
		must(t, tw.WriteHeader(h))
		tw.Write(bytes.Repeat([]byte("n"), int(h.Size)))
	}
	must(t, tw.Close())
	_, err = f.Seek(0, 0)
	must(t, err)
	dst, got, why, ok := streamExtract(t, f, "")
	if !ok {
		t.Fatalf("streamed digest given up: %s", why)
	}
	if want := treeDigest(t, dst); got != want {
		t.Fatalf("streamed digest %s, want %s (a walk of the tree)", got, want)
	}
}
