package agent

import (
	"context"
	"os"
	"path"
	"strconv"
	"syscall"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// putMax is the most data PutFile takes inline.
const putMax = 4 << 20

// PutFile writes a whole file from one message: WriteFile without the
// stream, for small files, where the stream's extra round trips inside the
// sandbox's network stack cost more than the data. It answers without the
// file's info (that would cost every write a syscall the SDK never reads).
func (s *fsService) PutFile(ctx context.Context, req *connect.Request[agentv1.PutFileRequest]) (*connect.Response[agentv1.PutFileResponse], error) {
	h := req.Msg.GetHeader()
	if h == nil {
		return nil, toConnect(errInvalid("put: a header is required"))
	}
	if len(req.Msg.Data) > putMax {
		return nil, fsToConnect("write", h.Path, errInvalid("put: %d bytes inline, more than %d: use WriteFile", len(req.Msg.Data), putMax))
	}
	w, err := openWrite(h)
	if err != nil {
		return nil, err
	}
	n, err := w.write(req.Msg.Data)
	if cerr := w.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.PutFileResponse{BytesWritten: n}), nil
}

// writeTarget is a file opened for a write call, as its header says. It is
// used through raw syscalls: inside gVisor each one costs tens of
// microseconds, and an *os.File adds some (a poller probe, an fstat).
type writeTarget struct {
	fd    int
	path  string
	limit int64 // the most bytes the file may hold; 0: no limit
	size  int64 // its size so far
}

// openWrite validates a write's header and opens its file. An existing file
// keeps its mode; a file it creates gets exactly the header's mode (the
// umask does not apply). Its errors are Connect errors.
func openWrite(h *agentv1.WriteHeader) (*writeTarget, error) {
	p, err := cleanPath("write", h.Path)
	if err != nil {
		return nil, fsToConnect("write", h.Path, err)
	}
	if h.SizeLimit < 0 {
		return nil, fsToConnect("write", p, errInvalid("negative size limit"))
	}
	flag := syscall.O_WRONLY | syscall.O_CLOEXEC
	switch h.WriteMode {
	case agentv1.WriteMode_WRITE_MODE_UNSPECIFIED, agentv1.WriteMode_WRITE_MODE_TRUNCATE:
		flag |= syscall.O_TRUNC
	case agentv1.WriteMode_WRITE_MODE_APPEND:
		flag |= syscall.O_APPEND
	case agentv1.WriteMode_WRITE_MODE_EXCLUSIVE:
		flag |= syscall.O_CREAT | syscall.O_EXCL
	default:
		return nil, fsToConnect("write", p, errInvalid("unknown write mode %d", h.WriteMode))
	}
	mode := h.Mode & 0o7777
	if mode == 0 {
		mode = 0o644
	}
	fd, err := openOrCreate(p, flag, mode)
	if err == syscall.ENOENT && h.Parents {
		// Make the parents only when they are missing: most writes go
		// where directories exist, and a stat of them is a syscall.
		if err := os.MkdirAll(path.Dir(p), 0o755); err != nil {
			return nil, fsToConnect("write", path.Dir(p), err)
		}
		fd, err = openOrCreate(p, flag, mode)
	}
	if err != nil {
		return nil, fsToConnect("write", p, err)
	}
	w := &writeTarget{fd: fd, path: p, limit: h.SizeLimit}
	if h.SizeLimit > 0 && flag&syscall.O_APPEND != 0 {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			w.close()
			return nil, fsToConnect("write", p, err)
		}
		w.size = st.Size
	}
	return w, nil
}

// openOrCreate opens p with flag, creating it with mode if missing. It tells
// a new file from an existing one by how it was opened rather than by a
// stat beforehand, which would cost a syscall and could be stale.
func openOrCreate(p string, flag int, mode uint32) (int, error) {
	if flag&syscall.O_EXCL == 0 {
		fd, err := open(p, flag, 0)
		if err != syscall.ENOENT {
			return fd, err // an existing file (or a real error)
		}
		fd, err = open(p, flag|syscall.O_CREAT|syscall.O_EXCL, mode&0o777)
		if err == syscall.EEXIST {
			// Created meanwhile, or a dangling symlink (O_EXCL does not
			// follow it): open as open(2) would, without forcing a mode.
			return open(p, flag|syscall.O_CREAT, mode&0o777)
		}
		if err != nil {
			return -1, err
		}
		return fd, fchmodNew(fd, mode)
	}
	fd, err := open(p, flag, mode&0o777)
	if err != nil {
		return -1, err
	}
	return fd, fchmodNew(fd, mode)
}

// fchmodNew gives the file just created at fd exactly mode, which open(2)
// masked with the umask and which may hold setuid, setgid or sticky bits.
// On failure it closes fd.
func fchmodNew(fd int, mode uint32) error {
	if err := syscall.Fchmod(fd, mode); err != nil {
		syscall.Close(fd)
		return err
	}
	return nil
}

func open(p string, flag int, mode uint32) (int, error) {
	for {
		fd, err := syscall.Open(p, flag, mode)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// write appends data to the file, refusing with FILE_TOO_LARGE what would
// grow it past its limit. It returns how many bytes it wrote; its errors
// are Connect errors.
func (w *writeTarget) write(data []byte) (int64, error) {
	if w.limit > 0 && w.size+int64(len(data)) > w.limit {
		return 0, fsToConnect("write", w.path, newFileError(agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE, "write", w.path,
			"file would exceed the size limit of "+strconv.FormatInt(w.limit, 10)+" bytes"))
	}
	var n int64
	for len(data) > 0 {
		k, err := syscall.Write(w.fd, data)
		if k > 0 {
			n += int64(k)
			w.size += int64(k)
			data = data[k:]
		}
		switch {
		case err == syscall.EINTR:
		case err != nil:
			return n, fsToConnect("write", w.path, err)
		case k == 0:
			return n, fsToConnect("write", w.path, syscall.EIO)
		}
	}
	return n, nil
}

// info describes the file as it is now.
func (w *writeTarget) info() (*agentv1.FileInfo, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(w.fd, &st); err != nil {
		return nil, fsToConnect("write", w.path, err)
	}
	return infoFromStat(w.path, &st), nil
}

// finish ends a write of n bytes: the answer describes the file as the
// write left it, and the close's error is the write's.
func (w *writeTarget) finish(n int64) (*connect.Response[agentv1.WriteFileResponse], error) {
	info, err := w.info()
	if err != nil {
		return nil, err
	}
	if err := w.close(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentv1.WriteFileResponse{BytesWritten: n, Info: info}), nil
}

// close closes the file; its error (a failed write-back) is the write's.
// It may be called again, doing nothing.
func (w *writeTarget) close() error {
	if w.fd < 0 {
		return nil
	}
	err := syscall.Close(w.fd)
	w.fd = -1
	if err != nil && err != syscall.EINTR {
		return fsToConnect("write", w.path, err)
	}
	return nil
}
