package agent

import (
	"context"
	"syscall"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// getMax is the most bytes GetFile returns.
const getMax = 4 << 20

// GetFile reads a whole small regular file in one message: ReadFile without
// the stream, whose extra messages cost more than the data. It takes four
// syscalls (open, fstat, read, close) where an *os.File takes six or more:
// inside gVisor each is tens of microseconds. A file it will not read whole
// is answered with complete = false and no data, for ReadFile to stream.
func (s *fsService) GetFile(ctx context.Context, req *connect.Request[agentv1.GetFileRequest]) (*connect.Response[agentv1.GetFileResponse], error) {
	p, err := cleanPath("read", req.Msg.Path)
	if err != nil {
		return nil, fsToConnect("read", req.Msg.Path, err)
	}
	limit := req.Msg.MaxSize
	if limit <= 0 || limit > getMax {
		limit = getMax
	}
	fd, err := open(p, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fsToConnect("read", p, err)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, fsToConnect("read", p, err)
	}
	info := infoFromStat(p, &st)
	switch {
	case info.Type == agentv1.FileType_FILE_TYPE_DIRECTORY:
		return nil, fsToConnect("read", p, newFileError(agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY, "read", p, "is a directory"))
	case info.Type != agentv1.FileType_FILE_TYPE_FILE || st.Size > limit:
		return connect.NewResponse(&agentv1.GetFileResponse{Info: info}), nil
	}
	data, whole, err := readWhole(fd, st.Size, limit)
	if err != nil {
		return nil, fsToConnect("read", p, err)
	}
	if !whole {
		return connect.NewResponse(&agentv1.GetFileResponse{Info: info}), nil
	}
	return connect.NewResponse(&agentv1.GetFileResponse{Info: info, Data: data, Complete: true}), nil
}

// readWhole reads the regular file fd, which fstat said holds size bytes,
// to its end, unless it holds more than limit (whole is then false). A read
// that returns exactly size bytes into a buffer one byte larger has met the
// end: the usual case takes one read. Files whose stat size is not their
// content (/proc's say 0) are read until a read returns nothing.
func readWhole(fd int, size, limit int64) (data []byte, whole bool, err error) {
	buf := make([]byte, 0, size+1)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, false, nil
			}
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, false, err
		case n == 0:
			return buf, int64(len(buf)) <= limit, nil
		}
		buf = buf[:len(buf)+n]
		if size > 0 && int64(len(buf)) == size && len(buf) < cap(buf) {
			return buf, true, nil
		}
	}
}
