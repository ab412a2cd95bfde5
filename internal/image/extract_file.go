package image

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// The extractor's regular files: the path most entries take, so it makes as
// few system calls as it can (they are dear on these virtual machines), and
// the record of what to fsync for the tree to be durable.

// fsyncMax is the most files and directories an extracted tree is made
// durable with one fsync each; a bigger tree gets one syncfs (which also
// flushes whatever else the filesystem holds unwritten: the sandboxes' own
// writes, other layers).
const fsyncMax = 128

// plan returns how to make durable the part of the tree extracted so far
// that lies below the clean relative path under ("" for the whole tree):
// the files and directories to fsync (paths relative to the extraction's
// root), or a syncfs when fsyncs cannot reach everything or would be too
// many.
func (x *extractor) plan(under string) syncPlan {
	if x.unsyncable {
		return syncPlan{}
	}
	var p syncPlan
	for _, f := range x.files {
		if under == "" || within(f, under) {
			p.files = append(p.files, f)
		}
	}
	for i := len(x.dirTimes) - 1; i >= 0; i-- { // deepest first
		if d := x.dirTimes[i].rel; under == "" || within(d, under) {
			p.dirs = append(p.dirs, d)
		}
	}
	if len(p.files)+len(p.dirs) > fsyncMax {
		return syncPlan{}
	}
	p.ok = true
	return p
}

// canonOptions describes the extracted tree to writeCanonicalTarOpts: only
// directories can carry extended attributes unless a file got one.
func (x *extractor) canonOptions() canonOptions {
	return canonOptions{noFileXattrs: !x.fileXattrs}
}

// newFileGid returns the group a file made in the directory dirfd gets:
// the directory's own with setgid, else the process's; -1 when unknown.
func newFileGid(dirfd int) int {
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return -1
	}
	if st.Mode&unix.S_ISGID != 0 {
		return int(st.Gid)
	}
	return os.Getegid()
}

// processUmask returns the process's umask as /proc reports it, or 0o777
// (assume the worst: every mode is applied explicitly) when it cannot tell.
func processUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(m)
			}
		}
	}
	return 0o777
}

// gidIn returns the group a file made in pfd (the root or the cached
// parent) gets, or -1.
func (x *extractor) gidIn(pfd int) int {
	switch {
	case pfd == x.rootfd:
		return x.rootGid
	case pfd == x.cacheFd:
		return x.cacheGid
	}
	return -1
}

// writeFile creates the regular file base in pfd with r's contents. What
// sits at base already (an earlier entry of that name) is replaced. Metadata
// goes through the new file's descriptor: no path is looked up twice.
func (x *extractor) writeFile(pfd int, dir, base string, hdr *tar.Header, mode uint32, r io.Reader) error {
	// Readable too: a streamed digest reads the contents back through it.
	const flags = unix.O_RDWR | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	// Made with its final permission bits when open(2) can set them.
	createMode, modeSet := uint32(0o600), false
	if mode&^0o777 == 0 && mode&x.umask == 0 {
		createMode, modeSet = mode, true
	}
	fd, err := unix.Openat(pfd, base, flags, createMode)
	if errors.Is(err, unix.EEXIST) {
		// clear may close the cached parent (it removes a directory).
		if err = x.clear(pfd, path.Join(dir, base), base, false); err == nil {
			if pfd, err = x.parent(dir); err == nil {
				fd, err = unix.Openat(pfd, base, flags, createMode)
			}
		}
	}
	if err != nil {
		return err
	}
	// The owner open(2) gave it, when known to be the wanted one.
	ownerSet := hdr.Uid == x.euid && hdr.Gid == x.gidIn(pfd)
	if len(x.files) < fsyncMax {
		x.files = append(x.files, path.Join(dir, base))
	} else {
		x.unsyncable = true
	}
	defer unix.Close(fd)
	rel := path.Join(dir, base)
	// A big file's contents are digested while they are written (a small
	// one's once it is complete, below).
	var prog *fileProgress
	if hdr.Size >= hashWhileWritten {
		if prog = x.sd.madeFile(rel, hdr, mode, fd, true); prog != nil {
			defer prog.end()
		}
	}
	if hdr.Size > 0 {
		if x.buf == nil {
			x.buf = copyBlocks.get()
		}
		var n int64
		var err error
		if b, ok := r.(*entryBody); ok {
			n, err = b.copyTo(fd, *x.buf, prog.report())
		} else {
			n, err = io.CopyBuffer(progressWriter(fd, prog.report()), r, *x.buf)
		}
		if err != nil {
			return err
		}
		prog.advance(n) // the copy's own reports may stop short of the end
		if n != hdr.Size {
			return errdefs.Invalid("layer tar: %d bytes of %d", n, hdr.Size)
		}
	}
	if len(hdr.PAXRecords) > 0 {
		x.fileXattrs = true // perhaps none kept: only a missed saving
	}
	if err := setXattrs(fd, hdr); err != nil {
		return err
	}
	if !ownerSet {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	// Mode after chown: chown clears setuid and setgid bits.
	if !modeSet || !ownerSet {
		if err := unix.Fchmod(fd, mode); err != nil {
			return err
		}
	}
	if err := futimens(fd, hdr.ModTime); err != nil {
		return err
	}
	if hdr.Size < hashWhileWritten {
		x.sd.madeFile(rel, hdr, mode, fd, false)
	}
	return nil
}

// fdWriter writes to a descriptor it does not own. It has no ReadFrom, so
// io.CopyBuffer uses the buffer it is given.
type fdWriter int

func (w fdWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(int(w), b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "write", Path: "layer file", Err: err}
		}
		n += m
	}
	return n, nil
}

// futimens sets fd's access and modification times to mt (whole seconds).
func futimens(fd int, mt time.Time) error {
	ts := unix.NsecToTimespec(mt.Truncate(time.Second).UnixNano())
	times := [2]unix.Timespec{ts, ts}
	// utimensat(fd, NULL, times, 0) is futimens(3).
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&times[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
