package image

import (
	"archive/tar"
	"crypto/sha256"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// streamDigest computes, while a layer is extracted, the digest storeTree
// would otherwise compute afterwards by walking the extracted tree: the
// SHA-256 of the tree's canonical tar. It can when the entries come in the
// canonical tar's order (each directory's entries sorted by name, a
// directory before what it holds: what runsc's tar gives with
// scripts/runsc-patches/0002) and make nothing the canonical tar would
// describe otherwise than the entry did. The extractor tells it each entry
// it made (see made, madeFile, linked and markedOpaque); the first one it cannot vouch
// for (out of order, a file with extended attributes, an entry replacing
// another, a directory made implicitly) gives it up, and storeTree walks the
// tree as before.
//
// The hashing runs in a goroutine of its own, fed in order, so that it goes
// on beside the extraction: a regular file's contents are read back (from
// the page cache) through a duplicate of the descriptor it was written
// with. Not safe for concurrent use; the goroutine is done once result or
// stop has returned.
type streamDigest struct {
	// under is the directory (clean, relative) whose tree is the layer,
	// "" for the whole tree: entries outside it are not part of it; those
	// below it are named relative to it, and overlay markers (whiteouts,
	// opaque markers) are left out (see adoptDiffDir).
	under string
	// open lists the directories entered, outermost first, each with the
	// last name seen in it.
	open []openDir
	lost string // why the digest is given up; "" while it holds
	// abandoned tells the hashing goroutine that lost is set: what is
	// queued is dropped, not hashed.
	abandoned atomic.Bool
	// files records the regular files made (by clean relative path): the
	// status the canonical tar gives them and the name it gives their
	// contents under (the first of their names), for hard links to them.
	files map[string]linkable
	items chan digestItem
	// shared is a descriptor of the layer image whose data area holds the
	// files' contents (readFrom); -1 when none.
	shared  int
	closed  bool
	done    chan struct{}
	sum     []byte
	size    int64
	hashErr error
}

type openDir struct{ rel, last string }

type linkable struct {
	st    unix.Stat_t
	first string
}

// linkableMax bounds the files recorded for hard links (a link to a file
// beyond it gives the digest up).
const linkableMax = 1 << 20

// digestItem is one entry of the canonical tar: its header and, for a
// regular file with contents, a descriptor to read them from (closed by
// the hashing goroutine) and, while they are being written, their progress.
type digestItem struct {
	hdr *tar.Header
	fd  int
	// shared: the contents are read through the digest's own descriptor
	// of the layer image (see readFrom), fd is unused.
	// base is where the contents start in fd's file (a layer image holds
	// many files' contents; a file of a tree: 0).
	base   int64
	shared bool
	prog   *fileProgress
}

// hashWhileWritten is the size from which a file's contents are hashed
// while they are written rather than once they are.
const hashWhileWritten = 1 << 20

// fileProgress tells the hashing goroutine how much of a file is written.
type fileProgress struct {
	mu      sync.Mutex
	cond    sync.Cond
	written int64
	ended   bool
}

func newFileProgress() *fileProgress {
	p := &fileProgress{}
	p.cond.L = &p.mu
	return p
}

// advance records that the first n bytes are written.
func (p *fileProgress) advance(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.written = max(p.written, n)
	p.mu.Unlock()
	p.cond.Broadcast()
}

// report returns advance as a function, nil for a nil p.
func (p *fileProgress) report() func(int64) {
	if p == nil {
		return nil
	}
	return p.advance
}

// end records that nothing more will be written (whatever the outcome).
func (p *fileProgress) end() {
	p.mu.Lock()
	p.ended = true
	p.mu.Unlock()
	p.cond.Broadcast()
}

// await returns how much is written once it is more than off, or once
// writing ended.
func (p *fileProgress) await(off int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.written <= off && !p.ended {
		p.cond.Wait()
	}
	return p.written
}

// digestQueue bounds the entries (and descriptors) waiting for the hash.
const digestQueue = 256

func newStreamDigest(under string) *streamDigest {
	d := &streamDigest{
		under:  under,
		open:   []openDir{{rel: under}},
		files:  map[string]linkable{},
		items:  make(chan digestItem, digestQueue),
		shared: -1,
		done:   make(chan struct{}),
	}
	go d.hash()
	return d
}

func (d *streamDigest) hash() {
	defer close(d.done)
	h := sha256.New()
	cw := &countingWriter{w: h}
	tw := tar.NewWriter(cw)
	buf := copyBlocks.get()
	defer copyBlocks.put(buf)
	var win *window
	for it := range d.items {
		if it.shared {
			it.fd = d.shared
			if win == nil {
				wb := copyBlocks.get()
				defer copyBlocks.put(wb)
				win = &window{b: *wb}
			}
		}
		if d.hashErr == nil && !d.abandoned.Load() {
			switch {
			case it.shared && it.prog == nil:
				d.hashErr = win.hash(tw, it)
			default:
				d.hashErr = d.write(tw, it, *buf)
			}
		}
		if it.fd >= 0 && !it.shared {
			unix.Close(it.fd)
		}
	}
	if d.shared >= 0 {
		unix.Close(d.shared)
	}
	if d.hashErr == nil {
		d.hashErr = tw.Close()
	}
	d.sum, d.size = h.Sum(nil), cw.n
}

func (d *streamDigest) write(tw *tar.Writer, it digestItem, buf []byte) error {
	if err := tw.WriteHeader(it.hdr); err != nil {
		return err
	}
	for off := int64(0); off < it.hdr.Size; {
		avail := it.hdr.Size
		if it.prog != nil {
			if avail = min(avail, it.prog.await(off)); avail <= off {
				return fmt.Errorf("%s: not written whole", it.hdr.Name)
			}
		}
		n, err := readBack(it, buf[:min(int64(len(buf)), avail-off)], it.base+off)
		if err != nil {
			return err
		}
		if _, err := tw.Write(buf[:n]); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// readBack reads the contents of it from off in it.fd's file into b: at least
// one byte, else an error (the file is shorter than what was written).
func readBack(it digestItem, b []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(it.fd, b, off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, &os.PathError{Op: "read back", Path: it.hdr.Name, Err: err}
		case n == 0:
			return 0, fmt.Errorf("%s: shorter than written", it.hdr.Name)
		}
		return n, nil
	}
}

// window is what the hash goroutine has read ahead of a layer image (see
// readFrom): the files' contents lie in the image in the order they are
// hashed, so one read serves many small files (12,800 files of 16 KiB: 216
// reads instead of 12,800). A file's contents in an image are never
// written again once there (Create and the tar's copy only append; Close
// writes outside them), so what a read returned stays right.
type window struct {
	b   []byte
	off int64 // where b[:n] starts in the image
	n   int
}

// hash writes the header and the contents of it (read from the image) to tw.
func (w *window) hash(tw *tar.Writer, it digestItem) error {
	if err := tw.WriteHeader(it.hdr); err != nil {
		return err
	}
	at, size := it.base, it.hdr.Size
	for size > 0 {
		if at < w.off || at >= w.off+int64(w.n) {
			n, err := readBack(it, w.b, at)
			if err != nil {
				return err
			}
			w.off, w.n = at, n
		}
		i := at - w.off
		k := min(int64(w.n)-i, size)
		if _, err := tw.Write(w.b[i : i+k]); err != nil {
			return err
		}
		at += k
		size -= k
	}
	return nil
}

// send queues it for the hash (after stop: gives the digest up).
func (d *streamDigest) send(it digestItem) {
	if d.closed {
		d.giveUp("entries after the end")
		if it.fd >= 0 {
			unix.Close(it.fd)
		}
		return
	}
	d.items <- it
}

// giveUp stops the digest for the reason why (the first one is kept).
func (d *streamDigest) giveUp(why string) {
	if d != nil && d.lost == "" {
		d.lost = why
		d.abandoned.Store(true)
	}
}

// place checks that rel (a clean relative path, as named on disk) comes
// where the canonical tar has it, and returns its name in the layer and
// whether it belongs to the layer at all.
func (d *streamDigest) place(rel string, isDir bool) (string, bool) {
	if d.under != "" && !within(rel, d.under) {
		return "", false // the way to the directory (see onPathTo)
	}
	if rel == d.under {
		return "", false // the root of the tree: no entry of its tar
	}
	parent, name := path.Dir(rel), path.Base(rel)
	if parent == "." {
		parent = ""
	}
	for len(d.open) > 0 && d.open[len(d.open)-1].rel != parent {
		d.open = d.open[:len(d.open)-1]
	}
	if len(d.open) == 0 {
		d.giveUp(fmt.Sprintf("%q comes after its directory was left, or without it", rel))
		return "", false
	}
	top := &d.open[len(d.open)-1]
	if top.last != "" && name <= top.last {
		d.giveUp(fmt.Sprintf("%q does not come after %q", rel, path.Join(parent, top.last)))
		return "", false
	}
	top.last = name
	if isDir {
		d.open = append(d.open, openDir{rel: rel})
	}
	if d.under == "" {
		return rel, true
	}
	return strings.TrimPrefix(rel, d.under+"/"), true
}

// made records the entry the extractor made at rel (a clean relative path)
// from hdr, other than a regular file (madeFile) or a hard link (linked): a
// directory, symlink, device, fifo or whiteout (whiteout: mode bits and
// owner from hdr, a character device 0/0 on disk). mode is what the entry
// was given (hdr's permission bits).
func (d *streamDigest) made(rel string, hdr *tar.Header, mode uint32, whiteout bool) {
	if !d.wants() {
		return
	}
	var ft uint32
	var rdev uint64
	switch {
	case whiteout:
		ft = unix.S_IFCHR
	case hdr.Typeflag == tar.TypeDir:
		ft = unix.S_IFDIR
	case hdr.Typeflag == tar.TypeSymlink:
		ft, mode = unix.S_IFLNK, 0o777 // what Linux gives every symlink
	case hdr.Typeflag == tar.TypeChar:
		ft, rdev = unix.S_IFCHR, unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case hdr.Typeflag == tar.TypeBlock:
		ft, rdev = unix.S_IFBLK, unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case hdr.Typeflag == tar.TypeFifo:
		ft = unix.S_IFIFO
	default:
		d.giveUp(fmt.Sprintf("%q: entry type %q", rel, hdr.Typeflag))
		return
	}
	isMarker := ft == unix.S_IFCHR && rdev == 0
	name, ok := d.place(rel, ft == unix.S_IFDIR)
	if !ok || (isMarker && d.under != "") {
		return
	}
	xattrs, ok := d.keptXattrs(rel, hdr, ft == unix.S_IFDIR)
	if !ok {
		return
	}
	st := statOf(ft|mode, hdr, 0, rdev)
	d.send(digestItem{hdr: canonHeader(name, &st, xattrs, hdr.Linkname), fd: -1})
}

// wants reports whether d still takes entries.
func (d *streamDigest) wants() bool { return d != nil && d.lost == "" && !d.closed }

// madeFile records the regular file the extractor has made at rel (a clean
// relative path) from hdr, with permission bits mode, open at fd (which
// stays the caller's): its contents are read back through a duplicate of
// fd. Whole, when whileWritten is false:
// the file is complete. As they come, when it is true: the file was just
// created, and the caller reports its writing to the returned progress
// (advance as it writes, end once it stops). The progress is nil when the
// digest is given up.
func (d *streamDigest) madeFile(rel string, hdr *tar.Header, mode uint32, fd int, whileWritten bool) *fileProgress {
	it, ok := d.fileItem(rel, hdr, mode, 0, whileWritten)
	if !ok {
		return nil
	}
	if hdr.Size > 0 {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			d.giveUp(err.Error())
			return nil
		}
		it.fd = dup
	}
	d.send(it)
	return it.prog
}

// readFrom gives d a descriptor (a duplicate of fd) of the layer image
// whose data area holds the contents of the files madeFileAt records. Call
// it once, before them.
func (d *streamDigest) readFrom(fd int) {
	if !d.wants() {
		return
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		d.giveUp(err.Error())
		return
	}
	d.shared = dup
}

// madeFileAt records the regular file made at rel from hdr, with permission
// bits mode, whose contents are at base in the layer image (see readFrom);
// whileWritten and the progress returned as for madeFile.
func (d *streamDigest) madeFileAt(rel string, hdr *tar.Header, mode uint32, base int64, whileWritten bool) *fileProgress {
	if d.wants() && d.shared < 0 {
		d.giveUp("no descriptor of the layer image")
	}
	it, ok := d.fileItem(rel, hdr, mode, base, whileWritten)
	if !ok {
		return nil
	}
	it.shared = true
	d.send(it)
	return it.prog
}

// fileItem checks the regular file made at rel from hdr in, records it
// for hard links, and returns its item (without a descriptor), or ok false
// when the digest is given up.
func (d *streamDigest) fileItem(rel string, hdr *tar.Header, mode uint32, base int64, whileWritten bool) (digestItem, bool) {
	if !d.wants() {
		return digestItem{}, false
	}
	name, ok := d.place(rel, false)
	if !ok {
		return digestItem{}, false
	}
	if _, ok := d.keptXattrs(rel, hdr, false); !ok {
		return digestItem{}, false
	}
	st := statOf(unix.S_IFREG|mode, hdr, hdr.Size, 0)
	d.remember(rel, name, st)
	it := digestItem{hdr: canonHeader(name, &st, nil, ""), fd: -1, base: base}
	if whileWritten {
		it.prog = newFileProgress()
	}
	return it, true
}

// remember records the regular file made at rel, named name in the layer,
// with status st, for hard links to it.
func (d *streamDigest) remember(rel, name string, st unix.Stat_t) {
	if len(d.files) < linkableMax {
		d.files[rel] = linkable{st: st, first: name}
	}
}

// linked records the hard link the extractor made at rel to target (both
// clean relative paths): the canonical tar has it as a link to the first
// name of the file, with the file's status.
func (d *streamDigest) linked(rel, target string) {
	if !d.wants() {
		return
	}
	f, ok := d.files[target]
	if !ok {
		d.giveUp(fmt.Sprintf("hard link %q to %q, not a file made before", rel, target))
		return
	}
	name, ok := d.place(rel, false)
	if !ok {
		return
	}
	d.files[rel] = f
	hdr := canonHeader(name, &f.st, nil, "")
	hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, f.first, 0
	d.send(digestItem{hdr: hdr, fd: -1})
}

// markedOpaque records that the directory rel was marked opaque: the
// canonical tar has the marker right after the directory's entry.
func (d *streamDigest) markedOpaque(rel string) {
	if !d.wants() {
		return
	}
	if rel == "" || d.under != "" {
		return // the root has no entry; a directory layer has no markers
	}
	if len(d.open) == 0 || d.open[len(d.open)-1].rel != rel || d.open[len(d.open)-1].last != "" {
		d.giveUp(fmt.Sprintf("opaque marker of %q not right after it", rel))
		return
	}
	d.send(digestItem{hdr: opaqueMarkerHeader(rel), fd: -1})
}

// keptXattrs returns the extended attributes of hdr that travel in layer
// tars, or ok false: those of anything but a directory, and any but user.*
// ones, give the digest up (the kernel may store a capability otherwise
// than given; files are rarely marked).
func (d *streamDigest) keptXattrs(rel string, hdr *tar.Header, isDir bool) (_ map[string]string, ok bool) {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !keptXattr(name) {
			continue
		}
		if !isDir || !strings.HasPrefix(name, "user.") {
			d.giveUp(fmt.Sprintf("%q has extended attribute %s", rel, name))
			return nil, false
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = v
	}
	return out, true
}

// statOf is the status the extractor leaves an entry made from hdr with:
// type and permission bits mode, hdr's owner, its modification time in
// whole seconds (what utimes and futimens set), size and device rdev.
func statOf(mode uint32, hdr *tar.Header, size int64, rdev uint64) unix.Stat_t {
	return unix.Stat_t{
		Mode:  mode,
		Uid:   uint32(hdr.Uid),
		Gid:   uint32(hdr.Gid),
		Size:  size,
		Rdev:  rdev,
		Nlink: 1,
		Mtim:  unix.Timespec{Sec: hdr.ModTime.Truncate(time.Second).Unix()},
	}
}

// result ends the digest and returns it with the canonical tar's size, or
// ok false when it was given up or failed (why says why).
func (d *streamDigest) result() (dg Digest, size int64, why string, ok bool) {
	if d == nil {
		return "", 0, "no streamed digest", false
	}
	d.stop()
	switch {
	case d.lost != "":
		return "", 0, d.lost, false
	case d.hashErr != nil:
		return "", 0, d.hashErr.Error(), false
	}
	return digestFromSum(d.sum), d.size, "", true
}

// stop ends the hashing goroutine and waits for it (idempotent). Entries
// made after it give the digest up.
func (d *streamDigest) stop() {
	if d == nil || d.closed {
		return
	}
	d.closed = true
	close(d.items)
	<-d.done
}
