package erofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
		ents, err := os.ReadDir(filepath.Join(mnt, dir))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
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
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, sorted) {
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
	_, off, err := ti.Create(ti.Root(), "copied", Meta{Mode: 0o644}, int64(len(srcData)), func(fd int) error {
		var soff int64
		for soff < int64(len(srcData)) {
			n, err := unix.CopyFileRange(int(src.Fd()), &soff, fd, nil, len(srcData)-int(soff), 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return errors.New("short copy")
			}
		}
		return nil
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
	if _, _, err := ti.Create(ti.Root(), "fail", Meta{}, 1, func(int) error { return boom }); !errors.Is(err, boom) {
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
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
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
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
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
