package erofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/testutil"
)

// requireRoot: see testutil.RequireRoot.
func requireRoot(t testing.TB) { testutil.RequireRoot(t, "mounts") }

// writeBytes returns a Create callback writing b with write(2).
func writeBytes(b []byte) func(fd int, off int64) (int64, error) {
	return func(fd int, _ int64) (int64, error) {
		var done int64
		for len(b) > 0 {
			n, err := unix.Write(fd, b)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return done, err
			}
			b = b[n:]
			done += int64(n)
		}
		return done, nil
	}
}

// blockBitsTested are the block sizes the layout tests run with: 4 KiB
// (NewWriter's) and 512 bytes (an image around a tar).
var blockBitsTested = []uint8{12, 9}

// forBlockSizes runs test as a subtest for each of blockBitsTested.
func forBlockSizes(t *testing.T, test func(t *testing.T, bits uint8)) {
	for _, bits := range blockBitsTested {
		t.Run(fmt.Sprintf("block%d", 1<<bits), func(t *testing.T) { test(t, bits) })
	}
}

// testImage is an image under construction in a temporary directory.
type testImage struct {
	t    *testing.T
	f    *os.File
	path string
	bs   int64
	*Writer
}

// newTestImage starts an image of 4 KiB blocks (NewWriter).
func newTestImage(t *testing.T) *testImage {
	t.Helper()
	ti := newTestFile(t)
	ti.Writer = NewWriter(ti.f)
	ti.bs = ti.BlockSize()
	return ti
}

// newTestImageBits starts an image of 1<<bits byte blocks (NewWriterOpts).
func newTestImageBits(t *testing.T, bits uint8) *testImage {
	t.Helper()
	ti := newTestFile(t)
	w, err := NewWriterOpts(ti.f, Options{BlockBits: bits})
	if err != nil {
		t.Fatal(err)
	}
	ti.Writer, ti.bs = w, w.BlockSize()
	return ti
}

// newTestFile makes the image file, without a Writer yet.
func newTestFile(t *testing.T) *testImage {
	t.Helper()
	path := filepath.Join(t.TempDir(), "layer.erofs")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &testImage{t: t, f: f, path: path}
}

// file adds a regular file with contents data.
func (ti *testImage) file(parent *Node, name string, m Meta, data []byte) *Node {
	ti.t.Helper()
	n, off, err := ti.Create(parent, name, m, int64(len(data)), writeBytes(data))
	if err != nil {
		ti.t.Fatalf("Create %q: %v", name, err)
	}
	if len(data) > 0 {
		got := make([]byte, len(data))
		if _, err := unix.Pread(int(ti.f.Fd()), got, off); err != nil {
			ti.t.Fatalf("pread %q: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			ti.t.Fatalf("pread %q at %d: contents differ", name, off)
		}
	}
	return n
}

func (ti *testImage) mkdir(parent *Node, name string, m Meta) *Node {
	ti.t.Helper()
	n, err := parent.Mkdir(name, m)
	if err != nil {
		ti.t.Fatalf("Mkdir %q: %v", name, err)
	}
	return n
}

// close closes the writer and checks the image size.
func (ti *testImage) close() {
	ti.t.Helper()
	size, err := ti.Close()
	if err != nil {
		ti.t.Fatalf("Close: %v", err)
	}
	st, err := ti.f.Stat()
	if err != nil {
		ti.t.Fatal(err)
	}
	if st.Size() != size || size%ti.bs != 0 {
		ti.t.Fatalf("Close returned size %d, file has %d bytes", size, st.Size())
	}
}

// mount closes the writer and mounts the image; the mount goes away when
// the test ends.
func (ti *testImage) mount() string {
	ti.t.Helper()
	ti.close()
	return mountImage(ti.t, ti.path)
}

func mountImage(t *testing.T, path string) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	if err := Mount(path, dir); err != nil {
		t.Fatalf("%v (dmesg: %s)", err, dmesgTail())
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// dmesgTail returns the kernel log's last lines, to explain a refused
// image.
func dmesgTail() string {
	buf := make([]byte, 1<<16)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(buf[:n], []byte("\n"))
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func lstat(t *testing.T, path string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat: %v", err)
	}
	return &st
}

func lgetxattr(t *testing.T, path, name string) string {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		t.Fatalf("lgetxattr %s %s: %v", path, name, err)
	}
	return string(buf[:n])
}

// listxattr returns the names of path's xattrs.
func listxattr(t *testing.T, path string) []string {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		t.Fatalf("llistxattr %s: %v", path, err)
	}
	var names []string
	for _, b := range bytes.Split(buf[:n], []byte{0}) {
		if len(b) > 0 {
			names = append(names, string(b))
		}
	}
	return names
}

// imageReader parses an image independently of the kernel, to check the
// layout choices that reading through a mount cannot see.
type imageReader struct {
	t    *testing.T
	b    []byte
	bs   int64 // block size
	meta int64 // byte offset of the metadata area
	root uint64
}

// rinode is an inode as read back.
type rinode struct {
	nid    uint64
	off    int64
	layout int
	xsize  int64 // inline xattr body size
	mode   uint32
	size   int64
	u      uint32
	nlink  uint32
}

func readImage(t *testing.T, path string) *imageReader {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sb := b[superOffset:]
	le := binary.LittleEndian
	bits := sb[12]
	if le.Uint32(sb) != superMagic || bits < minBlockBits || bits > maxBlockBits || int64(le.Uint32(sb[36:]))<<bits != int64(len(b)) {
		t.Fatalf("bad superblock: magic %#x blkszbits %d blocks %d, file %d bytes", le.Uint32(sb), bits, le.Uint32(sb[36:]), len(b))
	}
	return &imageReader{t: t, b: b, bs: 1 << bits, meta: int64(le.Uint32(sb[40:])) << bits, root: uint64(le.Uint16(sb[14:]))}
}

func (r *imageReader) inode(nid uint64) rinode {
	le := binary.LittleEndian
	off := r.meta + int64(nid)*inodeAlign
	b := r.b[off:]
	format := le.Uint16(b)
	if format&1 != 1 {
		r.t.Fatalf("nid %d: not an extended inode (i_format %#x)", nid, format)
	}
	in := rinode{nid: nid, off: off, layout: int(format >> 1 & 7), mode: uint32(le.Uint16(b[4:])),
		size: int64(le.Uint64(b[8:])), u: le.Uint32(b[16:]), nlink: le.Uint32(b[44:])}
	if ic := le.Uint16(b[2:]); ic > 0 {
		in.xsize = xattrHdr + 4*int64(ic-1)
	}
	return in
}

// data returns the contents of a directory or symlink inode.
func (r *imageReader) data(in rinode) []byte {
	start := int64(in.u) * r.bs
	switch in.layout {
	case flatPlain:
		return r.b[start : start+in.size]
	case flatInline:
		tail := in.size % r.bs
		full := in.size - tail
		if end := in.off + inodeSize + in.xsize + tail; (end-1)/r.bs != (in.off+inodeSize+in.xsize)/r.bs {
			r.t.Fatalf("nid %d: inline tail crosses a block boundary", in.nid)
		}
		d := append([]byte(nil), r.b[start:start+full]...)
		at := in.off + inodeSize + in.xsize
		return append(d, r.b[at:at+tail]...)
	}
	r.t.Fatalf("nid %d: layout %d", in.nid, in.layout)
	return nil
}

// entries parses a directory's dirent blocks, checking they are sorted.
func (r *imageReader) entries(in rinode) (names []string, nids []uint64) {
	le := binary.LittleEndian
	d := r.data(in)
	for len(d) > 0 {
		blk := d[:min(int64(len(d)), r.bs)]
		d = d[len(blk):]
		n := int(le.Uint16(blk[8:])) / direntSize
		for i := range n {
			nameoff := int(le.Uint16(blk[i*direntSize+8:]))
			end := len(blk)
			if i+1 < n {
				end = int(le.Uint16(blk[(i+1)*direntSize+8:]))
			} else if z := bytes.IndexByte(blk[nameoff:], 0); z >= 0 {
				end = nameoff + z
			}
			names = append(names, string(blk[nameoff:end]))
			nids = append(nids, le.Uint64(blk[i*direntSize:]))
		}
	}
	if !slices.IsSorted(names) {
		r.t.Errorf("nid %d: entries not sorted", in.nid)
	}
	return names, nids
}

// lookup resolves a slash-separated path from the image root.
func (r *imageReader) lookup(p string) rinode {
	in := r.inode(r.root)
	if p == "" {
		return in
	}
	for _, name := range strings.Split(p, "/") {
		names, nids := r.entries(in)
		i, ok := slices.BinarySearch(names, name)
		if !ok {
			r.t.Fatalf("lookup %q: no %q", p, name)
		}
		in = r.inode(nids[i])
	}
	return in
}

// mountAllowed reports whether a test that also runs without root should
// go on to mount: as root, or in CI (where mountImage fails without root).
func mountAllowed() bool {
	return os.Geteuid() == 0 || os.Getenv("CI") == "true"
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dirNames returns the names in directory dir, as readdir gives them.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
