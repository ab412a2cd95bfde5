package image

import (
	"archive/tar"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// RangeCopier is an optional ability of the tar streams the store reads
// (AddLayerFromTar, AddLayerFromUpperTar, AddDirLayer): a stream held in a
// file, whose bytes the kernel can copy into the layer's files itself
// (copy_file_range) instead of through the daemon's memory: one copy instead
// of two, and no buffer to touch. A plain *os.File of a regular file has it
// without help.
type RangeCopier interface {
	io.Reader
	// CopyRangeTo copies the next n bytes of the stream to the file open
	// at descriptor fd, at that file's offset, and moves the stream past
	// them, as reading them would. It returns the bytes copied; an error
	// wrapping errors.ErrUnsupported, with nothing copied, means the
	// caller must read them instead.
	CopyRangeTo(fd int, n int64) (int64, error)
}

// TarFile is an optional ability of the tar streams AddLayerFromUpperTar
// and AddDirLayer read: the tar is being written into a regular file, from
// byte 4096 on, and the stream can have the kernel copy it into a file of
// the store's, at the same offsets, as it goes. That copy becomes the data
// area of the layer's image: the daemon reads only the tar's headers and
// no file's contents pass through its memory (see tarimage.go).
type TarFile interface {
	io.Reader
	// MirrorTo has every byte of the tar copied into f, at its offset in
	// the stream's own file, before Read returns it or Skip moves past it,
	// and returns the offset of the tar's first byte (a multiple of 4096,
	// at least 4096). It is called before the first Read, or not at all.
	MirrorTo(f *os.File) (start int64, err error)
	// Skip moves the stream past its next n bytes without reading them,
	// once they are copied. It returns the bytes skipped: fewer than n
	// only with an error.
	Skip(n int64) (int64, error)
}

// kernelCopyMin is the smallest part of a file's contents that goes
// through the kernel rather than through the stream's buffer.
const kernelCopyMin = 256 << 10

// tarStream is what a tar.Reader reads a layer tar through: a buffer of
// copyBufSize in front of the stream (like bufio.Reader: headers are 512
// bytes, and a pipe gives at most what it holds per read), plus a way to
// hand the contents of the current entry to the kernel (see copyBody). Not
// safe for concurrent use.
type tarStream struct {
	r   io.Reader
	rc  RangeCopier // nil when r cannot copy in the kernel
	tf  TarFile     // nil when r cannot skip unread
	buf *[]byte
	lo  int // buffered bytes are buf[lo:hi]
	hi  int
	err error // of r, once buffered bytes are used up
	// skip counts bytes the tar.Reader has still to go through that were
	// copied out already (by copyBody): they read as zeros, and the
	// tar.Reader only ever discards them.
	skip int64
	pos  int64 // the tar.Reader's offset in the stream
}

func newTarStream(r io.Reader) *tarStream {
	s := &tarStream{r: r, buf: copyBlocks.get()}
	if tf, ok := r.(TarFile); ok {
		s.tf = tf
	}
	switch rc := r.(type) {
	case RangeCopier:
		s.rc = rc
	case *os.File:
		if fi, err := rc.Stat(); err == nil && fi.Mode().IsRegular() {
			s.rc = fileCopier{rc}
		}
	}
	return s
}

// release gives the buffer back; s must not be used any more.
func (s *tarStream) release() {
	copyBlocks.put(s.buf)
	s.buf = nil
}

// Read reads like bufio.Reader.Read.
func (s *tarStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.skip > 0 {
		n := int(min(int64(len(p)), s.skip))
		clear(p[:n])
		s.skip -= int64(n)
		s.pos += int64(n)
		return n, nil
	}
	if s.lo == s.hi {
		if s.err != nil {
			return 0, s.err
		}
		if len(p) >= len(*s.buf) { // big reads go straight through
			n, err := s.r.Read(p)
			s.pos += int64(n)
			if n > 0 {
				return n, nil
			}
			s.err = err
			return 0, err
		}
		n, err := s.r.Read(*s.buf)
		s.lo, s.hi = 0, n
		if n == 0 {
			s.err = err
			return 0, err
		}
		if err != nil {
			s.err = err
		}
	}
	n := copy(p, (*s.buf)[s.lo:s.hi])
	s.lo += n
	s.pos += int64(n)
	return n, nil
}

// Seek is there for tar.Reader, which skips what is left of an entry's
// contents with Seek(0, io.SeekCurrent) and Seek(n, io.SeekCurrent) when
// it can: bytes copied out already are skipped without reading anything;
// other bytes are read and dropped (or, from a TarFile, skipped unread).
// Other seeks fail.
func (s *tarStream) Seek(offset int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || offset < 0 {
		return 0, errors.New("tar stream: can only skip forward")
	}
	if d := min(offset, s.skip); d > 0 {
		s.skip -= d
		s.pos += d
		offset -= d
	}
	for offset > 0 {
		if s.lo == s.hi {
			if s.err != nil {
				return s.pos, s.err
			}
			if s.tf != nil { // moved past in the file, unread
				m, err := s.tf.Skip(offset)
				s.pos += m
				offset -= m
				if err != nil {
					s.err = err
				}
				continue
			}
			n, err := s.r.Read(*s.buf)
			s.lo, s.hi = 0, n
			if err != nil {
				s.err = err
			}
			continue
		}
		d := int(min(offset, int64(s.hi-s.lo)))
		s.lo += d
		s.pos += int64(d)
		offset -= int64(d)
	}
	return s.pos, nil
}

// copyBody writes the n bytes of contents of the entry tr has just returned
// to the file open at fd: what is buffered from memory, the rest by the
// kernel when the stream can (else through buf). tr must not be read from
// before its next Next. It returns the bytes written.
func (s *tarStream) copyBody(tr *tar.Reader, fd int, n int64, buf []byte, progress func(int64)) (int64, error) {
	if s.rc == nil || s.skip > 0 || n-int64(s.hi-s.lo) < kernelCopyMin {
		return io.CopyBuffer(progressWriter(fd, progress), tr, buf)
	}
	var done int64
	if b := int(min(n, int64(s.hi-s.lo))); b > 0 {
		if _, err := fdWriter(fd).Write((*s.buf)[s.lo : s.lo+b]); err != nil {
			return 0, err
		}
		s.lo += b
		done = int64(b)
		if progress != nil {
			progress(done)
		}
	}
	step := n
	if progress != nil {
		step = progressStep
	}
	for done < n {
		m, err := s.rc.CopyRangeTo(fd, min(n-done, step))
		done += m
		if progress != nil && m > 0 {
			progress(done)
		}
		if errors.Is(err, errors.ErrUnsupported) && m == 0 {
			s.rc = nil
			break
		}
		if err != nil {
			s.err = err
			return done, err
		}
		if m == 0 {
			s.err = io.ErrUnexpectedEOF
			return done, s.err
		}
	}
	// The tar.Reader is still at the start of the contents (s.pos): what
	// was copied reads as skipped.
	s.skip = done
	if done < n { // the kernel gave up: the rest through the tar.Reader
		if _, err := io.CopyN(io.Discard, tr, done); err != nil {
			return done, err
		}
		m, err := io.CopyBuffer(progressWriter(fd, progress), tr, buf)
		return done + m, err
	}
	return done, nil
}

// progressStep is how much of a file the kernel copies between two reports
// of progress.
const progressStep = 4 << 20

// progressWriter writes to fd, reporting the bytes written so far to
// progress (when not nil) after each write.
func progressWriter(fd int, progress func(int64)) io.Writer {
	if progress == nil {
		return fdWriter(fd)
	}
	return &reportingWriter{fd: fd, progress: progress}
}

type reportingWriter struct {
	fd       int
	n        int64
	progress func(int64)
}

func (w *reportingWriter) Write(b []byte) (int, error) {
	n, err := fdWriter(w.fd).Write(b)
	w.n += int64(n)
	w.progress(w.n)
	return n, err
}

// fileCopier copies from a regular file at its offset.
type fileCopier struct{ f *os.File }

func (c fileCopier) Read(p []byte) (int, error) { return c.f.Read(p) }

func (c fileCopier) CopyRangeTo(fd int, n int64) (int64, error) {
	return copyFileRange(int(c.f.Fd()), nil, fd, n)
}

// copyFileRange copies n bytes from srcFd (at *off, or its offset when off
// is nil) to dstFd at its offset, as copy_file_range does, until n bytes
// are copied or the source ends. Errors that mean "not between these files"
// come back wrapping errors.ErrUnsupported.
func copyFileRange(srcFd int, off *int64, dstFd int, n int64) (int64, error) {
	var done int64
	for done < n {
		m, err := unix.CopyFileRange(srcFd, off, dstFd, nil, int(min(n-done, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			switch err {
			case unix.EXDEV, unix.EINVAL, unix.ENOSYS, unix.EOPNOTSUPP, unix.EBADF:
				if done == 0 {
					return 0, &os.PathError{Op: "copy_file_range", Path: "layer file", Err: errors.ErrUnsupported}
				}
			}
			return done, &os.PathError{Op: "copy_file_range", Path: "layer file", Err: err}
		}
		if m == 0 {
			break
		}
		done += int64(m)
	}
	return done, nil
}

// skipStep is how much of a file's contents skipBody skips between two
// reports of progress.
const skipStep = 256 << 10

// skipBody moves past the n bytes of contents of the entry tr has just
// returned without reading them from the stream (what is buffered is
// dropped), once they are in the stream's copy (see TarFile), reporting
// how much is there so far to progress (when not nil). tr must not be
// read from before its next Next.
func (s *tarStream) skipBody(n int64, progress func(int64)) error {
	var done int64
	if b := int(min(n, int64(s.hi-s.lo))); b > 0 {
		s.lo += b
		done = int64(b)
	}
	for done < n {
		if s.tf == nil {
			return errors.New("tar stream: cannot skip contents")
		}
		step := n - done
		if progress != nil {
			progress(done)
			step = min(step, skipStep)
		}
		m, err := s.tf.Skip(step)
		done += m
		if err != nil {
			s.err = err
			return err
		}
	}
	// As after copyBody: the tar.Reader goes past them as skipped.
	s.skip = done
	return nil
}

// entryBody is the contents of the entry a tar.Reader reading a tarStream
// has just returned: readable, or copied whole by copyTo.
type entryBody struct {
	tr *tar.Reader
	s  *tarStream
	n  int64
}

func (b *entryBody) Read(p []byte) (int, error) { return b.tr.Read(p) }

// copyTo writes the whole contents to the file open at fd (see
// tarStream.copyBody); buf is the buffer for what goes through memory.
func (b *entryBody) copyTo(fd int, buf []byte, progress func(int64)) (int64, error) {
	return b.s.copyBody(b.tr, fd, b.n, buf, progress)
}

// offset returns where the contents start in the stream.
func (b *entryBody) offset() int64 { return b.s.pos }

// skip moves past the contents without reading them (see skipBody).
func (b *entryBody) skip(progress func(int64)) error { return b.s.skipBody(b.n, progress) }
