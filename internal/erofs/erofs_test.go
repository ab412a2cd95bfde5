package erofs

// The tree as the kernel reads it back from a mounted image: contents,
// modes, owners, times, xattrs, devices, big directories, hard links,
// removal and re-rooting. The Writer's own contract is in writer_test.go.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// spec is one node of a test tree.
type spec struct {
	path   string // slash-separated, relative to the root
	meta   Meta   // Mode's type says what to make
	data   []byte // regular file contents
	target string // symlink target
	rdev   uint64 // device number
}

// build adds the specs (parents before children) to the image.
func (ti *testImage) build(specs []spec) {
	ti.t.Helper()
	for _, s := range specs {
		dir, name := path.Split(s.path)
		parent := ti.lookup(strings.TrimSuffix(dir, "/"))
		var err error
		switch s.meta.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			_, err = parent.Mkdir(name, s.meta)
		case unix.S_IFREG:
			ti.file(parent, name, s.meta, s.data)
		case unix.S_IFLNK:
			_, err = parent.Symlink(name, s.target, s.meta)
		default:
			_, err = parent.Mknod(name, s.meta, s.rdev)
		}
		if err != nil {
			ti.t.Fatalf("%s: %v", s.path, err)
		}
	}
}

// lookup resolves a slash-separated path from the tree's top.
func (ti *testImage) lookup(p string) *Node {
	ti.t.Helper()
	n := ti.Root()
	if p == "" {
		return n
	}
	for _, name := range strings.Split(p, "/") {
		n = n.Lookup(name)
		if n == nil {
			ti.t.Fatalf("lookup %q: missing %q", p, name)
		}
	}
	return n
}

// checkTree checks, through the kernel, every spec under the mount mnt and
// that each directory lists exactly its specs' children.
func checkTree(t *testing.T, mnt string, specs []spec) {
	t.Helper()
	children := map[string][]string{"": nil}
	isDir := map[string]bool{}
	for _, s := range specs {
		isDir[s.path] = s.meta.Mode&unix.S_IFMT == unix.S_IFDIR
		dir, name := path.Split(s.path)
		dir = strings.TrimSuffix(dir, "/")
		children[dir] = append(children[dir], name)
		if s.meta.Mode&unix.S_IFMT == unix.S_IFDIR {
			if _, ok := children[s.path]; !ok {
				children[s.path] = nil
			}
		}
	}
	for _, s := range specs {
		p := filepath.Join(mnt, s.path)
		st := lstat(t, p)
		m := s.meta
		if st.Mode != m.Mode || st.Uid != m.Uid || st.Gid != m.Gid {
			t.Errorf("%s: mode %#o uid %d gid %d, want %#o %d %d", s.path, st.Mode, st.Uid, st.Gid, m.Mode, m.Uid, m.Gid)
		}
		if st.Mtim.Sec != m.Mtime || st.Mtim.Nsec != int64(m.MtimeNsec) {
			t.Errorf("%s: mtime %d.%09d, want %d.%09d", s.path, st.Mtim.Sec, st.Mtim.Nsec, m.Mtime, m.MtimeNsec)
		}
		switch m.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Size != int64(len(s.data)) || !bytes.Equal(got, s.data) {
				t.Errorf("%s: size %d, contents equal %v; want size %d", s.path, st.Size, bytes.Equal(got, s.data), len(s.data))
			}
		case unix.S_IFLNK:
			got, err := os.Readlink(p)
			if err != nil || got != s.target {
				t.Errorf("%s: readlink %q, %v; want %q", s.path, got, err, s.target)
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			if st.Rdev != s.rdev {
				t.Errorf("%s: rdev %d:%d, want %d:%d", s.path, unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(s.rdev), unix.Minor(s.rdev))
			}
		case unix.S_IFDIR:
			subdirs := 0
			for _, c := range children[s.path] {
				if isDir[path.Join(s.path, c)] {
					subdirs++
				}
			}
			if st.Nlink != uint64(2+subdirs) {
				t.Errorf("%s: nlink %d, want %d", s.path, st.Nlink, 2+subdirs)
			}
		}
		checkXattrs(t, p, m.Xattrs)
	}
	for dir, names := range children {
		got := dirNames(t, filepath.Join(mnt, dir))
		slices.Sort(names)
		if !slices.Equal(got, names) {
			t.Errorf("readdir %q: %d entries %q, want %d %q", dir, len(got), got, len(names), names)
		}
	}
}

func checkXattrs(t *testing.T, p string, want map[string]string) {
	t.Helper()
	names := listxattr(t, p)
	wantNames := make([]string, 0, len(want))
	for k := range want {
		wantNames = append(wantNames, k)
	}
	slices.Sort(names)
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("%s: xattrs %q, want %q", p, names, wantNames)
		return
	}
	for k, v := range want {
		if got := lgetxattr(t, p, k); got != v {
			t.Errorf("%s: xattr %s = %q, want %q", p, k, got, v)
		}
	}
}

func randBytes(rnd *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// acl returns a POSIX ACL xattr value (user::rw-, user:1000:r--,
// group::r--, mask::r--, other::---), in the kernel's xattr format.
func acl(dflt bool) string {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	entry := func(tag, perm uint16, id uint32) {
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	const undefined = 0xffffffff
	entry(0x01, 6, undefined) // ACL_USER_OBJ
	perm := uint16(4)
	if dflt {
		perm = 5
	}
	entry(0x02, perm, 1000)      // ACL_USER
	entry(0x04, 4, undefined)    // ACL_GROUP_OBJ
	entry(0x10, perm, undefined) // ACL_MASK
	entry(0x20, 0, undefined)    // ACL_OTHER
	return string(b)
}

func TestTree(t *testing.T) { forBlockSizes(t, testTree) }

func testTree(t *testing.T, bits uint8) {
	requireRoot(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	const (
		dir  = unix.S_IFDIR
		reg  = unix.S_IFREG
		lnk  = unix.S_IFLNK
		chr  = unix.S_IFCHR
		blk  = unix.S_IFBLK
		fifo = unix.S_IFIFO
		sock = unix.S_IFSOCK
	)
	specs := []spec{
		{path: "etc", meta: Meta{Mode: dir | 0o755, Mtime: 1700000000, MtimeNsec: 123456789}},
		{path: "etc/passwd", meta: Meta{Mode: reg | 0o644, Mtime: 1700000001, MtimeNsec: 1}, data: []byte("root:x:0:0::/root:/bin/sh\n")},
		{path: "etc/empty", meta: Meta{Mode: reg | 0o600, Uid: 1000, Gid: 1000}, data: nil},
		{path: "etc/one", meta: Meta{Mode: reg | 0o444, Mtime: -86400, MtimeNsec: 999999999}, data: []byte{'x'}},
		{path: "etc/emptydir", meta: Meta{Mode: dir | 0o700, Uid: 5, Gid: 6}},
		{path: "a", meta: Meta{Mode: dir | 0o755}},
		{path: "a/b", meta: Meta{Mode: dir | 0o1777, Mtime: 42}},
		{path: "a/b/c", meta: Meta{Mode: dir | 0o2755, Uid: 65534, Gid: 65534,
			Xattrs: map[string]string{"trusted.overlay.opaque": "y", "user.dir": "on a dir"}}},
		{path: "a/b/c/block", meta: Meta{Mode: reg | 0o644}, data: randBytes(rnd, 4096)},
		{path: "a/b/c/block1", meta: Meta{Mode: reg | 0o644}, data: randBytes(rnd, 4097)},
		{path: "a/b/c/big", meta: Meta{Mode: reg | 0o755, Uid: 4294967294, Gid: 70000, Mtime: 1 << 40},
			data: randBytes(rnd, 5<<20+123)},
		{path: "bin", meta: Meta{Mode: dir | 0o755}},
		{path: "bin/su", meta: Meta{Mode: reg | 0o4755,
			Xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
			data: []byte("#!/bin/sh\n")},
		{path: "bin/wall", meta: Meta{Mode: reg | 0o2755, Gid: 5}, data: []byte("wall")},
		{path: "bin/sh", meta: Meta{Mode: lnk | 0o777, Mtime: 7, MtimeNsec: 8}, target: "busybox"},
		{path: "bin/abs", meta: Meta{Mode: lnk | 0o777, Xattrs: map[string]string{"trusted.on-symlink": "v"}}, target: "/usr/lib/x86_64-linux-gnu/libc.so.6"},
		{path: "dev", meta: Meta{Mode: dir | 0o755}},
		{path: "dev/fifo", meta: Meta{Mode: fifo | 0o620, Uid: 3}},
		{path: "dev/null", meta: Meta{Mode: chr | 0o666}, rdev: unix.Mkdev(1, 3)},
		{path: "dev/sda1", meta: Meta{Mode: blk | 0o660, Gid: 6}, rdev: unix.Mkdev(8, 1)},
		{path: "dev/bigdev", meta: Meta{Mode: chr | 0o600}, rdev: unix.Mkdev(4095, 1<<20-1)},
		{path: "dev/midminor", meta: Meta{Mode: blk | 0o600}, rdev: unix.Mkdev(259, 300)},
		{path: "dev/whiteout", meta: Meta{Mode: chr}, rdev: 0},
		{path: "dev/sock", meta: Meta{Mode: sock | 0o755}},
		{path: "acl", meta: Meta{Mode: reg | 0o640, Xattrs: map[string]string{"system.posix_acl_access": acl(false)}}, data: []byte("acl")},
		{path: "acldir", meta: Meta{Mode: dir | 0o750, Xattrs: map[string]string{
			"system.posix_acl_access": acl(false), "system.posix_acl_default": acl(true)}}},
		{path: "xattrs", meta: Meta{Mode: reg | 0o644, Xattrs: map[string]string{
			"user.a":                           "",
			"user.b":                           "value b",
			"user." + strings.Repeat("n", 250): strings.Repeat("v", 1000),
			"trusted.t":                        "\x00binary\xff",
			"security.selinux":                 "system_u:object_r:etc_t:s0",
		}}, data: []byte("x")},
	}
	ti := newTestImageBits(t, bits)
	ti.Root().SetMeta(Meta{Mode: 0o711, Uid: 1, Gid: 2, Mtime: 99, MtimeNsec: 100, Xattrs: map[string]string{"user.root": "r"}})
	ti.build(specs)
	if got := ti.lookup("a/b/c").Meta(); got.Mode != dir|0o2755 || got.Xattrs["trusted.overlay.opaque"] != "y" || len(got.Xattrs) != 2 {
		t.Errorf("Meta() = %+v", got)
	}
	mnt := ti.mount()
	checkTree(t, mnt, specs)

	st := lstat(t, mnt)
	if st.Mode != dir|0o711 || st.Uid != 1 || st.Gid != 2 || st.Mtim.Sec != 99 || st.Mtim.Nsec != 100 || st.Nlink != 2+5 {
		t.Errorf("root: %+v", st)
	}
	checkXattrs(t, mnt, map[string]string{"user.root": "r"})
	// The on-disk "." and ".." entries: the root's ".." is the root.
	if st.Ino == 0 {
		t.Errorf("root has inode number 0")
	}
	if ents := direntInos(t, mnt); ents["."] != st.Ino || ents[".."] != st.Ino {
		t.Errorf("root: . %d, .. %d, want %d", ents["."], ents[".."], st.Ino)
	}
	if ents := direntInos(t, filepath.Join(mnt, "a/b/c")); ents["."] != lstat(t, filepath.Join(mnt, "a/b/c")).Ino ||
		ents[".."] != lstat(t, filepath.Join(mnt, "a/b")).Ino || ents["block"] != lstat(t, filepath.Join(mnt, "a/b/c/block")).Ino {
		t.Errorf("a/b/c: entries %v", ents)
	}
}

// direntInos returns the inode numbers getdents reports for the entries of
// directory p, "." and ".." included.
func direntInos(t *testing.T, p string) map[string]uint64 {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	inos := map[string]uint64{}
	buf := make([]byte, 1<<16)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return inos
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(binary.LittleEndian.Uint16(b[16:]))
			name := b[19:reclen]
			name = name[:bytes.IndexByte(name, 0)]
			inos[string(name)] = binary.LittleEndian.Uint64(b)
			b = b[reclen:]
		}
	}
}

// TestLargeDir checks a directory of many blocks: every name looked up by
// the kernel's binary search and listed in order.
func TestLargeDir(t *testing.T) { forBlockSizes(t, testLargeDir) }

func testLargeDir(t *testing.T, bits uint8) {
	requireRoot(t)
	rnd := rand.New(rand.NewPCG(3, 4))
	ti := newTestImageBits(t, bits)
	d := ti.mkdir(ti.Root(), "big", Meta{Mode: 0o755})
	alphabet := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+!~,=@%\xc3\xa9\x01\xff "
	names := map[string]bool{}
	for len(names) < 5000 {
		var n int
		switch rnd.IntN(10) {
		case 0:
			n = 255
		case 1:
			n = 200 + rnd.IntN(56)
		default:
			n = 1 + rnd.IntN(40)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		if name := string(b); checkName(name) == nil {
			names[name] = true
		}
	}
	// Names next to "." and ".." in byte order.
	for _, n := range []string{"-", ".-", ".a", "..a", "...", "x", "\x01", "\xff"} {
		names[n] = true
	}
	var sorted []string
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for i, n := range sorted {
		switch i % 4 {
		case 0:
			ti.file(d, n, Meta{Mode: 0o644}, []byte(n))
		case 1:
			ti.file(d, n, Meta{Mode: 0o644}, nil)
		case 2:
			if _, err := d.Symlink(n, n, Meta{Mode: 0o777}); err != nil {
				t.Fatal(err)
			}
		case 3:
			ti.mkdir(d, n, Meta{Mode: 0o755})
		}
	}
	mnt := ti.mount()
	p := filepath.Join(mnt, "big")
	st := lstat(t, p)
	if st.Size <= 4*ti.bs {
		t.Errorf("directory size %d: expected several blocks", st.Size)
	}
	if want := uint64(2 + len(sorted)/4); st.Nlink != want {
		t.Errorf("nlink %d, want %d", st.Nlink, want)
	}
	for i, n := range sorted {
		st := lstat(t, filepath.Join(p, n))
		wantType := []uint32{unix.S_IFREG, unix.S_IFREG, unix.S_IFLNK, unix.S_IFDIR}[i%4]
		if st.Mode&unix.S_IFMT != wantType {
			t.Fatalf("%q: mode %#o", n, st.Mode)
		}
	}
	for _, n := range []string{"nonexistent", "a", "zzzzzzzzzzzzzzzz", strings.Repeat("~", 255), "0"} {
		if names[n] {
			continue
		}
		if _, err := os.Lstat(filepath.Join(p, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("lstat absent %q: %v", n, err)
		}
	}
	if got := dirNames(t, p); !slices.Equal(got, sorted) {
		t.Errorf("readdir: %d entries, want %d", len(got), len(sorted))
	}
	// getdents order is the on-disk order: sorted, "." and ".." included.
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(raw) || len(raw) != len(sorted) {
		t.Errorf("raw readdir not sorted or %d entries", len(raw))
	}
}

// TestPacking exercises the inline tails: symlink targets and directories
// of every size, so that inodes and their tails meet block ends, plus an
// xattr body larger than a block.
func TestPacking(t *testing.T) { forBlockSizes(t, testPacking) }

func testPacking(t *testing.T, bits uint8) {
	requireRoot(t)
	rnd := rand.New(rand.NewPCG(5, 6))
	ti := newTestImageBits(t, bits)
	var specs []spec
	for i := range 600 {
		n := 1 + rnd.IntN(300)
		if i%50 == 0 {
			n = 4095
		}
		if i%7 == 0 {
			n = 4000 + rnd.IntN(96)
		}
		target := strings.Repeat(string(rune('a'+i%26)), n)
		specs = append(specs, spec{path: fmt.Sprintf("l%03d", i), meta: Meta{Mode: unix.S_IFLNK | 0o777}, target: target})
	}
	for i := range 150 {
		d := fmt.Sprintf("d%03d", i)
		m := Meta{Mode: unix.S_IFDIR | 0o755}
		if i%3 == 0 {
			m.Xattrs = map[string]string{"user.pad": strings.Repeat("p", rnd.IntN(200))}
		}
		specs = append(specs, spec{path: d, meta: m})
		for j := range rnd.IntN(200) {
			specs = append(specs, spec{path: fmt.Sprintf("%s/%s%d", d, strings.Repeat("n", rnd.IntN(30)), j), meta: Meta{Mode: unix.S_IFIFO | 0o644}})
		}
	}
	specs = append(specs,
		spec{path: "bigxattr", meta: Meta{Mode: unix.S_IFREG | 0o644, Xattrs: map[string]string{
			"user.big": string(randBytes(rnd, 10000)), "user.big2": string(randBytes(rnd, 65535))}}, data: []byte("z")},
		spec{path: "bigxattrdir", meta: Meta{Mode: unix.S_IFDIR | 0o755, Xattrs: map[string]string{"trusted.x": strings.Repeat("x", 4050)}}},
		spec{path: "bigxattrdir/f", meta: Meta{Mode: unix.S_IFREG | 0o644}, data: []byte("f")},
		spec{path: "bigxattrlink", meta: Meta{Mode: unix.S_IFLNK | 0o777, Xattrs: map[string]string{"trusted.x": strings.Repeat("x", 3000)}}, target: strings.Repeat("t", 2000)},
	)
	ti.build(specs)
	checkTree(t, ti.mount(), specs)
}

func TestHardLinks(t *testing.T) { forBlockSizes(t, testHardLinks) }

func testHardLinks(t *testing.T, bits uint8) {
	requireRoot(t)
	ti := newTestImageBits(t, bits)
	root := ti.Root()
	d := ti.mkdir(root, "d", Meta{Mode: 0o755})
	f := ti.file(root, "f", Meta{Mode: 0o640, Uid: 7}, []byte("linked contents"))
	if err := d.Link("g", f); err != nil {
		t.Fatal(err)
	}
	three := ti.file(root, "three", Meta{Mode: 0o644}, []byte("3"))
	for _, name := range []string{"t2", "t3"} {
		if err := root.Link(name, three); err != nil {
			t.Fatal(err)
		}
	}
	s, err := root.Symlink("s", "f", Meta{Mode: 0o777})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Link("s2", s); err != nil {
		t.Fatal(err)
	}
	if err := root.Link("dd", d); err == nil {
		t.Error("Link to a directory succeeded")
	}
	mnt := ti.mount()
	a, b := lstat(t, filepath.Join(mnt, "f")), lstat(t, filepath.Join(mnt, "d/g"))
	if a.Ino != b.Ino || a.Nlink != 2 || b.Nlink != 2 || a.Uid != 7 {
		t.Errorf("f: ino %d nlink %d; d/g: ino %d nlink %d", a.Ino, a.Nlink, b.Ino, b.Nlink)
	}
	if got, _ := os.ReadFile(filepath.Join(mnt, "d/g")); string(got) != "linked contents" {
		t.Errorf("d/g: %q", got)
	}
	for _, name := range []string{"three", "t2", "t3"} {
		if st := lstat(t, filepath.Join(mnt, name)); st.Nlink != 3 {
			t.Errorf("%s: nlink %d", name, st.Nlink)
		}
	}
	x, y := lstat(t, filepath.Join(mnt, "s")), lstat(t, filepath.Join(mnt, "d/s2"))
	if x.Ino != y.Ino || x.Nlink != 2 {
		t.Errorf("symlink links: %d/%d nlink %d", x.Ino, y.Ino, x.Nlink)
	}
	// Distinct inodes have distinct numbers.
	seen := map[uint64]string{}
	filepath.WalkDir(mnt, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		st := lstat(t, p)
		if st.Nlink == 1 || e.IsDir() {
			if prev, ok := seen[st.Ino]; ok {
				t.Errorf("%s and %s share inode %d", prev, p, st.Ino)
			}
			seen[st.Ino] = p
		}
		return nil
	})
}

func TestRemoveAndSetRoot(t *testing.T) { forBlockSizes(t, testRemoveAndSetRoot) }

func testRemoveAndSetRoot(t *testing.T, bits uint8) {
	requireRoot(t)
	ti := newTestImageBits(t, bits)
	root := ti.Root()
	top := ti.mkdir(root, "top", Meta{Mode: 0o700, Mtime: 5})
	sub := ti.mkdir(top, "sub", Meta{Mode: 0o755})
	ti.file(sub, "keep", Meta{Mode: 0o644}, []byte("keep"))
	gone := ti.mkdir(sub, "gone", Meta{Mode: 0o755})
	inner := ti.mkdir(gone, "inner", Meta{Mode: 0o755})
	deep := ti.file(inner, "deep", Meta{Mode: 0o644}, []byte("deep"))
	ti.file(sub, "rmfile", Meta{Mode: 0o644}, []byte("rm"))
	outside := ti.file(root, "outside", Meta{Mode: 0o644}, []byte("out"))
	if err := sub.Link("out-link", outside); err != nil {
		t.Fatal(err)
	}
	if err := sub.Link("deep-link", deep); err != nil {
		t.Fatal(err)
	}
	ti.file(top, "sibling", Meta{Mode: 0o644}, []byte("sibling"))

	if !sub.Remove("rmfile") || sub.Remove("rmfile") || sub.Remove("absent") {
		t.Error("Remove of a file")
	}
	if !sub.Remove("gone") {
		t.Error("Remove of a subtree")
	}
	if sub.Lookup("gone") != nil || sub.Lookup("rmfile") != nil {
		t.Error("removed entries still found")
	}
	if _, err := gone.Mkdir("x", Meta{}); !errors.Is(err, errRemoved) {
		t.Errorf("Mkdir in a removed directory: %v", err)
	}
	if _, _, err := ti.Create(inner, "x", Meta{}, 0, nil); !errors.Is(err, errRemoved) {
		t.Errorf("Create in a removed subdirectory: %v", err)
	}
	// The removed file still has a link (deep-link).
	if err := sub.Link("deep-link2", deep); err != nil {
		t.Errorf("Link to a still linked node: %v", err)
	}
	rm := ti.file(sub, "rm2", Meta{Mode: 0o644}, []byte("rm2"))
	sub.Remove("rm2")
	if err := sub.Link("rm2-link", rm); !errors.Is(err, errRemoved) {
		t.Errorf("Link to a removed node: %v", err)
	}
	if err := ti.SetRoot(deep); err == nil {
		t.Error("SetRoot of a file succeeded")
	}
	if err := ti.SetRoot(gone); !errors.Is(err, errRemoved) {
		t.Errorf("SetRoot of a removed dir: %v", err)
	}
	if err := ti.SetRoot(top); err != nil {
		t.Fatal(err)
	}
	if ti.Root() != root {
		t.Error("Root changed by SetRoot")
	}
	mnt := ti.mount()
	specs := []spec{
		{path: "sub", meta: Meta{Mode: unix.S_IFDIR | 0o755}},
		{path: "sub/keep", meta: Meta{Mode: unix.S_IFREG | 0o644}, data: []byte("keep")},
		{path: "sub/out-link", meta: Meta{Mode: unix.S_IFREG | 0o644}, data: []byte("out")},
		{path: "sub/deep-link", meta: Meta{Mode: unix.S_IFREG | 0o644}, data: []byte("deep")},
		{path: "sub/deep-link2", meta: Meta{Mode: unix.S_IFREG | 0o644}, data: []byte("deep")},
		{path: "sibling", meta: Meta{Mode: unix.S_IFREG | 0o644}, data: []byte("sibling")},
	}
	checkTree(t, mnt, specs)
	st := lstat(t, mnt)
	if st.Mode != unix.S_IFDIR|0o700 || st.Mtim.Sec != 5 || st.Nlink != 3 {
		t.Errorf("root: mode %#o mtime %d nlink %d", st.Mode, st.Mtim.Sec, st.Nlink)
	}
	// Links counted within the image only.
	if st := lstat(t, filepath.Join(mnt, "sub/out-link")); st.Nlink != 1 {
		t.Errorf("out-link: nlink %d, want 1", st.Nlink)
	}
	if st := lstat(t, filepath.Join(mnt, "sub/deep-link")); st.Nlink != 2 {
		t.Errorf("deep-link: nlink %d, want 2", st.Nlink)
	}
}

func TestRemovedRoot(t *testing.T) {
	ti := newTestImage(t)
	d := ti.mkdir(ti.Root(), "d", Meta{Mode: 0o755})
	if err := ti.SetRoot(d); err != nil {
		t.Fatal(err)
	}
	ti.Root().Remove("d")
	if _, err := ti.Close(); !errors.Is(err, errRemoved) {
		t.Errorf("Close with a removed root: %v", err)
	}
	if _, err := ti.Close(); !errors.Is(err, errClosed) {
		t.Errorf("second Close: %v", err)
	}
}
