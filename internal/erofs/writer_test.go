package erofs

// The Writer's own contract: where contents go (Create), errors, determinism,
// the layout chosen for each size, the probe, and its speed. What the kernel
// reads of an image is checked in erofs_test.go.

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCreateOffset checks the offsets Create returns (contents read back
// with pread) and how it treats callbacks that write too little or fail.
func TestCreateOffset(t *testing.T) { forBlockSizes(t, testCreateOffset) }

func testCreateOffset(t *testing.T, bits uint8) {
	ti := newTestImageBits(t, bits)
	fd := int(ti.f.Fd())
	rnd := rand.New(rand.NewPCG(7, 8))
	type file struct {
		off  int64
		data []byte
	}
	var files []file
	prevEnd := int64(dataStart)
	for i, size := range []int{1, 4096, 0, 4097, 100000, 3} {
		data := randBytes(rnd, size)
		_, off, err := ti.Create(ti.Root(), fmt.Sprint("f", i), Meta{Mode: 0o644}, int64(size), writeBytes(data))
		if err != nil {
			t.Fatal(err)
		}
		if off%ti.bs != 0 || off < prevEnd {
			t.Errorf("file %d at %d, previous end %d", i, off, prevEnd)
		}
		prevEnd = off + int64(size)
		files = append(files, file{off, data})
		// Earlier files read back while later ones are added.
		for _, f := range files {
			got := make([]byte, len(f.data))
			if n, err := unix.Pread(fd, got, f.off); err != nil || n != len(got) || !bytes.Equal(got, f.data) {
				t.Fatalf("pread at %d: %d, %v", f.off, n, err)
			}
		}
	}
	// copy_file_range from another file, with a nil destination offset.
	src, err := os.CreateTemp(t.TempDir(), "src")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	srcData := randBytes(rnd, 70000)
	src.Write(srcData)
	_, off, err := ti.Create(ti.Root(), "copied", Meta{Mode: 0o644}, int64(len(srcData)), func(fd int, _ int64) (int64, error) {
		var soff int64
		for soff < int64(len(srcData)) {
			n, err := unix.CopyFileRange(int(src.Fd()), &soff, fd, nil, len(srcData)-int(soff), 0)
			if err != nil {
				return soff, err
			}
			if n == 0 {
				return soff, errors.New("short copy")
			}
		}
		return soff, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(srcData))
	if _, err := unix.Pread(fd, got, off); err != nil || !bytes.Equal(got, srcData) {
		t.Fatalf("copied file: %v", err)
	}
	// A callback writing too little, or failing, adds nothing.
	if _, _, err := ti.Create(ti.Root(), "short", Meta{}, 10, writeBytes([]byte("12345"))); !errors.Is(err, errWrite) {
		t.Errorf("short write: %v", err)
	}
	if _, _, err := ti.Create(ti.Root(), "long", Meta{}, 1, writeBytes([]byte("12345"))); !errors.Is(err, errWrite) {
		t.Errorf("long write: %v", err)
	}
	boom := errors.New("boom")
	if _, _, err := ti.Create(ti.Root(), "fail", Meta{}, 1, func(int, int64) (int64, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Errorf("failing write: %v", err)
	}
	for _, name := range []string{"short", "long", "fail"} {
		if ti.Root().Lookup(name) != nil {
			t.Errorf("%s was added", name)
		}
	}
	// The next file does not overlap what the failed ones wrote.
	_, off2, err := ti.Create(ti.Root(), "after", Meta{Mode: 0o644}, 3, writeBytes([]byte("abc")))
	if err != nil {
		t.Fatal(err)
	}
	if off2 <= off+int64(len(srcData)) {
		t.Errorf("offset %d after failures", off2)
	}
	if !mountAllowed() {
		ti.close()
		return
	}
	mnt := ti.mount()
	for i, f := range files {
		got, err := os.ReadFile(filepath.Join(mnt, fmt.Sprint("f", i)))
		if err != nil || !bytes.Equal(got, f.data) {
			t.Errorf("f%d: %v", i, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "copied")); err != nil || !bytes.Equal(got, srcData) {
		t.Errorf("copied: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "after")); err != nil || string(got) != "abc" {
		t.Errorf("after: %q %v", got, err)
	}
}

func TestErrors(t *testing.T) {
	ti := newTestImage(t)
	root := ti.Root()
	f := ti.file(root, "f", Meta{Mode: 0o644}, []byte("f"))
	ti.mkdir(root, "d", Meta{Mode: 0o755})
	bad := []string{"", ".", "..", "a/b", "/", "a\x00b", strings.Repeat("x", 256)}
	for _, name := range bad {
		if _, err := root.Mkdir(name, Meta{}); !errors.Is(err, errBadName) {
			t.Errorf("Mkdir(%q): %v", name, err)
		}
		if _, _, err := ti.Create(root, name, Meta{}, 0, nil); !errors.Is(err, errBadName) {
			t.Errorf("Create(%q): %v", name, err)
		}
		if _, err := root.Symlink(name, "t", Meta{}); !errors.Is(err, errBadName) {
			t.Errorf("Symlink(%q): %v", name, err)
		}
		if _, err := root.Mknod(name, Meta{Mode: unix.S_IFIFO}, 0); !errors.Is(err, errBadName) {
			t.Errorf("Mknod(%q): %v", name, err)
		}
		if err := root.Link(name, f); !errors.Is(err, errBadName) {
			t.Errorf("Link(%q): %v", name, err)
		}
	}
	if _, err := root.Mkdir(strings.Repeat("x", 255), Meta{}); err != nil {
		t.Errorf("255-byte name: %v", err)
	}
	for _, name := range []string{"f", "d"} {
		if _, err := root.Mkdir(name, Meta{}); !errors.Is(err, ErrExist) {
			t.Errorf("Mkdir existing %q: %v", name, err)
		}
		if _, _, err := ti.Create(root, name, Meta{}, 1, writeBytes([]byte("x"))); !errors.Is(err, ErrExist) {
			t.Errorf("Create existing %q: %v", name, err)
		}
		if _, err := root.Symlink(name, "t", Meta{}); !errors.Is(err, ErrExist) {
			t.Errorf("Symlink existing %q: %v", name, err)
		}
		if _, err := root.Mknod(name, Meta{Mode: unix.S_IFCHR}, 0); !errors.Is(err, ErrExist) {
			t.Errorf("Mknod existing %q: %v", name, err)
		}
		if err := root.Link(name, f); !errors.Is(err, ErrExist) {
			t.Errorf("Link existing %q: %v", name, err)
		}
	}
	if _, err := root.Mkdir("f", Meta{}); err == nil || !strings.Contains(err.Error(), `"f"`) {
		t.Errorf("error does not name the entry: %v", err)
	}
	// Wrong node kinds.
	if _, err := f.Mkdir("x", Meta{}); !errors.Is(err, errNotDir) {
		t.Errorf("Mkdir in a file: %v", err)
	}
	if _, _, err := ti.Create(f, "x", Meta{}, 0, nil); !errors.Is(err, errNotDir) {
		t.Errorf("Create in a file: %v", err)
	}
	if _, err := root.Mknod("x", Meta{Mode: unix.S_IFREG}, 0); !errors.Is(err, errBadKind) {
		t.Errorf("Mknod S_IFREG: %v", err)
	}
	if _, err := root.Mknod("x", Meta{Mode: 0o644}, 0); !errors.Is(err, errBadKind) {
		t.Errorf("Mknod without type: %v", err)
	}
	if _, err := root.Mkdir("x", Meta{Mode: unix.S_IFREG | 0o644}); !errors.Is(err, errBadKind) {
		t.Errorf("Mkdir with S_IFREG: %v", err)
	}
	if _, err := root.Mknod("x", Meta{Mode: unix.S_IFCHR}, unix.Mkdev(4096, 0)); !errors.Is(err, errBadDev) {
		t.Errorf("Mknod major 4096: %v", err)
	}
	for _, target := range []string{"", "a\x00b", strings.Repeat("t", 4096)} {
		if _, err := root.Symlink("x", target, Meta{}); !errors.Is(err, errBadSymlink) {
			t.Errorf("Symlink to %d bytes: %v", len(target), err)
		}
	}
	if f.Lookup("x") != nil || f.Remove("x") || f.IsDir() || !root.IsDir() {
		t.Error("file as a directory")
	}
	// Xattr names.
	for _, name := range []string{"system.foo", "user.", "other.x", "posix_acl_access", "system.posix_acl_access.x", "user." + strings.Repeat("x", 256)} {
		if _, err := root.Mkdir("x", Meta{Xattrs: map[string]string{name: "v"}}); !errors.Is(err, errXattr) {
			t.Errorf("xattr %q: %v", name, err)
		}
	}
	if _, err := root.Mkdir("x", Meta{Xattrs: map[string]string{"user.x": strings.Repeat("v", 65536)}}); !errors.Is(err, errXattr) {
		t.Errorf("xattr value of 64 KiB: %v", err)
	}
	if _, err := root.Mkdir("x", Meta{MtimeNsec: 1e9}); !errors.Is(err, errBadMeta) {
		t.Errorf("nsec 1e9: %v", err)
	}
	if root.Lookup("x") != nil {
		t.Error("a failed call added x")
	}
	// Another writer's node.
	other := newTestImage(t)
	if err := other.Root().Link("x", f); !errors.Is(err, errForeign) {
		t.Errorf("Link across writers: %v", err)
	}
	if _, _, err := other.Create(root, "x", Meta{}, 0, nil); !errors.Is(err, errForeign) {
		t.Errorf("Create across writers: %v", err)
	}
	// SetMeta keeps the type, and a bad xattr fails Close.
	f.SetMeta(Meta{Mode: unix.S_IFDIR | 0o4711, Uid: 9})
	if m := f.Meta(); m.Mode != unix.S_IFREG|0o4711 || m.Uid != 9 {
		t.Errorf("after SetMeta: %+v", m)
	}
	f.SetMeta(Meta{Xattrs: map[string]string{"bad.x": ""}})
	if m := f.Meta(); m.Uid != 9 {
		t.Errorf("a failed SetMeta changed the node: %+v", m)
	}
	if _, err := ti.Close(); !errors.Is(err, errXattr) {
		t.Errorf("Close after a bad SetMeta: %v", err)
	}
	if _, err := root.Mkdir("late", Meta{}); !errors.Is(err, errClosed) {
		t.Errorf("Mkdir after Close: %v", err)
	}
}

// TestDeterministic builds the same tree twice and compares the bytes.
func TestDeterministic(t *testing.T) { forBlockSizes(t, testDeterministic) }

func testDeterministic(t *testing.T, bits uint8) {
	build := func() []byte {
		ti := newTestImageBits(t, bits)
		root := ti.Root()
		for i := range 300 {
			d := ti.mkdir(root, fmt.Sprintf("dir%d", (i*7)%300), Meta{Mode: 0o755, Xattrs: map[string]string{"user.b": "2", "user.a": "1", "trusted.c": "3"}})
			ti.file(d, "f", Meta{Mode: 0o644, Mtime: int64(i)}, []byte(strings.Repeat("x", i)))
			if _, err := d.Symlink("l", strings.Repeat("y", i+1), Meta{Mode: 0o777}); err != nil {
				t.Fatal(err)
			}
		}
		ti.close()
		b, err := os.ReadFile(ti.path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if a, b := build(), build(); !bytes.Equal(a, b) {
		t.Error("two builds of the same tree differ")
	}
}

func TestProbe(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := Probe(dir); err != nil {
		t.Fatalf("Probe: %v (dmesg: %s)", err, dmesgTail())
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 0 {
		t.Errorf("Probe left %v behind (%v)", ents, err)
	}
}

// TestManyFiles builds 12,800 files of 16 KiB in 100 directories and logs
// how long Close takes.
func TestManyFiles(t *testing.T) {
	ti := newTestImage(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	start := time.Now()
	for i := range 100 {
		d := ti.mkdir(ti.Root(), fmt.Sprintf("dir%03d", i), Meta{Mode: 0o755})
		for j := range 128 {
			if _, _, err := ti.Create(d, fmt.Sprintf("file-%05d.dat", j), Meta{Mode: 0o644, Mtime: 1700000000}, int64(len(data)), writeBytes(data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	built := time.Now()
	size, err := ti.Close()
	if err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	t.Logf("12,800 files of 16 KiB: Create %v, Close %v, image %d MiB", built.Sub(start), closed.Sub(built), size>>20)
	if !mountAllowed() {
		return
	}
	mnt := mountImage(t, ti.path)
	got, err := os.ReadFile(filepath.Join(mnt, "dir099", "file-00127.dat"))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("read back: %v", err)
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "dir042"))
	if err != nil || len(ents) != 128 {
		t.Errorf("readdir: %d entries, %v", len(ents), err)
	}
}

// TestExactSizes builds directories and symlinks whose sizes sit on block
// boundaries: a tail filling the rest of its inode's block exactly, sizes
// of whole blocks (no tail), and the smallest tails.
func TestExactSizes(t *testing.T) { forBlockSizes(t, testExactSizes) }

func testExactSizes(t *testing.T, bits uint8) {
	bs := 1 << bits
	// fill returns names (prefix + index, padded with x) whose dirents
	// (12 bytes each, plus the name) take exactly n bytes.
	fill := func(prefix string, n int) []string {
		var names []string
		for n > 0 {
			l := 255
			switch {
			case n <= 12+255:
				l = n - 12
			case n-(12+255) < 12+len(prefix)+3:
				l = n - 12 - (12 + len(prefix) + 3) // leave room for a shortest name
			}
			name := fmt.Sprintf("%s%03d", prefix, len(names))
			if l < len(name) {
				t.Fatalf("fill(%q, %d): no name fits", prefix, n)
			}
			names = append(names, name+strings.Repeat("x", l-len(name)))
			n -= 12 + l
		}
		return names
	}
	cat := func(lists ...[]string) []string { return slices.Concat(lists...) }
	const dots = 13 + 14 // "." and ".." entries
	// An xattr body of 12 (header) + 4+1+v (entry) bytes, v a multiple of 4 minus 1.
	v := 231
	if bs == 512 {
		v = 71
	}
	xa := map[string]string{"user.a": strings.Repeat("v", v)}
	xsize := 12 + 4 + 1 + v
	cases := []struct {
		name   string
		names  []string
		xattrs map[string]string
		size   int64
		layout int
	}{
		{"inline-full-block", fill("a", bs-inodeSize-dots), nil, int64(bs - inodeSize), flatInline},
		{"one-block", fill("a", bs-dots), nil, int64(bs), flatPlain},
		{"two-blocks", cat(fill("a", bs-dots), fill("b", bs)), nil, int64(2 * bs), flatPlain},
		{"block-and-small-tail", cat(fill("a", bs-dots), []string{"c"}), nil, int64(bs + 13), flatInline},
		{"block-and-full-tail", cat(fill("a", bs-dots), fill("b", bs-inodeSize)), nil, int64(2*bs - inodeSize), flatInline},
		{"xattrs-fill-block", fill("a", bs-inodeSize-xsize-dots), xa, int64(bs - inodeSize - xsize), flatInline},
		{"just-too-big-to-inline", fill("a", bs-inodeSize-xsize-dots+1), xa, int64(bs - inodeSize - xsize + 1), flatPlain},
	}
	ti := newTestImageBits(t, bits)
	var specs []spec
	for i, c := range cases {
		// Vary what precedes each directory in the inode table.
		specs = append(specs, spec{path: fmt.Sprintf("pad%d", i), meta: Meta{Mode: unix.S_IFLNK | 0o777}, target: strings.Repeat("p", 1+i*500)})
		specs = append(specs, spec{path: c.name, meta: Meta{Mode: unix.S_IFDIR | 0o755, Xattrs: c.xattrs}})
		for _, n := range c.names {
			specs = append(specs, spec{path: c.name + "/" + n, meta: Meta{Mode: unix.S_IFREG | 0o644}})
		}
	}
	// Symlinks: inline when the whole target fits after the inode, else in
	// blocks of their own (as many as it takes).
	links := map[int]int{bs - inodeSize: flatInline, bs - inodeSize + 1: flatPlain, bs - inodeSize - 1: flatInline,
		1: flatInline, bs: flatPlain, bs + 1: flatPlain, 4095: flatPlain, 2*bs - inodeSize: flatPlain}
	maps.DeleteFunc(links, func(l, _ int) bool { return l > maxSymlinkLen })
	for l := range links {
		specs = append(specs, spec{path: fmt.Sprintf("link%d", l), meta: Meta{Mode: unix.S_IFLNK | 0o777}, target: strings.Repeat("t", l)})
	}
	slices.SortFunc(specs, func(a, b spec) int { return strings.Compare(a.path, b.path) })
	ti.build(specs)
	ti.close()
	r := readImage(t, ti.path)
	if r.bs != int64(bs) {
		t.Fatalf("block size %d, want %d", r.bs, bs)
	}
	for _, c := range cases {
		in := r.lookup(c.name)
		if in.size != c.size || in.layout != c.layout {
			t.Errorf("%s: size %d layout %d, want %d %d", c.name, in.size, in.layout, c.size, c.layout)
		}
		names, _ := r.entries(in)
		want := append([]string{".", ".."}, c.names...)
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Errorf("%s: entries differ", c.name)
		}
	}
	for l, layout := range links {
		in := r.lookup(fmt.Sprintf("link%d", l))
		if in.layout != layout || string(r.data(in)) != strings.Repeat("t", l) {
			t.Errorf("link%d: layout %d, want %d", l, in.layout, layout)
		}
	}
	mnt := mountImage(t, ti.path)
	checkTree(t, mnt, specs)
	for _, c := range cases {
		if st := lstat(t, filepath.Join(mnt, c.name)); st.Size != c.size {
			t.Errorf("%s: size %d, want %d", c.name, st.Size, c.size)
		}
	}
}
