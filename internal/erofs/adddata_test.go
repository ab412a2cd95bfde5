package erofs

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func fileSize(t *testing.T, f *os.File) int64 {
	t.Helper()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// checkHead checks the image's first 4 KiB: zeros but for the superblock.
func checkHead(t *testing.T, img []byte) {
	t.Helper()
	for i, c := range img[:dataStart] {
		if c != 0 && (i < superOffset || i >= superOffset+superSize) {
			t.Fatalf("byte %d of the first 4 KiB is %#x", i, c)
		}
	}
}

// countingReader counts the bytes read through it: after tar.Reader.Next
// the count is the offset of the entry's contents.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

const xattrPAX = "SCHILY.xattr."

// writeTar writes specs (and hard links: name -> target) as a tar to w.
func writeTar(t *testing.T, w io.Writer, specs []spec, hardLinks [][2]string) {
	t.Helper()
	tw := tar.NewWriter(w)
	for _, s := range specs {
		m := s.meta
		hdr := &tar.Header{Name: s.path, Mode: int64(m.Mode & 0o7777), Uid: int(m.Uid), Gid: int(m.Gid),
			ModTime: time.Unix(m.Mtime, int64(m.MtimeNsec)), Format: tar.FormatPAX}
		for k, v := range m.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[xattrPAX+k] = v
		}
		switch m.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag, hdr.Name = tar.TypeDir, s.path+"/"
		case unix.S_IFREG:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(s.data))
		case unix.S_IFLNK:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, s.target
		case unix.S_IFCHR:
			hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeChar, int64(unix.Major(s.rdev)), int64(unix.Minor(s.rdev))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			t.Fatalf("%s: mode %#o", s.path, m.Mode)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(s.data); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range hardLinks {
		if err := tw.WriteHeader(&tar.Header{Name: l[0], Typeflag: tar.TypeLink, Linkname: l[1], Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// addTar parses the tar in ti's file from byte dataStart on and adds its
// entries to the tree, regular files with AddData at their contents'
// offsets. It returns the end of the contents (the data end).
func (ti *testImage) addTar() int64 {
	t := ti.t
	t.Helper()
	cr := &countingReader{r: io.NewSectionReader(ti.f, dataStart, fileSize(t, ti.f)-dataStart)}
	tr := tar.NewReader(cr)
	dataEnd := int64(dataStart)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dataEnd
		}
		if err != nil {
			t.Fatal(err)
		}
		off := dataStart + cr.n
		name := strings.TrimSuffix(hdr.Name, "/")
		dir, base := path.Split(name)
		parent := ti.lookup(strings.TrimSuffix(dir, "/"))
		m := Meta{Mode: uint32(hdr.Mode) & 0o7777, Uid: uint32(hdr.Uid), Gid: uint32(hdr.Gid),
			Mtime: hdr.ModTime.Unix(), MtimeNsec: uint32(hdr.ModTime.Nanosecond())}
		for k, v := range hdr.PAXRecords {
			if x, ok := strings.CutPrefix(k, xattrPAX); ok {
				if m.Xattrs == nil {
					m.Xattrs = map[string]string{}
				}
				m.Xattrs[x] = v
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			_, err = parent.Mkdir(base, m)
		case tar.TypeReg:
			if off%512 != 0 {
				t.Fatalf("%s: contents at %d", name, off)
			}
			// The contents are where the parse says.
			want, rerr := io.ReadAll(tr)
			if rerr != nil {
				t.Fatal(rerr)
			}
			got := make([]byte, len(want))
			if _, perr := ti.f.ReadAt(got, off); perr != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: contents not at %d (%v)", name, off, perr)
			}
			_, err = ti.AddData(parent, base, m, hdr.Size, off)
			if hdr.Size > 0 {
				dataEnd = max(dataEnd, off+hdr.Size)
			}
		case tar.TypeSymlink:
			_, err = parent.Symlink(base, hdr.Linkname, m)
		case tar.TypeLink:
			err = parent.Link(base, ti.lookup(hdr.Linkname))
		case tar.TypeChar:
			_, err = parent.Mknod(base, Meta{Mode: unix.S_IFCHR | m.Mode, Uid: m.Uid, Gid: m.Gid, Mtime: m.Mtime, MtimeNsec: m.MtimeNsec, Xattrs: m.Xattrs},
				unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		case tar.TypeFifo:
			_, err = parent.Mknod(base, Meta{Mode: unix.S_IFIFO | m.Mode, Uid: m.Uid, Gid: m.Gid, Mtime: m.Mtime, MtimeNsec: m.MtimeNsec, Xattrs: m.Xattrs}, 0)
		default:
			t.Fatalf("%s: type %c", name, hdr.Typeflag)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestAddDataTar makes an image of 512-byte blocks around a tar: the tar
// is written into the image file from byte 4096 (through a descriptor of
// its own, as another process would), parsed back for each file's
// contents offset, and the files added with AddData. The writer writes
// nothing before Close, Close leaves the tar's bytes alone, and every file
// reads back through the kernel.
func TestAddDataTar(t *testing.T) {
	rnd := rand.New(rand.NewPCG(9, 10))
	const (
		dir = unix.S_IFDIR
		reg = unix.S_IFREG
		lnk = unix.S_IFLNK
	)
	specs := []spec{
		{path: "etc", meta: Meta{Mode: dir | 0o755, Mtime: 1700000000, MtimeNsec: 5}},
		{path: "etc/empty", meta: Meta{Mode: reg | 0o600, Uid: 1000, Gid: 1000}},
		{path: "etc/one", meta: Meta{Mode: reg | 0o644, Mtime: 1700000001, MtimeNsec: 123456789}, data: []byte("x")},
		{path: "etc/passwd", meta: Meta{Mode: reg | 0o644}, data: []byte("root:x:0:0::/root:/bin/sh\n")},
		{path: "sizes", meta: Meta{Mode: dir | 0o700, Uid: 5, Gid: 6}},
	}
	for _, n := range []int{511, 512, 513, 1023, 4095, 4096, 4097, 100000, 1<<20 + 3} {
		specs = append(specs, spec{path: fmt.Sprintf("sizes/f%d", n), meta: Meta{Mode: reg | 0o644, Mtime: int64(n)}, data: randBytes(rnd, n)})
	}
	specs = append(specs,
		spec{path: strings.Repeat("d", 150), meta: Meta{Mode: dir | 0o755}},
		spec{path: strings.Repeat("d", 150) + "/" + strings.Repeat("n", 200), meta: Meta{Mode: reg | 0o755}, data: []byte("long path")},
		spec{path: "xattrs", meta: Meta{Mode: reg | 0o644, Xattrs: map[string]string{"user.a": "1", "trusted.overlay.opaque": "y", "security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}}, data: randBytes(rnd, 700)},
		spec{path: "opaque", meta: Meta{Mode: dir | 0o755, Xattrs: map[string]string{"trusted.overlay.opaque": "y"}}},
		spec{path: "opaque/whiteout", meta: Meta{Mode: unix.S_IFCHR}},
		spec{path: "opaque/fifo", meta: Meta{Mode: unix.S_IFIFO | 0o640}},
		spec{path: "link", meta: Meta{Mode: lnk | 0o777}, target: "etc/one"},
		spec{path: "longlink", meta: Meta{Mode: lnk | 0o777}, target: strings.Repeat("t/", 2047) + "x"},
	)
	hardLinks := [][2]string{{"etc/hard", "sizes/f4097"}, {"sizes/hard2", "etc/one"}}

	ti := newTestImageBits(t, 9)
	if size := fileSize(t, ti.f); size != 0 {
		t.Fatalf("NewWriterOpts wrote %d bytes", size)
	}
	// The "other process" writes the tar through a descriptor of its own.
	other, err := os.OpenFile(ti.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	writeTar(t, io.NewOffsetWriter(other, dataStart), specs, hardLinks)
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	tarred := readAll(t, ti.path)

	dataEnd := ti.addTar()
	if got := readAll(t, ti.path); !bytes.Equal(got, tarred) {
		t.Fatal("the writer wrote to the file before Close")
	}
	ti.close()
	img := readAll(t, ti.path)
	if !bytes.Equal(img[dataStart:dataEnd], tarred[dataStart:dataEnd]) {
		t.Fatal("Close changed the file contents")
	}
	checkHead(t, img)
	r := readImage(t, ti.path)
	if r.bs != 512 || r.meta < dataEnd {
		t.Fatalf("block size %d, metadata at %d, data end %d", r.bs, r.meta, dataEnd)
	}
	if in := r.lookup("longlink"); in.layout != flatPlain || in.size != 4095 || int64(in.u)*512 < dataEnd {
		t.Errorf("longlink: layout %d, size %d at block %d", in.layout, in.size, in.u)
	}

	if !mountAllowed() {
		return
	}
	mnt := mountImage(t, ti.path)
	all := append([]spec(nil), specs...)
	byPath := map[string]spec{}
	for _, s := range specs {
		byPath[s.path] = s
	}
	for _, l := range hardLinks {
		s := byPath[l[1]]
		s.path = l[0]
		all = append(all, s)
	}
	checkTree(t, mnt, all)
	for _, l := range hardLinks {
		a, b := lstat(t, filepath.Join(mnt, l[0])), lstat(t, filepath.Join(mnt, l[1]))
		if a.Ino != b.Ino || a.Nlink != 2 {
			t.Errorf("%s: ino %d nlink %d, %s: ino %d", l[0], a.Ino, a.Nlink, l[1], b.Ino)
		}
	}
}

// TestAddDataMixed mixes Create and AddData: Create writes after every
// contents the writer knows of, contents may be shared, and Close puts the
// metadata after the last of them.
func TestAddDataMixed(t *testing.T) { forBlockSizes(t, testAddDataMixed) }

func testAddDataMixed(t *testing.T, bits uint8) {
	rnd := rand.New(rand.NewPCG(11, uint64(bits)))
	ti := newTestImageBits(t, bits)
	fd := int(ti.f.Fd())
	root := ti.Root()
	files := map[string][]byte{}
	put := func(name string, data []byte, off int64) {
		t.Helper()
		if err := pwriteAll(fd, data, off); err != nil {
			t.Fatal(err)
		}
		if _, err := ti.AddData(root, name, Meta{Mode: 0o644}, int64(len(data)), off); err != nil {
			t.Fatalf("AddData %s: %v", name, err)
		}
		files[name] = data
	}
	create := func(name string, data []byte, after int64) int64 {
		t.Helper()
		_, off, err := ti.Create(root, name, Meta{Mode: 0o644}, int64(len(data)), writeBytes(data))
		if err != nil {
			t.Fatal(err)
		}
		if off%ti.bs != 0 || off < after {
			t.Fatalf("%s created at %d, want a block boundary from %d", name, off, after)
		}
		files[name] = data
		return off
	}
	put("pre", randBytes(rnd, 10000), dataStart)
	c1 := randBytes(rnd, 5000)
	off1 := create("created1", c1, dataStart+10000)
	farOff := int64(1 << 20)
	put("far", randBytes(rnd, 3000), farOff)
	off2 := create("created2", randBytes(rnd, 7000), farOff+3000)
	// Contents shared with a file made by Create, and an empty file.
	if _, err := ti.AddData(root, "shared", Meta{Mode: 0o600}, int64(len(c1)), off1); err != nil {
		t.Fatal(err)
	}
	files["shared"] = c1
	if _, err := ti.AddData(root, "empty", Meta{Mode: 0o644}, 0, -12345); err != nil {
		t.Fatalf("AddData of 0 bytes at a bad offset: %v", err)
	}
	files["empty"] = nil
	// Contents referenced below the data end move nothing.
	put("low", randBytes(rnd, 100), off1+roundUp(int64(len(c1)), ti.bs))
	dataEnd := off2 + 7000
	// Metadata of some size: a directory of many blocks and long symlinks.
	d := ti.mkdir(root, "d", Meta{Mode: 0o755})
	for i := range 300 {
		if _, err := d.Symlink(fmt.Sprintf("%s%d", strings.Repeat("s", 100), i), strings.Repeat("t", 1+i*13), Meta{Mode: 0o777}); err != nil {
			t.Fatal(err)
		}
	}
	before := readAll(t, ti.path)
	ti.close()
	img := readAll(t, ti.path)
	if !bytes.Equal(img[dataStart:dataEnd], before[dataStart:dataEnd]) {
		t.Fatal("Close changed the file contents")
	}
	checkHead(t, img)
	r := readImage(t, ti.path)
	if r.meta < dataEnd {
		t.Errorf("metadata at %d, data end %d", r.meta, dataEnd)
	}
	if in := r.lookup("d"); in.size <= ti.bs || int64(in.u)*ti.bs < dataEnd {
		t.Errorf("directory of %d bytes, blocks at block %d, data end %d", in.size, in.u, dataEnd)
	}
	if !mountAllowed() {
		return
	}
	mnt := mountImage(t, ti.path)
	for name, want := range files {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v; want %d", name, len(got), err, len(want))
		}
	}
	for i := range 300 {
		p := filepath.Join(mnt, "d", fmt.Sprintf("%s%d", strings.Repeat("s", 100), i))
		if got, err := os.Readlink(p); err != nil || got != strings.Repeat("t", 1+i*13) {
			t.Errorf("symlink %d: %d bytes, %v", i, len(got), err)
		}
	}
}

// TestCloseLeavesData fills the file with bytes (the first 4 KiB too, and
// past the data end), references some of them with AddData and checks
// that Close changes nothing from 4096 to the data end (nor the rest of
// the last data block), zeroes the rest of the first 4 KiB and truncates
// the file to the image.
func TestCloseLeavesData(t *testing.T) { forBlockSizes(t, testCloseLeavesData) }

func testCloseLeavesData(t *testing.T, bits uint8) {
	rnd := rand.New(rand.NewPCG(12, uint64(bits)))
	ti := newTestImageBits(t, bits)
	bs := ti.bs
	const total = 3<<20 + 777 // file contents (and garbage) from 0
	garbage := randBytes(rnd, total)
	if err := pwriteAll(int(ti.f.Fd()), garbage, 0); err != nil {
		t.Fatal(err)
	}
	files := map[string][2]int64{} // name -> offset, size
	var dataEnd int64
	for i, off := int64(0), int64(dataStart); off < 2<<20; i++ {
		size := rnd.Int64N(20000)
		name := fmt.Sprint("f", i)
		if _, err := ti.AddData(ti.Root(), name, Meta{Mode: 0o644}, size, off); err != nil {
			t.Fatal(err)
		}
		files[name] = [2]int64{off, size}
		dataEnd = max(dataEnd, off+size)
		off = roundUp(off+size+rnd.Int64N(3000), bs)
	}
	ti.build([]spec{{path: "dir", meta: Meta{Mode: unix.S_IFDIR | 0o755}}})
	for i := range 200 {
		if _, err := ti.lookup("dir").Symlink(fmt.Sprint(i), strings.Repeat("x", 1+i*20), Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	size, err := ti.Close()
	if err != nil {
		t.Fatal(err)
	}
	img := readAll(t, ti.path)
	if int64(len(img)) != size || size%bs != 0 || size < dataEnd {
		t.Fatalf("image %d bytes, file %d, data end %d", size, len(img), dataEnd)
	}
	if end := roundUp(dataEnd, bs); !bytes.Equal(img[dataStart:end], garbage[dataStart:end]) {
		t.Fatal("Close changed bytes below the data end")
	}
	checkHead(t, img)
	if !mountAllowed() {
		return
	}
	mnt := mountImage(t, ti.path)
	for name, f := range files {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, garbage[f[0]:f[0]+f[1]]) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestAddDataErrors(t *testing.T) {
	ti := newTestImageBits(t, 9)
	root := ti.Root()
	for _, off := range []int64{0, 512, 3584, 4095, 4096 + 100, -512, math.MinInt64} {
		if _, err := ti.AddData(root, "x", Meta{}, 1, off); !errors.Is(err, errBadOffset) {
			t.Errorf("AddData at %d: %v", off, err)
		}
	}
	if _, err := ti.AddData(root, "x", Meta{}, -1, dataStart); !errors.Is(err, errBadMeta) {
		t.Errorf("AddData of -1 bytes: %v", err)
	}
	for _, c := range [][2]int64{{1, math.MaxInt64 &^ 511}, {math.MaxInt64, dataStart}, {1, 512 << 32}, {4096, 512<<32 - 4096}} {
		if _, err := ti.AddData(root, "x", Meta{}, c[0], c[1]); !errors.Is(err, errTooBig) {
			t.Errorf("AddData of %d bytes at %d: %v", c[0], c[1], err)
		}
	}
	// The last block an image can have (before its metadata).
	last := newTestImageBits(t, 9)
	if _, err := last.AddData(last.Root(), "last", Meta{}, 512, 512<<32-1024); err != nil {
		t.Errorf("AddData of the last block: %v", err)
	}
	if _, err := ti.AddData(root, "x/y", Meta{}, 1, dataStart); !errors.Is(err, errBadName) {
		t.Errorf("AddData with a bad name: %v", err)
	}
	if _, err := ti.AddData(root, "x", Meta{Mode: unix.S_IFDIR}, 1, dataStart); !errors.Is(err, errBadKind) {
		t.Errorf("AddData of a directory: %v", err)
	}
	f, err := ti.AddData(root, "f", Meta{Mode: unix.S_IFREG | 0o644}, 1, dataStart+512)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ti.AddData(root, "f", Meta{}, 1, dataStart); !errors.Is(err, ErrExist) {
		t.Errorf("AddData of an existing name: %v", err)
	}
	if _, err := ti.AddData(f, "x", Meta{}, 1, dataStart); !errors.Is(err, errNotDir) {
		t.Errorf("AddData in a file: %v", err)
	}
	other := newTestImageBits(t, 9)
	if _, err := other.AddData(root, "x", Meta{}, 1, dataStart); !errors.Is(err, errForeign) {
		t.Errorf("AddData across writers: %v", err)
	}
	if _, err := other.AddData(nil, "x", Meta{}, 1, dataStart); !errors.Is(err, errForeign) {
		t.Errorf("AddData in nil: %v", err)
	}
	if root.Lookup("x") != nil {
		t.Error("a failed AddData added x")
	}
	// Failed calls did not move the data end: the next Create goes right
	// after f's contents.
	if _, off, err := ti.Create(root, "c", Meta{}, 1, writeBytes([]byte("c"))); err != nil || off != dataStart+1024 {
		t.Errorf("Create after failed AddData calls: at %d, %v", off, err)
	}
	// A 4 KiB writer takes 4 KiB-aligned contents only.
	ti4 := newTestImage(t)
	if _, err := ti4.AddData(ti4.Root(), "x", Meta{}, 1, dataStart+512); !errors.Is(err, errBadOffset) {
		t.Errorf("AddData at a 512-byte boundary with 4 KiB blocks: %v", err)
	}
	if _, err := ti4.AddData(ti4.Root(), "x", Meta{}, 1, 2*dataStart); err != nil {
		t.Errorf("AddData at 8192 with 4 KiB blocks: %v", err)
	}
	if _, err := ti.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ti.AddData(root, "late", Meta{}, 1, dataStart); !errors.Is(err, errClosed) {
		t.Errorf("AddData after Close: %v", err)
	}
}

// TestOptions checks the block sizes NewWriterOpts takes, and mounts an
// image of each size not tested elsewhere (1 and 2 KiB).
func TestOptions(t *testing.T) {
	for _, bits := range []uint8{1, 8, 13, 16, 255} {
		if _, err := NewWriterOpts(newTestFile(t).f, Options{BlockBits: bits}); !errors.Is(err, errOptions) {
			t.Errorf("BlockBits %d: %v", bits, err)
		}
	}
	for bits, bs := range map[uint8]int64{0: 4096, 9: 512, 10: 1024, 11: 2048, 12: 4096} {
		w, err := NewWriterOpts(newTestFile(t).f, Options{BlockBits: bits})
		if err != nil || w.BlockSize() != bs {
			t.Errorf("BlockBits %d: %v", bits, err)
		}
	}
	if NewWriter(newTestFile(t).f).BlockSize() != 4096 {
		t.Error("NewWriter: not 4 KiB blocks")
	}
	for _, bits := range []uint8{10, 11} {
		t.Run(fmt.Sprintf("block%d", 1<<bits), func(t *testing.T) {
			ti := newTestImageBits(t, bits)
			data := []byte(fmt.Sprint("at ", dataStart+ti.bs))
			if err := pwriteAll(int(ti.f.Fd()), data, dataStart+ti.bs); err != nil {
				t.Fatal(err)
			}
			specs := []spec{
				{path: "d", meta: Meta{Mode: unix.S_IFDIR | 0o755}},
				{path: "d/created", meta: Meta{Mode: unix.S_IFREG | 0o644}, data: []byte("created")},
				{path: "d/link", meta: Meta{Mode: unix.S_IFLNK | 0o777}, target: strings.Repeat("l", 4095)},
			}
			if _, err := ti.AddData(ti.Root(), "placed", Meta{Mode: 0o644}, int64(len(data)), dataStart+ti.bs); err != nil {
				t.Fatal(err)
			}
			ti.build(specs)
			if !mountAllowed() {
				ti.close()
				return
			}
			mnt := ti.mount()
			checkTree(t, mnt, append(specs, spec{path: "placed", meta: Meta{Mode: unix.S_IFREG | 0o644}, data: data}))
		})
	}
}

// TestManyFilesAddData is TestManyFiles for an image around a tar: 12,800
// files of 16 KiB, each after a 512-byte header, put in the file
// beforehand and added with AddData to an image of 512-byte blocks. It
// logs how long AddData and Close take.
func TestManyFilesAddData(t *testing.T) {
	ti := newTestImageBits(t, 9)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	const stride = 512 + 16384
	offset := func(i, j int) int64 { return dataStart + int64(i*128+j)*stride + 512 }
	// The "tar", written as the other process would (headers left out).
	stamped := append([]byte(nil), data...)
	wstart := time.Now()
	for i := range 100 {
		for j := range 128 {
			copy(stamped, fmt.Sprintf("%03d/%05d", i, j))
			if err := pwriteAll(int(ti.f.Fd()), stamped, offset(i, j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	written := time.Since(wstart)
	start := time.Now()
	for i := range 100 {
		d := ti.mkdir(ti.Root(), fmt.Sprintf("dir%03d", i), Meta{Mode: 0o755})
		for j := range 128 {
			if _, err := ti.AddData(d, fmt.Sprintf("file-%05d.dat", j), Meta{Mode: 0o644, Mtime: 1700000000}, int64(len(data)), offset(i, j)); err != nil {
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
	t.Logf("12,800 files of 16 KiB in place, 512-byte blocks: contents written %v (not the writer's), AddData %v, Close %v, image %d MiB",
		written, built.Sub(start), closed.Sub(built), size>>20)
	if !mountAllowed() {
		return
	}
	mnt := mountImage(t, ti.path)
	for _, f := range [][2]int{{0, 0}, {42, 77}, {99, 127}} {
		want := append([]byte(nil), data...)
		copy(want, fmt.Sprintf("%03d/%05d", f[0], f[1]))
		got, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("dir%03d", f[0]), fmt.Sprintf("file-%05d.dat", f[1])))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("read back %v: %v", f, err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "dir042"))
	if err != nil || len(ents) != 128 {
		t.Errorf("readdir: %d entries, %v", len(ents), err)
	}
}
