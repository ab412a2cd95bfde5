package erofs

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// On-disk constants, from the kernel's fs/erofs/erofs_fs.h, and the limits
// of this layout.
const (
	defaultBlockBits = 12
	minBlockBits     = 9  // the kernel takes 9 to PAGE_SHIFT
	maxBlockBits     = 12 // the smallest page size
	dataStart        = 4096
	maxBlocks        = math.MaxUint32
	maxNameLen       = 255  // EROFS_NAME_LEN
	maxSymlinkLen    = 4095 // what page_get_link reads: one page, NUL-terminated
	superOffset      = 1024
	superSize        = 128
	superMagic       = 0xE0F5E1E2

	inodeSize   = 64 // struct erofs_inode_extended
	inodeAlign  = 32 // nid = offset in the metadata area / 32
	direntSize  = 12 // struct erofs_dirent
	xattrHdr    = 12 // struct erofs_xattr_ibody_header
	xattrEntHdr = 4  // struct erofs_xattr_entry

	layoutExtended = 1 // EROFS_INODE_LAYOUT_EXTENDED, i_format bit 0
	flatPlain      = 0 // EROFS_INODE_FLAT_PLAIN
	flatInline     = 2 // EROFS_INODE_FLAT_INLINE

	ftRegFile = 1
	ftDir     = 2
	ftChrdev  = 3
	ftBlkdev  = 4
	ftFifo    = 5
	ftSock    = 6
	ftSymlink = 7

	writeBufSize = 4 << 20
)

// xattrPrefixes maps a name prefix to its EROFS_XATTR_INDEX_*. An exact
// prefix (the ACL names) only allows an empty suffix.
var xattrPrefixes = []struct {
	prefix string
	index  uint8
	exact  bool
}{
	{"user.", 1, false},
	{"system.posix_acl_access", 2, true},
	{"system.posix_acl_default", 3, true},
	{"trusted.", 4, false},
	{"security.", 6, false},
}

// encodeXattrs returns the inline xattr entries (each struct
// erofs_xattr_entry, name suffix and value, padded to 4 bytes), sorted by
// full name.
func encodeXattrs(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "", nil
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	var b []byte
	for _, name := range names {
		val := m[name]
		idx, suffix := uint8(0), ""
		for _, p := range xattrPrefixes {
			if p.exact && name == p.prefix || !p.exact && strings.HasPrefix(name, p.prefix) && len(name) > len(p.prefix) {
				idx, suffix = p.index, name[len(p.prefix):]
				break
			}
		}
		switch {
		case idx == 0:
			return "", fmt.Errorf("%w: name %q", errXattr, name)
		case len(suffix) > 255:
			return "", fmt.Errorf("%w: name %q too long", errXattr, name)
		case len(val) > math.MaxUint16:
			return "", fmt.Errorf("%w: value of %q is %d bytes", errXattr, name, len(val))
		}
		b = append(b, uint8(len(suffix)), idx)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(val)))
		b = append(b, suffix...)
		b = append(b, val...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	if (xattrHdr+len(b))/4 > math.MaxUint16 {
		return "", fmt.Errorf("%w: %d bytes of xattrs", errXattr, len(b))
	}
	return string(b), nil
}

// decodeXattrs inverts encodeXattrs.
func decodeXattrs(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := make(map[string]string)
	for len(s) >= xattrEntHdr {
		nlen := int(s[0])
		idx := s[1]
		vlen := int(s[2]) | int(s[3])<<8
		name := s[xattrEntHdr : xattrEntHdr+nlen]
		val := s[xattrEntHdr+nlen : xattrEntHdr+nlen+vlen]
		for _, p := range xattrPrefixes {
			if p.index == idx {
				m[p.prefix+name] = val
				break
			}
		}
		s = s[roundUp(int64(xattrEntHdr+nlen+vlen), 4):]
	}
	return m
}

// nodeInfo is what Close computes for a node of the image.
type nodeInfo struct {
	n      *Node
	nid    uint64
	size   int64  // i_size
	blk    uint32 // i_u.raw_blkaddr of a directory or symlink's blocks
	nlink  uint32
	tail   uint16 // bytes stored inline after the inode (FLAT_INLINE)
	parent uint32 // ord of the parent directory (directories)
}

// Close writes the directory and symlink blocks and the inode table after
// the end of every file's contents (written by Create or referenced by
// AddData), then the first 4 KiB (the superblock at byte 1024, zeros
// around it), truncates the file to a whole number of blocks and returns
// the image size. It writes nothing else: the bytes from 4096 to the end
// of the file contents stay as they are. It does not fsync or close the
// file. After Close, successful or not, the Writer is unusable.
func (w *Writer) Close() (int64, error) {
	if w.closed {
		return 0, errClosed
	}
	w.closed = true
	if w.err != nil {
		return 0, w.err
	}
	if w.root.gone {
		return 0, fmt.Errorf("%w: the image root", errRemoved)
	}

	// Order: breadth first from the root, each directory's entries sorted
	// by name. A hard-linked node comes once, where it is first reached.
	infos := make([]nodeInfo, 1, w.nodes)
	infos[0] = nodeInfo{n: w.root, parent: 1}
	w.root.ord = 1
	for i := 0; i < len(infos); i++ {
		d := infos[i].n.dir
		if d == nil {
			continue
		}
		d.idx = nil // not needed any more
		slices.SortFunc(d.ents, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
		subdirs := uint32(0)
		for _, e := range d.ents {
			c := e.node
			if c.ord != 0 {
				infos[c.ord-1].nlink++
				continue
			}
			if len(infos) >= math.MaxUint32 {
				return 0, fmt.Errorf("%w: too many inodes", errTooBig)
			}
			infos = append(infos, nodeInfo{n: c, nlink: 1, parent: uint32(i + 1)})
			c.ord = uint32(len(infos))
			if c.dir != nil {
				subdirs++
			}
		}
		infos[i].nlink = 2 + subdirs
	}

	// Sizes and where directory and symlink contents go: inline after the
	// inode when the tail fits in the inode's block, else blocks of their
	// own after the data area. A directory keeps its last partial block
	// inline when it fits (with whole blocks before it); a symlink is
	// inline only as a whole, else in blocks (EROFS_INODE_FLAT_PLAIN).
	bs := w.bs
	dirStart := roundUp(w.dataEnd, bs) / bs
	blk := dirStart
	var scratch []dirent
	for i := range infos {
		in := &infos[i]
		n := in.n
		var size int64
		switch {
		case n.dir != nil:
			scratch = withDots(scratch[:0], n.dir.ents, n, infos[in.parent-1].n)
			size = dirSize(scratch, bs)
		case n.mode&unix.S_IFMT == unix.S_IFLNK:
			size = int64(len(n.target))
		default:
			in.size = n.size
			continue
		}
		in.size = size
		tail := size % bs
		full := size / bs
		if tail == 0 || inodeSize+xattrBodySize(n)+tail > bs || n.dir == nil && full > 0 {
			full, tail = (size+bs-1)/bs, 0
		}
		in.tail = uint16(tail)
		if full > 0 {
			in.blk = uint32(blk)
			blk += full
		}
	}

	// Inodes, 32-byte aligned, each (when it can) within one block: an
	// inline tail must be in its inode's block. The first slot is left
	// empty so that no inode number is 0.
	metaStart := blk
	pos := int64(inodeAlign)
	for i := range infos {
		in := &infos[i]
		isize := inodeSize + xattrBodySize(in.n) + int64(in.tail)
		if pos%bs+isize > bs && isize <= bs {
			pos = roundUp(pos, bs)
		}
		in.nid = uint64(pos / inodeAlign)
		pos = roundUp(pos+isize, inodeAlign)
	}
	if infos[0].nid > math.MaxUint16 {
		return 0, fmt.Errorf("%w: root nid %d", errTooBig, infos[0].nid)
	}
	metaBlocks := (pos + bs - 1) / bs
	total := metaStart + metaBlocks
	if total > maxBlocks {
		return 0, fmt.Errorf("%w: %d blocks", errTooBig, total)
	}

	// Write the directory/symlink blocks, then the metadata area, through
	// one buffer.
	bufSize := min(writeBufSize, (total-dirStart)*bs)
	bw := &blockWriter{fd: w.fd, off: dirStart * bs, buf: make([]byte, 0, bufSize)}
	for i := range infos {
		in := &infos[i]
		n := in.n
		if in.size == 0 || n.mode&unix.S_IFMT == unix.S_IFREG || in.size <= int64(in.tail) {
			continue
		}
		if n.dir != nil {
			scratch = withDots(scratch[:0], n.dir.ents, n, infos[in.parent-1].n)
			end := in.size - int64(in.tail) // bytes that go to blocks
			var off int64
			forDirBlocks(scratch, bs, func(blkEnts []dirent, used int) bool {
				if off >= end {
					return false
				}
				bw.buf = appendDirBlock(bw.buf, blkEnts, infos)
				bw.pad(bs)
				off += bs
				return true
			})
		} else {
			bw.buf = append(bw.buf, n.target...)
			bw.pad(bs)
		}
		if err := bw.flushIfFull(); err != nil {
			return 0, err
		}
	}
	if bw.written() != metaStart*bs {
		return 0, fmt.Errorf("erofs: internal error: directory area ends at %d, want %d", bw.written(), metaStart*bs)
	}
	for i := range infos {
		in := &infos[i]
		n := in.n
		at := metaStart*bs + int64(in.nid)*inodeAlign
		bw.zeroTo(at)
		bw.buf = appendInode(bw.buf, in, uint32(i+1))
		if n.xattrs != "" {
			bw.buf = binary.LittleEndian.AppendUint32(bw.buf, 0) // h_name_filter
			bw.buf = append(bw.buf, make([]byte, 8)...)          // h_shared_count, reserved
			bw.buf = append(bw.buf, n.xattrs...)
		}
		if in.tail > 0 {
			if n.dir != nil {
				scratch = withDots(scratch[:0], n.dir.ents, n, infos[in.parent-1].n)
				var last []dirent
				forDirBlocks(scratch, bs, func(blkEnts []dirent, used int) bool {
					last = blkEnts
					return true
				})
				bw.buf = appendDirBlock(bw.buf, last, infos)
			} else {
				bw.buf = append(bw.buf, n.target...)
			}
		}
		if err := bw.flushIfFull(); err != nil {
			return 0, err
		}
	}
	bw.zeroTo(total * bs)
	if err := bw.flush(); err != nil {
		return 0, err
	}

	// The first 4 KiB, below the data area: struct erofs_super_block at
	// 1024, zeros around it. Every field not set here is zero: no
	// checksum, no compat or incompat features, no shared xattrs, build
	// time 0, zero uuid and volume name, dirblkbits 0 (directory blocks
	// are filesystem blocks, the only size the kernel takes).
	head := make([]byte, dataStart)
	sb := head[superOffset : superOffset+superSize]
	le := binary.LittleEndian
	le.PutUint32(sb[0:], superMagic)
	sb[12] = w.bits                             // blkszbits
	le.PutUint16(sb[14:], uint16(infos[0].nid)) // root_nid
	le.PutUint64(sb[16:], uint64(len(infos)))   // inos
	le.PutUint32(sb[36:], uint32(total))        // blocks
	le.PutUint32(sb[40:], uint32(metaStart))    // meta_blkaddr, in blocks
	if err := pwriteAll(w.fd, head, 0); err != nil {
		return 0, err
	}
	if err := unix.Ftruncate(w.fd, total*bs); err != nil {
		return 0, fmt.Errorf("erofs: truncate image: %w", err)
	}
	return total * bs, nil
}

// xattrBodySize is the size of n's inline xattr body (header included).
func xattrBodySize(n *Node) int64 {
	if n.xattrs == "" {
		return 0
	}
	return xattrHdr + int64(len(n.xattrs))
}

// withDots appends ents plus "." (self) and ".." (parent), sorted by name,
// to dst. ents must be sorted.
func withDots(dst, ents []dirent, self, parent *Node) []dirent {
	// "." and ".." sort next to each other; find where.
	i, _ := slices.BinarySearchFunc(ents, ".", func(e dirent, t string) int { return strings.Compare(e.name, t) })
	j, _ := slices.BinarySearchFunc(ents, "..", func(e dirent, t string) int { return strings.Compare(e.name, t) })
	dst = append(dst, ents[:i]...)
	dst = append(dst, dirent{".", self})
	dst = append(dst, ents[i:j]...)
	dst = append(dst, dirent{"..", parent})
	return append(dst, ents[j:]...)
}

// forDirBlocks splits the sorted entries into directory blocks of bs
// bytes, greedily, and calls fn with each block's entries and used bytes
// until fn returns false.
func forDirBlocks(ents []dirent, bs int64, fn func(blk []dirent, used int) bool) {
	start, used := 0, 0
	for i, e := range ents {
		need := direntSize + len(e.name)
		if i > start && int64(used+need) > bs {
			if !fn(ents[start:i], used) {
				return
			}
			start, used = i, 0
		}
		used += need
	}
	if len(ents) > start {
		fn(ents[start:], used)
	}
}

// dirSize is the i_size of a directory with these entries in blocks of bs
// bytes (all blocks full but the last).
func dirSize(ents []dirent, bs int64) int64 {
	var blocks, last int64
	forDirBlocks(ents, bs, func(_ []dirent, used int) bool {
		blocks++
		last = int64(used)
		return true
	})
	return (blocks-1)*bs + last
}

// appendDirBlock appends the used part of one directory block: the
// dirents, then the names without terminators.
func appendDirBlock(b []byte, ents []dirent, infos []nodeInfo) []byte {
	nameoff := len(ents) * direntSize
	for _, e := range ents {
		b = binary.LittleEndian.AppendUint64(b, infos[e.node.ord-1].nid)
		b = binary.LittleEndian.AppendUint16(b, uint16(nameoff))
		b = append(b, fileType(e.node.mode), 0)
		nameoff += len(e.name)
	}
	for _, e := range ents {
		b = append(b, e.name...)
	}
	return b
}

func fileType(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return ftRegFile
	case unix.S_IFDIR:
		return ftDir
	case unix.S_IFCHR:
		return ftChrdev
	case unix.S_IFBLK:
		return ftBlkdev
	case unix.S_IFIFO:
		return ftFifo
	case unix.S_IFSOCK:
		return ftSock
	case unix.S_IFLNK:
		return ftSymlink
	}
	return 0
}

// appendInode appends a struct erofs_inode_extended.
func appendInode(b []byte, in *nodeInfo, ino uint32) []byte {
	n := in.n
	le := binary.LittleEndian
	layout := uint16(flatPlain)
	if in.tail > 0 {
		layout = flatInline
	}
	b = le.AppendUint16(b, layoutExtended|layout<<1) // i_format
	icount := uint16(0)
	if n.xattrs != "" {
		icount = uint16(1 + len(n.xattrs)/4)
	}
	b = le.AppendUint16(b, icount)         // i_xattr_icount
	b = le.AppendUint16(b, uint16(n.mode)) // i_mode
	b = le.AppendUint16(b, 0)              // i_reserved
	b = le.AppendUint64(b, uint64(in.size))
	var u uint32
	switch n.mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFCHR, unix.S_IFBLK:
		u = n.u
	case unix.S_IFDIR, unix.S_IFLNK:
		u = in.blk
	}
	b = le.AppendUint32(b, u) // i_u
	b = le.AppendUint32(b, ino)
	b = le.AppendUint32(b, n.uid)
	b = le.AppendUint32(b, n.gid)
	b = le.AppendUint64(b, uint64(n.mtime))
	b = le.AppendUint32(b, n.nsec)
	b = le.AppendUint32(b, in.nlink)
	return append(b, make([]byte, 16)...) // i_reserved2
}

// blockWriter writes sequentially from off through a large buffer.
type blockWriter struct {
	fd  int
	off int64 // file offset of buf[0]
	buf []byte
}

func (bw *blockWriter) written() int64 { return bw.off + int64(len(bw.buf)) }

// pad appends zeros up to the next multiple of align (of the file offset).
func (bw *blockWriter) pad(align int64) {
	bw.zeroTo(roundUp(bw.written(), align))
}

// zeroTo appends zeros up to file offset at.
func (bw *blockWriter) zeroTo(at int64) {
	if n := at - bw.written(); n > 0 {
		bw.buf = append(bw.buf, make([]byte, n)...)
	}
}

func (bw *blockWriter) flushIfFull() error {
	if len(bw.buf) < cap(bw.buf)-2*dataStart {
		return nil
	}
	return bw.flush()
}

func (bw *blockWriter) flush() error {
	if err := pwriteAll(bw.fd, bw.buf, bw.off); err != nil {
		return err
	}
	bw.off += int64(len(bw.buf))
	bw.buf = bw.buf[:0]
	return nil
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("erofs: write image: %w", err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}
