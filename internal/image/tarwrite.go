package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// keptXattr reports whether an extended attribute travels in layer tars.
func keptXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "security.capability"
}

// writeCanonicalTar writes the canonical tar of the tree at dir to w (the
// package comment defines it) and returns the number of bytes written.
// It reads dir without following symlinks.
//
// The tar goes out in one stream, in walk order, but the work behind each
// entry (lstat, extended attributes, reading a small file whole) is done
// ahead by a few goroutines, so that the system calls overlap with w's work
// (hashing, usually) instead of adding to it.
func writeCanonicalTar(ctx context.Context, dir string, w io.Writer) (int64, error) {
	return writeCanonicalTarOpts(ctx, dir, w, canonOptions{})
}

// canonOptions are facts about a tree that spare writeCanonicalTar work.
type canonOptions struct {
	// noFileXattrs: nothing but directories may carry an extended
	// attribute that travels (the tree was extracted here, and no entry
	// set one), so only directories' are read.
	noFileXattrs bool
}

// writeCanonicalTarOpts is writeCanonicalTar for a tree o describes.
func writeCanonicalTarOpts(ctx context.Context, dir string, w io.Writer, o canonOptions) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *canonEntry, 2*canonWorkers)
	order := make(chan *canonEntry, canonWindow)
	var walkErr error
	var dirs []*dirRef // every directory opened, for the sweep at the end
	defer func() {
		for _, d := range dirs {
			d.close()
		}
	}()
	go func() {
		defer close(order)
		defer close(work)
		walkErr = walkSorted(ctx, dir, "", nil, &dirs, o, func(e *canonEntry) bool {
			select {
			case work <- e:
			case <-ctx.Done():
				return false
			}
			select {
			case order <- e:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	var wg sync.WaitGroup
	// Deferred after the sweep, so run before it: the walker is done once
	// order is drained, the workers once wg is.
	for range canonWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				e.prepare(ctx)
				close(e.ready)
			}
		}()
	}
	defer wg.Wait()

	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	links := map[[2]uint64]string{} // (dev, ino) -> first name
	var err error
	for e := range order {
		<-e.ready
		if err == nil {
			if err = ctx.Err(); err == nil {
				err = e.write(tw, links)
			}
			if err != nil {
				cancel() // the walker stops; what is queued drains below
			}
		}
		e.release()
	}
	if err == nil {
		err = walkErr
	}
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return cw.n, fmt.Errorf("tar %s: %w", dir, err)
	}
	return cw.n, nil
}

const (
	// canonWindow bounds the entries prepared ahead of the writer, and with
	// readAheadMax the memory they hold.
	canonWindow = 64
	// readAheadMax is the largest file read whole ahead of the writer;
	// bigger ones are streamed by the writer.
	readAheadMax = 256 << 10
	canonWorkers = 2
)

// canonEntry is one entry of a canonical tar, prepared ahead of its turn.
type canonEntry struct {
	path, rel, name string
	dir             *dirRef // the directory holding it
	noXattrs        bool    // see canonOptions.noFileXattrs
	// Filled by prepare before ready is closed.
	st     unix.Stat_t
	xattrs map[string]string
	link   string  // symlink target
	body   *[]byte // the whole contents of a small regular file, or nil
	err    error
	ready  chan struct{}
}

// dirRef is a directory open (O_PATH) while its entries are prepared and
// written: they are looked up relative to it, which costs a quarter less
// than by their whole path. Each entry holds a reference; the last one
// closes it. Safe for concurrent use.
type dirRef struct {
	fd     int
	refs   atomic.Int32
	closed atomic.Bool
}

func (d *dirRef) release() {
	if d.refs.Add(-1) == 0 {
		d.close()
	}
}

func (d *dirRef) close() {
	if d.closed.CompareAndSwap(false, true) {
		unix.Close(d.fd)
	}
}

// walkSorted calls emit for every entry below root/rel, depth first, each
// directory's entries sorted by name (filepath.WalkDir's order), without
// following symlinks. It stops when emit returns false. parent is the
// directory holding root/rel (nil for root); every directory it opens is
// added to dirs.
func walkSorted(ctx context.Context, root, rel string, parent *dirRef, dirs *[]*dirRef, o canonOptions, emit func(*canonEntry) bool) error {
	p := filepath.Join(root, rel)
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	var fd int
	if parent == nil {
		fd, err = unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		fd, err = unix.Openat(parent.fd, filepath.Base(p), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	d := &dirRef{fd: fd}
	d.refs.Store(1) // the walk's own, until it has listed the directory
	*dirs = append(*dirs, d)
	defer d.release()
	for _, ent := range ents {
		r := ent.Name()
		if rel != "" {
			r = rel + "/" + r
		}
		e := &canonEntry{path: filepath.Join(root, r), rel: r, name: ent.Name(), dir: d, ready: make(chan struct{})}
		e.noXattrs = o.noFileXattrs && !ent.IsDir()
		d.refs.Add(1)
		if !emit(e) {
			return ctx.Err() // the sweep closes what e held
		}
		if ent.IsDir() {
			if err := walkSorted(ctx, root, r, d, dirs, o, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

// prepare does the system calls of e: lstat, extended attributes, the
// symlink target, and a small regular file's contents.
func (e *canonEntry) prepare(ctx context.Context) {
	if e.err = ctx.Err(); e.err != nil {
		return
	}
	if err := unix.Fstatat(e.dir.fd, e.name, &e.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		e.err = &os.PathError{Op: "lstat", Path: e.path, Err: err}
		return
	}
	isReg := e.st.Mode&unix.S_IFMT == unix.S_IFREG
	if !e.noXattrs && !isReg {
		if e.xattrs, e.err = readXattrs(e.path); e.err != nil {
			return
		}
	}
	switch e.st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		e.link, e.err = os.Readlink(e.path)
	case unix.S_IFREG:
		if e.st.Size == 0 || e.st.Size > readAheadMax { // not read ahead
			if !e.noXattrs {
				e.xattrs, e.err = readXattrs(e.path)
			}
			return
		}
		fd, err := unix.Openat(e.dir.fd, e.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			e.err = &os.PathError{Op: "open", Path: e.path, Err: err}
			return
		}
		defer unix.Close(fd)
		if !e.noXattrs {
			if e.xattrs, e.err = readFdXattrs(fd, e.path); e.err != nil {
				return
			}
		}
		b := readAheadBodies.get()
		n, err := readFdInto(fd, e.path, (*b)[:e.st.Size+1])
		switch {
		case err != nil:
			e.err = err
		case int64(n) != e.st.Size:
			e.err = fmt.Errorf("%s: changed size while being read", e.rel)
		default:
			e.body = b
			return
		}
		readAheadBodies.put(b)
	}
}

// readFdInto reads the file open at fd (named p) into b until b is full or
// the file ends: one system call for a file that fits (os.Open and
// os.ReadFile make several more, and system calls are dear on these
// virtual machines).
func readFdInto(fd int, p string, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Pread(fd, b[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "read", Path: p, Err: err}
		}
		n += m
		if m == 0 || n < len(b) {
			break // a short read of a regular file is its end
		}
	}
	return n, nil
}

func (e *canonEntry) release() {
	if e.body != nil {
		readAheadBodies.put(e.body)
		e.body = nil
	}
	if e.dir != nil {
		e.dir.release()
		e.dir = nil
	}
}

// write writes e's tar entry (and the opaque marker after an opaque
// directory). links maps the (dev, ino) of files with several names to the
// first name written.
func (e *canonEntry) write(tw *tar.Writer, links map[[2]uint64]string) error {
	if e.err != nil {
		return e.err
	}
	st, rel := &e.st, e.rel
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := links[key]; ok && st.Nlink > 1 {
			hdr := canonHeader(rel, st, e.xattrs, "")
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			return writeCanonEntry(tw, hdr, nil, nil)
		}
		if st.Nlink > 1 {
			links[key] = rel
		}
	}
	hdr := canonHeader(rel, st, e.xattrs, e.link)
	if hdr == nil { // sockets do not travel
		return nil
	}
	return writeCanonEntry(tw, hdr, e.xattrs, e.writeBody)
}

// canonHeader returns the canonical tar header of the entry at rel with
// status st, extended attributes xattrs (those that do not travel are left
// out) and, for a symlink, target link; nil for what does not travel (a
// socket). A regular file is written whole (hard links are the caller's).
func canonHeader(rel string, st *unix.Stat_t, xattrs map[string]string, link string) *tar.Header {
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
	}
	for k, v := range xattrs {
		if keptXattr(k) {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFREG:
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	case unix.S_IFLNK:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, link
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		if hdr.Typeflag == tar.TypeChar && st.Rdev == 0 {
			// An overlay whiteout: written as the OCI ".wh.NAME" file.
			dir, base := splitRel(rel)
			hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeReg, 0, 0
			hdr.Name = dir + whiteoutPrefix + base
		}
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil
	}
	return hdr
}

// writeCanonEntry writes hdr, the contents of a regular file with body, and
// the opaque marker after a directory whose xattrs say it is opaque.
func writeCanonEntry(tw *tar.Writer, hdr *tar.Header, xattrs map[string]string, body func(*tar.Writer) error) error {
	rel := strings.TrimSuffix(hdr.Name, "/")
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 && body != nil {
		if err := body(tw); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	}
	if hdr.Typeflag == tar.TypeDir && xattrs[opaqueXattr] == "y" {
		return tw.WriteHeader(opaqueMarkerHeader(rel))
	}
	return nil
}

// opaqueMarkerHeader is the canonical tar's entry marking directory rel
// opaque (it follows the directory's own entry).
func opaqueMarkerHeader(rel string) *tar.Header {
	return &tar.Header{Name: rel + "/" + opaqueMarker, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
}

// writeBody writes the contents of the regular file e: read whole by
// prepare, or streamed now.
func (e *canonEntry) writeBody(tw *tar.Writer) error {
	if e.st.Size == 0 {
		return nil
	}
	if e.body != nil {
		_, err := tw.Write((*e.body)[:e.st.Size])
		return err
	}
	fd, err := unix.Openat(e.dir.fd, e.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: e.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), e.path)
	defer f.Close()
	n, err := copyReadAhead(tw, f)
	if err == nil && n != e.st.Size {
		err = errors.New("changed size while being read")
	}
	if errors.Is(err, tar.ErrWriteTooLong) {
		err = errors.New("changed size while being read")
	}
	return err
}

// copyReadAhead copies f to w while a goroutine reads f a few blocks ahead,
// so that reading (a copy out of the page cache) overlaps with w's work (a
// hash). It returns the bytes copied; the goroutine is done when it returns.
func copyReadAhead(w io.Writer, f *os.File) (int64, error) {
	type block struct {
		b   *[]byte
		n   int
		err error
	}
	const depth = 3
	free, full := make(chan *[]byte, depth), make(chan block, depth)
	for range depth {
		free <- copyBlocks.get()
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer close(full)
		for {
			var b *[]byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := io.ReadFull(f, *b)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			select {
			case full <- block{b, n, err}:
			case <-stop:
				copyBlocks.put(b)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		<-done
		for b := range full {
			copyBlocks.put(b.b)
		}
		for len(free) > 0 {
			copyBlocks.put(<-free)
		}
	}()
	var total int64
	for blk := range full {
		if blk.n > 0 {
			n, err := w.Write((*blk.b)[:blk.n])
			total += int64(n)
			if err != nil {
				copyBlocks.put(blk.b)
				return total, err
			}
		}
		if blk.err == io.EOF {
			copyBlocks.put(blk.b)
			return total, nil
		}
		if blk.err != nil {
			copyBlocks.put(blk.b)
			return total, blk.err
		}
		free <- blk.b
	}
	return total, nil
}

// splitRel splits a slash-separated relative path into "dir/" (or "") and base.
func splitRel(rel string) (string, string) {
	i := strings.LastIndexByte(rel, '/')
	return rel[:i+1], rel[i+1:]
}

// readXattrs returns the extended attributes of p (not following symlinks).
func readXattrs(p string) (map[string]string, error) {
	return xattrsOf(p, unix.Llistxattr, unix.Lgetxattr)
}

// readFdXattrs returns the extended attributes of the file open at fd
// (named p, for errors).
func readFdXattrs(fd int, p string) (map[string]string, error) {
	return xattrsOf(p,
		func(_ string, b []byte) (int, error) { return unix.Flistxattr(fd, b) },
		func(_, name string, b []byte) (int, error) { return unix.Fgetxattr(fd, name, b) })
}

func xattrsOf(p string, list func(string, []byte) (int, error), get func(string, string, []byte) (int, error)) (map[string]string, error) {
	var small [256]byte
	buf := small[:]
	n, err := list(p, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = list(p, nil); err == nil {
			buf = make([]byte, n)
			n, err = list(p, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) || n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	out := make(map[string]string, len(names))
	for _, name := range names {
		if !keptXattr(name) && name != opaqueXattr {
			continue
		}
		sz, err := get(p, name, nil)
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		val := make([]byte, sz)
		if sz, err = get(p, name, val); err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		out[name] = string(val[:sz])
	}
	return out, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
