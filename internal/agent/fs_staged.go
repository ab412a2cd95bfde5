package agent

import (
	"context"
	"regexp"
	"syscall"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// Large writes through the staging dir. The sandbox's network stack moves
// a few hundred MB/s at best, and every message costs it goroutine wake-ups;
// the staging dir is a host directory the sandbox reads directly (a
// read-only bind mount without gVisor's overlay). So for a large write the
// daemon puts the data in a file there, a step at a time, and the agent
// copies each step's file into the target: WriteStaged.

// stagedNameRE is the shape of a staged file's name: hidden, so that it
// never collides with a staged image (whose names start with [a-z0-9]).
var stagedNameRE = regexp.MustCompile(`^\.xfer-[0-9a-f]{1,64}$`)

// stagedCopyBuf is the size of the reads of a staged file. The buffers are
// kept between calls (fsService.copyBufs): inside gVisor, touching fresh
// memory costs page faults that the sentry serves one by one.
const stagedCopyBuf = 1 << 20

// WriteStaged appends the staged file req.Source to the target of req's
// header (see files.proto). It holds the staged file open only while it
// copies: when it answers, the sandbox holds nothing of the host's.
func (s *fsService) WriteStaged(ctx context.Context, req *connect.Request[agentv1.WriteStagedRequest]) (*connect.Response[agentv1.WriteFileResponse], error) {
	m := req.Msg
	h := m.GetHeader()
	if h == nil {
		return nil, toConnect(errInvalid("write staged: a header is required"))
	}
	if !stagedNameRE.MatchString(m.Source) {
		return nil, toConnect(errInvalid("write staged: bad source name %q", m.Source))
	}
	if m.Written < 0 {
		return nil, toConnect(errInvalid("write staged: negative written %d", m.Written))
	}
	src, err := open(s.stageDir+"/"+m.Source, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		// The daemon's file, not the caller's path: not a FileError.
		return nil, toConnect(errInvalid("write staged: open source %s: %v", m.Source, err))
	}
	defer syscall.Close(src)
	var w *writeTarget
	if m.Written == 0 {
		w, err = openWrite(h)
	} else {
		w, err = openContinue(h, m.Written)
	}
	if err != nil {
		return nil, err
	}
	defer w.close()
	undo := preallocate(w, src, h.WriteMode == agentv1.WriteMode_WRITE_MODE_APPEND)
	n, err := s.copyStaged(ctx, w, src, m.Source)
	if err != nil {
		undo(n)
		return nil, err
	}
	return w.finish(n)
}

// openContinue opens the target of a write whose earlier steps wrote
// written bytes: as it is (no create, no truncate), positioned after them,
// or at its end for an append. Its errors are Connect errors.
func openContinue(h *agentv1.WriteHeader, written int64) (*writeTarget, error) {
	p, err := cleanPath("write", h.Path)
	if err != nil {
		return nil, fsToConnect("write", h.Path, err)
	}
	if h.SizeLimit < 0 {
		return nil, fsToConnect("write", p, errInvalid("negative size limit"))
	}
	appending := h.WriteMode == agentv1.WriteMode_WRITE_MODE_APPEND
	flag := syscall.O_WRONLY | syscall.O_CLOEXEC
	if appending {
		flag |= syscall.O_APPEND
	}
	fd, err := open(p, flag, 0)
	if err != nil {
		return nil, fsToConnect("write", p, err)
	}
	w := &writeTarget{fd: fd, path: p, limit: h.SizeLimit, size: written}
	switch {
	case appending && h.SizeLimit > 0:
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			w.close()
			return nil, fsToConnect("write", p, err)
		}
		w.size = st.Size
	case !appending:
		if _, err := syscall.Seek(fd, written, 0); err != nil {
			w.close()
			return nil, fsToConnect("write", p, err)
		}
	}
	return w, nil
}

// copyStaged copies the staged file src to its end into w and returns the
// number of bytes written. Its errors are Connect errors.
func (s *fsService) copyStaged(ctx context.Context, w *writeTarget, src int, name string) (int64, error) {
	bp := s.copyBufs.Get().(*[]byte)
	defer s.copyBufs.Put(bp)
	buf := *bp
	var written int64
	for {
		k, err := syscall.Read(src, buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return written, toConnect(errInvalid("write staged: read source %s: %v", name, err))
		case k == 0:
			return written, nil
		}
		n, err := w.write(buf[:k])
		written += n
		if err != nil {
			return written, err
		}
		if ctx.Err() != nil {
			return written, toConnect(ctx.Err())
		}
	}
}

// preallocate allocates the target's range the staged file src will fill,
// in one call rather than page by page as the writes come: inside gVisor a
// tmpfs or overlay file then takes the copy at about twice the speed
// (measured with raw runsc, 256 MiB in 16 MiB steps: 1.5-2.0 GB/s against
// 0.3-1.9 GB/s). gVisor's fallocate knows only mode 0, which grows the
// file: undo(n), called when the copy failed after n bytes, shrinks it back
// to what was really written. Appends are left alone (O_APPEND writes after
// the allocated end), as are writes the size limit would refuse, and any
// failure only costs the speed-up.
func preallocate(w *writeTarget, src int, appending bool) (undo func(n int64)) {
	none := func(int64) {}
	var sst, tst syscall.Stat_t
	if appending || syscall.Fstat(src, &sst) != nil || sst.Size == 0 || syscall.Fstat(w.fd, &tst) != nil {
		return none
	}
	at := w.size
	if w.limit > 0 && at+sst.Size > w.limit {
		return none
	}
	if err := syscall.Fallocate(w.fd, 0, at, sst.Size); err != nil || tst.Size >= at+sst.Size {
		return none
	}
	return func(n int64) { syscall.Ftruncate(w.fd, max(tst.Size, at+n)) }
}
