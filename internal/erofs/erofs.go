// Package erofs builds uncompressed EROFS images, the read-only filesystem
// format the Linux kernel mounts directly from a regular file.
//
// A Writer keeps an in-memory tree of metadata (directories, symlinks,
// devices, hard links) while regular files' contents go straight into the
// image file's data area, which starts at byte 4096 whatever the block
// size: Writer.Create writes them as they arrive, each starting on a block
// boundary, and Writer.AddData takes contents someone else already put in
// the file (a tar written into it from byte 4096: tar contents are
// 512-byte aligned, so such an image has 512-byte blocks). Close then
// appends the directory and symlink blocks and the inode table after the
// last byte of file contents and writes the superblock into the first
// 4 KiB. The result is deterministic: the same calls give the same bytes.
//
// The layout is the plain one every kernel with EROFS reads: blocks of
// 512 bytes to 4 KiB (Options.BlockBits; 4 KiB by default), no
// compression, no shared xattrs, no superblock checksum, extended (64
// byte) inodes so every inode keeps its own mtime with nanoseconds. Small
// directories and symlink targets are stored inline after their inode
// (EROFS_INODE_FLAT_INLINE); larger ones get blocks of their own.
//
// A Writer and its Nodes are not safe for concurrent use.
package erofs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Meta is the status of a node.
type Meta struct {
	Mode      uint32            // file type bits (unix.S_IFMT) | permission bits (07777)
	Uid, Gid  uint32            // owner
	Mtime     int64             // seconds since the epoch
	MtimeNsec uint32            // nanoseconds, below 1e9
	Xattrs    map[string]string // full names: "user.x", "trusted.overlay.opaque", "security.capability", ...
}

// ErrExist is returned (wrapped with the name) when a name is already in
// the directory.
var ErrExist = errors.New("erofs: name already exists")

var (
	errBadName    = errors.New("erofs: invalid name")
	errNotDir     = errors.New("erofs: not a directory")
	errIsDir      = errors.New("erofs: is a directory")
	errBadKind    = errors.New("erofs: wrong node kind")
	errRemoved    = errors.New("erofs: node was removed")
	errForeign    = errors.New("erofs: node belongs to another writer")
	errClosed     = errors.New("erofs: writer is closed")
	errXattr      = errors.New("erofs: unsupported xattr")
	errBadMeta    = errors.New("erofs: invalid metadata")
	errBadSymlink = errors.New("erofs: invalid symlink target")
	errBadDev     = errors.New("erofs: device number out of range")
	errTooBig     = errors.New("erofs: image too large")
	errWrite      = errors.New("erofs: file contents not written as announced")
	errBadOffset  = errors.New("erofs: invalid data offset")
	errOptions    = errors.New("erofs: invalid options")
)

// dirThreshold is the number of entries from which a directory keeps an
// index map; smaller directories are searched linearly.
const dirThreshold = 32

// Options configure a Writer.
type Options struct {
	// BlockBits is the base-2 logarithm of the image's block size: 9
	// (512-byte blocks) to 12 (4 KiB blocks); 0 means 12. Every block
	// size keeps the data area at byte 4096.
	BlockBits uint8
}

// Writer builds one EROFS image in a file.
type Writer struct {
	f       *os.File
	fd      int
	bits    uint8 // block size bits
	bs      int64 // block size
	top     *Node // the tree's top, returned by Root
	root    *Node // the image's root (SetRoot)
	dataEnd int64 // end of the file contents written or referenced so far (bytes)
	pos     int64 // the file's position, as Create left it; -1 when unknown
	nodes   int   // nodes made, an upper bound of the image's inodes
	err     error // sticky error from SetMeta, reported by Close
	closed  bool
}

// Node is a file, directory, symlink or special file of the tree.
type Node struct {
	w      *Writer
	dir    *dirInfo // non-nil exactly for directories
	target string   // symlink target
	xattrs string   // encoded inline xattr entries, sorted by name
	size   int64    // regular file size
	mtime  int64
	mode   uint32 // type | permission bits
	uid    uint32
	gid    uint32
	nsec   uint32
	u      uint32 // first data block (regular file) or encoded rdev (device)
	links  uint32 // live directory entries naming a non-directory
	ord    uint32 // 1 + index in Close's node order; 0 = not in the image
	gone   bool   // removed (a directory), or a non-directory without links
}

type dirInfo struct {
	ents []dirent
	idx  map[string]int32 // name -> index in ents, for large directories
}

type dirent struct {
	name string
	node *Node
}

// NewWriter returns a Writer building an image of 4 KiB blocks in f: as
// NewWriterOpts with the default Options.
func NewWriter(f *os.File) *Writer {
	w, _ := NewWriterOpts(f, Options{})
	return w
}

// NewWriterOpts returns a Writer building an image in f, open for reading
// and writing. Before Close, the Writer writes to f only within Create
// (the contents its callback writes); it owns f's file position, which
// Create moves, until Close, and it never closes f. f may already hold, or
// be receiving from elsewhere, file contents that AddData refers to.
// Create writes after the end of all the contents the Writer knows of, so
// it must not be used while contents it has not been told of yet are
// still being written.
func NewWriterOpts(f *os.File, o Options) (*Writer, error) {
	bits := o.BlockBits
	if bits == 0 {
		bits = defaultBlockBits
	}
	if bits < minBlockBits || bits > maxBlockBits {
		return nil, fmt.Errorf("%w: BlockBits %d, want %d to %d", errOptions, o.BlockBits, minBlockBits, maxBlockBits)
	}
	w := &Writer{f: f, fd: int(f.Fd()), bits: bits, bs: 1 << bits, dataEnd: dataStart, pos: -1}
	w.top = &Node{w: w, dir: &dirInfo{}, mode: unix.S_IFDIR | 0o755}
	w.root = w.top
	w.nodes = 1
	return w, nil
}

// BlockSize returns the image's block size in bytes.
func (w *Writer) BlockSize() int64 { return w.bs }

// Root returns the top directory of the tree, which starts as
// Meta{Mode: S_IFDIR|0o755} owned by 0:0 with mtime 0. It stays the top of
// the tree the caller builds even after SetRoot picks another image root.
func (w *Writer) Root() *Node { return w.top }

// SetRoot makes directory n, anywhere in the tree, the root of the image.
// What is outside n is left out of the image (file contents already written
// stay as unreferenced blocks). Its ".." is itself.
func (w *Writer) SetRoot(n *Node) error {
	if w.closed {
		return errClosed
	}
	if n == nil || n.w != w {
		return errForeign
	}
	if n.dir == nil {
		return errNotDir
	}
	if n.gone {
		return errRemoved
	}
	w.root = n
	return nil
}

// Meta returns the node's status. The Xattrs map is a fresh copy (nil when
// the node has none).
func (n *Node) Meta() Meta {
	return Meta{
		Mode:      n.mode,
		Uid:       n.uid,
		Gid:       n.gid,
		Mtime:     n.mtime,
		MtimeNsec: n.nsec,
		Xattrs:    decodeXattrs(n.xattrs),
	}
}

// SetMeta replaces the node's owner, permission bits, mtime and xattrs. The
// type bits of m.Mode are ignored: a node keeps its type. SetMeta cannot
// fail; invalid metadata in m (an unsupported xattr name, nanoseconds of
// 1e9 or more) leaves the node unchanged and makes Close fail.
func (n *Node) SetMeta(m Meta) {
	xa, err := checkMeta(m)
	if err != nil {
		if n.w.err == nil {
			n.w.err = fmt.Errorf("SetMeta: %w", err)
		}
		return
	}
	n.setMeta(m, xa)
}

func (n *Node) setMeta(m Meta, xa string) {
	n.mode = n.mode&unix.S_IFMT | m.Mode&0o7777
	n.uid, n.gid = m.Uid, m.Gid
	n.mtime, n.nsec = m.Mtime, m.MtimeNsec
	n.xattrs = xa
}

// IsDir reports whether n is a directory.
func (n *Node) IsDir() bool { return n.dir != nil }

// Lookup returns the entry name of directory n, or nil when it is absent or
// n is not a directory.
func (n *Node) Lookup(name string) *Node {
	if n.dir == nil {
		return nil
	}
	if i := n.dir.find(name); i >= 0 {
		return n.dir.ents[i].node
	}
	return nil
}

// Remove drops the entry name from directory n: a directory goes with its
// whole subtree, a non-directory loses one link (it stays in the image
// while other entries name it). It reports false when the entry is absent.
func (n *Node) Remove(name string) bool {
	if n.dir == nil || n.w.closed {
		return false
	}
	d := n.dir
	i := d.find(name)
	if i < 0 {
		return false
	}
	child := d.ents[i].node
	last := len(d.ents) - 1
	if d.idx != nil {
		delete(d.idx, name)
		if i != last {
			d.idx[d.ents[last].name] = int32(i)
		}
	}
	d.ents[i] = d.ents[last]
	d.ents[last] = dirent{}
	d.ents = d.ents[:last]
	dropTree(child)
	return true
}

// dropTree accounts for one directory entry naming n going away.
func dropTree(n *Node) {
	stack := []*Node{n}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n.dir == nil {
			if n.links > 0 {
				n.links--
			}
			if n.links == 0 {
				n.gone = true
			}
			continue
		}
		n.gone = true
		for _, e := range n.dir.ents {
			stack = append(stack, e.node)
		}
	}
}

// Mkdir adds a directory. The type bits of m.Mode must be zero or S_IFDIR.
func (n *Node) Mkdir(name string, m Meta) (*Node, error) {
	c, err := n.newChild(name, m, unix.S_IFDIR)
	if err != nil {
		return nil, err
	}
	c.dir = &dirInfo{}
	n.dir.add(name, c)
	return c, nil
}

// Symlink adds a symbolic link to target (non-empty, without NUL, shorter
// than 4096 bytes whatever the block size). The type bits of m.Mode must
// be zero or S_IFLNK.
func (n *Node) Symlink(name, target string, m Meta) (*Node, error) {
	if target == "" || len(target) > maxSymlinkLen || strings.IndexByte(target, 0) >= 0 {
		return nil, fmt.Errorf("%w for %q", errBadSymlink, name)
	}
	c, err := n.newChild(name, m, unix.S_IFLNK)
	if err != nil {
		return nil, err
	}
	c.target = target
	n.dir.add(name, c)
	return c, nil
}

// Mknod adds a special file: m.Mode's type is S_IFCHR, S_IFBLK, S_IFIFO or
// S_IFSOCK, rdev is a device number as unix.Mkdev makes it (ignored for
// fifos and sockets; major below 4096, minor below 1<<20). A character
// device 0/0 is an overlayfs whiteout.
func (n *Node) Mknod(name string, m Meta, rdev uint64) (*Node, error) {
	typ := m.Mode & unix.S_IFMT
	switch typ {
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
	default:
		return nil, fmt.Errorf("%w: mknod %q with mode %#o", errBadKind, name, m.Mode)
	}
	var u uint32
	if typ == unix.S_IFCHR || typ == unix.S_IFBLK {
		major, minor := unix.Major(rdev), unix.Minor(rdev)
		if major >= 1<<12 || minor >= 1<<20 {
			return nil, fmt.Errorf("%w: %q %d:%d", errBadDev, name, major, minor)
		}
		// The kernel's new_encode_dev.
		u = minor&0xff | major<<8 | (minor&^0xff)<<12
	}
	c, err := n.newChild(name, m, typ)
	if err != nil {
		return nil, err
	}
	c.u = u
	n.dir.add(name, c)
	return c, nil
}

// Link adds a hard link name to target, a non-directory node of the same
// Writer still in the tree: the same inode, one more link.
func (n *Node) Link(name string, target *Node) error {
	if err := n.canAdd(name); err != nil {
		return err
	}
	if target == nil || target.w != n.w {
		return fmt.Errorf("%w: link %q", errForeign, name)
	}
	if target.dir != nil {
		return fmt.Errorf("%w: link %q", errIsDir, name)
	}
	if target.gone {
		return fmt.Errorf("%w: link %q to it", errRemoved, name)
	}
	target.links++
	n.dir.add(name, target)
	return nil
}

// Create adds a regular file of size bytes to directory parent. write must
// write exactly size bytes to fd at fd's current file position (with
// write(2), or copy_file_range/splice with a nil destination offset) and
// return how many it wrote: Create first moves the position to the first
// block boundary after every file's contents so far (written by Create or
// referenced by AddData) unless it is there already, calls write with that
// offset (not when
// size is 0 and write is nil), then checks the count. The Writer keeps
// track of the position itself (a file of many small files costs no seek
// per file); after a failed write it asks the file. It returns the node and
// the byte offset in the image where the contents start; they can be read
// back with pread at that offset while later files are being added. The
// type bits of m.Mode must be zero or S_IFREG.
func (w *Writer) Create(parent *Node, name string, m Meta, size int64, write func(fd int, off int64) (int64, error)) (*Node, int64, error) {
	if w.closed {
		return nil, 0, errClosed
	}
	if parent == nil || parent.w != w {
		return nil, 0, fmt.Errorf("%w: create %q", errForeign, name)
	}
	if size < 0 || (write == nil && size != 0) {
		return nil, 0, fmt.Errorf("%w: create %q with size %d", errBadMeta, name, size)
	}
	c, err := parent.newChild(name, m, unix.S_IFREG)
	if err != nil {
		return nil, 0, err
	}
	off := roundUp(w.dataEnd, w.bs)
	if (off+size+w.bs-1)/w.bs > maxBlocks {
		return nil, 0, fmt.Errorf("%w: create %q", errTooBig, name)
	}
	if write != nil {
		if w.pos != off {
			if _, err := unix.Seek(w.fd, off, unix.SEEK_SET); err != nil {
				w.pos = -1
				return nil, 0, fmt.Errorf("erofs: create %q: seek: %w", name, err)
			}
			w.pos = off
		}
		n, werr := write(w.fd, off)
		if werr != nil {
			// How far it got is the file's to say.
			w.pos = -1
			if pos, err := unix.Seek(w.fd, 0, unix.SEEK_CUR); err == nil {
				w.pos = pos
				// Whatever was written stays out of later files' way.
				w.dataEnd = max(w.dataEnd, pos)
			}
			return nil, 0, fmt.Errorf("erofs: create %q: %w", name, werr)
		}
		w.pos = off + n
		w.dataEnd = max(w.dataEnd, w.pos)
		if n != size {
			return nil, 0, fmt.Errorf("%w: %q: %d bytes announced, %d written", errWrite, name, size, n)
		}
	}
	if size > 0 {
		c.u = uint32(off / w.bs)
		w.dataEnd = max(w.dataEnd, off+size)
	}
	c.size = size
	parent.dir.add(name, c)
	return c, off, nil
}

// AddData adds a regular file of size bytes to directory parent whose
// contents are already in the image file, or are being written there by
// someone else, at byte offset off: a multiple of the block size, at least
// 4096 (the data area's start). off is ignored when size is 0. The Writer
// never writes in [off, off+size): Close puts what it writes after the end
// of every file's contents. The bytes from off+size to the end of the last
// block are read with the file's last block (a mmap of the file shows
// them past its end), so they should be zeros, as a tar's padding is.
// Several files may share contents. The type bits of m.Mode must be zero
// or S_IFREG.
func (w *Writer) AddData(parent *Node, name string, m Meta, size int64, off int64) (*Node, error) {
	if w.closed {
		return nil, errClosed
	}
	if parent == nil || parent.w != w {
		return nil, fmt.Errorf("%w: add %q", errForeign, name)
	}
	if size < 0 {
		return nil, fmt.Errorf("%w: add %q with size %d", errBadMeta, name, size)
	}
	if size > 0 {
		if off < dataStart || off%w.bs != 0 {
			return nil, fmt.Errorf("%w: %q at %d, want a multiple of %d from %d on", errBadOffset, name, off, w.bs, dataStart)
		}
		if off > math.MaxInt64-size-w.bs || (off+size+w.bs-1)/w.bs > maxBlocks {
			return nil, fmt.Errorf("%w: %q: %d bytes at %d", errTooBig, name, size, off)
		}
	}
	c, err := parent.newChild(name, m, unix.S_IFREG)
	if err != nil {
		return nil, err
	}
	if size > 0 {
		c.u = uint32(off / w.bs)
		w.dataEnd = max(w.dataEnd, off+size)
	}
	c.size = size
	parent.dir.add(name, c)
	return c, nil
}

// newChild checks that name can be added to n and returns a new node of
// type typ with metadata m (not yet added; one link unless a directory).
func (n *Node) newChild(name string, m Meta, typ uint32) (*Node, error) {
	if err := n.canAdd(name); err != nil {
		return nil, err
	}
	if t := m.Mode & unix.S_IFMT; t != 0 && t != typ {
		return nil, fmt.Errorf("%w: %q with mode %#o", errBadKind, name, m.Mode)
	}
	xa, err := checkMeta(m)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	c := &Node{w: n.w, mode: typ}
	if typ != unix.S_IFDIR {
		c.links = 1 // a directory's count comes from its subdirectories
	}
	n.w.nodes++
	c.setMeta(m, xa)
	return c, nil
}

// canAdd checks that n is a live directory of an open writer without an
// entry name, and that name is valid.
func (n *Node) canAdd(name string) error {
	if n == nil {
		return errNotDir
	}
	if n.w.closed {
		return errClosed
	}
	if err := checkName(name); err != nil {
		return err
	}
	if n.dir == nil {
		return fmt.Errorf("%w: adding %q", errNotDir, name)
	}
	if n.gone {
		return fmt.Errorf("%w: adding %q", errRemoved, name)
	}
	if n.dir.find(name) >= 0 {
		return fmt.Errorf("%q: %w", name, ErrExist)
	}
	return nil
}

func checkName(name string) error {
	switch {
	case name == "", name == ".", name == "..", len(name) > maxNameLen,
		strings.IndexByte(name, '/') >= 0, strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("%w: %q", errBadName, name)
	}
	return nil
}

func checkMeta(m Meta) (string, error) {
	if m.MtimeNsec >= 1e9 {
		return "", fmt.Errorf("%w: mtime nanoseconds %d", errBadMeta, m.MtimeNsec)
	}
	return encodeXattrs(m.Xattrs)
}

func (d *dirInfo) find(name string) int {
	if d.idx != nil {
		if i, ok := d.idx[name]; ok {
			return int(i)
		}
		return -1
	}
	for i := range d.ents {
		if d.ents[i].name == name {
			return i
		}
	}
	return -1
}

func (d *dirInfo) add(name string, n *Node) {
	d.ents = append(d.ents, dirent{name, n})
	if d.idx != nil {
		d.idx[name] = int32(len(d.ents) - 1)
	} else if len(d.ents) > dirThreshold {
		d.idx = make(map[string]int32, 2*len(d.ents))
		for i, e := range d.ents {
			d.idx[e.name] = int32(i)
		}
	}
}

func roundUp(x, to int64) int64 { return (x + to - 1) / to * to }
