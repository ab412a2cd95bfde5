package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/image"
)

const (
	// tailPoll is how long a reader that caught up with the sentry waits
	// before it looks at the file again (the end of the engine call wakes
	// it at once).
	tailPoll = time.Millisecond
	// punchEvery is how much has to be read before it is punched out of the
	// file.
	punchEvery = 4 << 20
)

// upperStream is a rootfs diff that the sentry writes into an unlinked file
// while the daemon reads it, as tail -f would: the daemon extracts while the
// sentry writes. A file rather than a pipe, because the sentry writes each
// entry with two small writes, and a pipe wakes its reader at every one: the
// sentry's tar of 12,800 files of 16 KiB took 0.8-1.4 s into a pipe, 0.5-0.6
// s into a file in memory, 0.3-0.5 s into /dev/null. And the sentry holds its
// filesystem's lock while it writes, so it had better not wait for the
// reader's pace.
//
// The file lives in the sandbox's directory. What has been read is punched
// out of it, so it holds about what the reader lags behind; its pages are
// page cache, charged like the sentry's other writes and reclaimable.
//
// Read returns io.EOF only once the engine reported success: a tar cut short
// by an engine error ends with that error, never with a clean end. Close
// waits for the engine call to end (the sentry cannot be stopped midway; it
// writes on into the file, which goes away with it) and is idempotent. Read
// and Close are not safe for concurrent use.
type upperStream struct {
	*tailFile
	// To start again (Seek).
	ctx    context.Context
	engine UpperStreamer
	id     string
	dir    string
	log    *slog.Logger
}

// streamUpper starts s writing the upper layer of container id into an
// unlinked file in dir and returns the stream reading it. ctx bounds the
// engine call.
func streamUpper(ctx context.Context, s UpperStreamer, id, dir string, log *slog.Logger) (*upperStream, error) {
	t, err := startTail(ctx, s, id, dir, log)
	if err != nil {
		return nil, err
	}
	return &upperStream{tailFile: t, ctx: ctx, engine: s, id: id, dir: dir, log: log}, nil
}

// Seek(0, io.SeekStart) starts the stream again from a new tar of the upper
// layer (a later point in time than the first: the sandbox runs on). Other
// seeks fail.
func (u *upperStream) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("rootfs diff: can only start again from the beginning")
	}
	u.tailFile.Close()
	t, err := startTail(u.ctx, u.engine, u.id, u.dir, u.log)
	if err != nil {
		return 0, err
	}
	u.tailFile = t
	return 0, nil
}

// tailFile is one run of the engine writing the upper layer into a file.
type tailFile struct {
	f        *os.File
	fd       int
	off      int64 // read so far
	punched  int64 // punched out so far
	done     chan struct{}
	err      error // the engine call's result; set before done is closed
	timer    *time.Timer
	closed   bool
	closeErr error
	// For the debug line at Close.
	log     *slog.Logger
	id      string
	started time.Time
	took    time.Duration // the engine call; set before done is closed
	waits   int           // times the reader caught up with the sentry
	// mirror, when set (MirrorTo), receives a copy of every byte of the
	// tar, at the same offset, before the reader is given it or skips it;
	// mirrored is the end of what it holds.
	mirror   *os.File
	mirrored int64
}

// tarStart is where the tar starts in the file: its first 4 KiB are left
// free, so that the tar's copy can be the data area of a layer image whose
// superblock goes there (see MirrorTo).
const tarStart = 4096

func startTail(ctx context.Context, s UpperStreamer, id, dir string, log *slog.Logger) (*tailFile, error) {
	// Nameless (O_TMPFILE): gone with its last descriptor, unless the
	// image store links it in as a layer (TakeFile).
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rootfs diff: %w", &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err})
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, "rootfs-upper.tar"))
	// The sentry writes at the file's offset.
	if _, err := f.Seek(tarStart, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("rootfs diff: %w", err)
	}
	t := &tailFile{f: f, fd: fd, off: tarStart, punched: tarStart, done: make(chan struct{}), log: log, id: id, started: time.Now()}
	go func() {
		t.err = s.TarRootfsUpperTo(ctx, id, f)
		t.took = time.Since(t.started)
		close(t.done)
	}()
	return t, nil
}

func (t *tailFile) Read(p []byte) (int, error) {
	if t.closed {
		return 0, os.ErrClosed
	}
	size, err := t.await(t.off + 1)
	if err != nil {
		return 0, err
	}
	n := min(int64(len(p)), size-t.off)
	src := t.fd
	if t.mirror != nil { // what the store keeps
		src = int(t.mirror.Fd())
	}
	for {
		m, err := unix.Pread(src, p[:n], t.off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("rootfs diff: %w", err)
		}
		t.off += int64(m)
		t.punch()
		return m, nil
	}
}

// await returns the end of what may be read (see available) once it
// reaches need, or once the engine call ended short of it: then with
// io.EOF (the tar ended) or the engine's error, never a clean end for a
// tar cut short.
func (t *tailFile) await(need int64) (int64, error) {
	for {
		finished := false
		select {
		case <-t.done:
			finished = true // then the size below is final
		default:
		}
		size, err := t.available(need)
		if err != nil || size >= need {
			return size, err
		}
		if finished {
			if t.err != nil {
				return size, fmt.Errorf("rootfs diff: %w", t.err)
			}
			return size, io.EOF
		}
		t.wait()
	}
}

// The extraction copies big files' contents out of the file in the kernel.
var _ image.RangeCopier = (*upperStream)(nil)

// CopyRangeTo copies the next n bytes of the tar to the file open at fd (at
// its offset) with copy_file_range, waiting for the sentry to write them,
// and moves the stream past them (see image.RangeCopier). Short only when
// the tar ends or the engine failed: then with the error Read would give.
func (t *tailFile) CopyRangeTo(fd int, n int64) (int64, error) {
	if t.closed {
		return 0, os.ErrClosed
	}
	var done int64
	for done < n {
		size, err := t.await(t.off + 1)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return done, err
		}
		off := t.off
		m, err := unix.CopyFileRange(t.fd, &off, fd, nil, int(min(n-done, size-t.off, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if done == 0 && (err == unix.EXDEV || err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP) {
				return 0, fmt.Errorf("rootfs diff: copy_file_range: %w (%v)", errors.ErrUnsupported, err)
			}
			return done, fmt.Errorf("rootfs diff: copy_file_range: %w", err)
		}
		t.off += int64(m)
		done += int64(m)
		t.punch()
	}
	return done, nil
}

// The image store has the tar copied into its layer image's data area.
var _ image.TarFile = (*upperStream)(nil)

// MirrorTo has every byte of the tar copied into f (by the kernel, at the
// same offset) before Read returns it or Skip moves past it, and returns
// where the tar starts (see image.TarFile). Call it before the first Read.
func (t *tailFile) MirrorTo(f *os.File) (int64, error) {
	t.mirror, t.mirrored = f, tarStart
	return tarStart, nil
}

// available returns the end of what the reader may use: what the sentry
// has written, copied into the mirror first when there is one. The copy
// is the daemon's own: the sentry, which keeps writing into its file as
// long as it likes, cannot change it. When the mirror holds need bytes
// already, it says so without asking the file.
func (t *tailFile) available(need int64) (int64, error) {
	if t.mirror != nil && t.mirrored >= need {
		return t.mirrored, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(t.fd, &st); err != nil {
		return 0, fmt.Errorf("rootfs diff: %w", err)
	}
	if t.mirror == nil {
		return st.Size, nil
	}
	for t.mirrored < st.Size {
		src, dst := t.mirrored, t.mirrored
		m, err := unix.CopyFileRange(t.fd, &src, int(t.mirror.Fd()), &dst, int(min(st.Size-t.mirrored, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("rootfs diff: copy: %w", err)
		}
		if m == 0 {
			break
		}
		t.mirrored += int64(m)
	}
	return t.mirrored, nil
}

// Skip moves the stream past its next n bytes without reading them, once
// the sentry has written them (see image.TarFile). Short only when the tar
// ends or the engine failed: then with the error Read would give.
func (t *tailFile) Skip(n int64) (int64, error) {
	if t.closed {
		return 0, os.ErrClosed
	}
	size, err := t.await(t.off + n)
	if err == nil {
		t.off += n
		t.punch()
		return n, nil
	}
	done := max(size-t.off, 0)
	t.off += done
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return done, err
}

// wait returns after tailPoll, or sooner when the engine call ends.
func (t *tailFile) wait() {
	t.waits++
	if t.timer == nil {
		t.timer = time.NewTimer(tailPoll)
	} else {
		t.timer.Reset(tailPoll)
	}
	select {
	case <-t.done:
		t.timer.Stop()
	case <-t.timer.C:
	}
}

// punch frees what has been read, in whole pages, every punchEvery bytes.
// Only a saving: a filesystem that cannot punch holes keeps the pages.
func (t *tailFile) punch() {
	end := t.off &^ (4096 - 1)
	if end-t.punched < punchEvery {
		return
	}
	unix.Fallocate(t.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, t.punched, end-t.punched)
	t.punched = end
}

// Close waits for the engine call to end and releases the file.
func (t *tailFile) Close() error {
	if t.closed {
		return t.closeErr
	}
	t.closed = true
	<-t.done
	if t.timer != nil {
		t.timer.Stop()
	}
	t.closeErr = t.f.Close()
	if t.log != nil {
		t.log.Debug("rootfs diff read", "sandbox_id", t.id, "engine", t.took.Round(time.Microsecond),
			"bytes", t.off, "waits", t.waits, "open", time.Since(t.started).Round(time.Microsecond))
	}
	return t.closeErr
}
