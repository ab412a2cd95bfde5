package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"path"
	"strconv"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/fstar"
)

// WriteFile writes a file from a stream: a header, then data. The file is
// written in place as data comes; a stream that breaks leaves what was
// written. An existing file keeps its mode; a new one gets the header's.
func (s *fsService) WriteFile(ctx context.Context, stream *connect.ClientStream[agentv1.WriteFileRequest]) (*connect.Response[agentv1.WriteFileResponse], error) {
	if !stream.Receive() {
		return nil, toConnect(streamErr(stream.Err(), "write: no header"))
	}
	h := stream.Msg().GetHeader()
	if h == nil {
		return nil, toConnect(errInvalid("write: the first message must be the header"))
	}
	p, err := cleanPath("write", h.Path)
	if err != nil {
		return nil, fsToConnect("write", h.Path, err)
	}
	if h.SizeLimit < 0 {
		return nil, fsToConnect("write", p, errInvalid("negative size limit"))
	}
	flag := os.O_WRONLY | os.O_CREATE
	switch h.WriteMode {
	case agentv1.WriteMode_WRITE_MODE_UNSPECIFIED, agentv1.WriteMode_WRITE_MODE_TRUNCATE:
		flag |= os.O_TRUNC
	case agentv1.WriteMode_WRITE_MODE_APPEND:
		flag |= os.O_APPEND
	case agentv1.WriteMode_WRITE_MODE_EXCLUSIVE:
		flag |= os.O_EXCL
	default:
		return nil, fsToConnect("write", p, errInvalid("unknown write mode %d", h.WriteMode))
	}
	mode := h.Mode & 0o7777
	if mode == 0 {
		mode = 0o644
	}
	if h.Parents {
		if err := os.MkdirAll(path.Dir(p), 0o755); err != nil {
			return nil, fsToConnect("write", path.Dir(p), err)
		}
	}
	_, statErr := os.Lstat(p)
	f, err := os.OpenFile(p, flag, 0o600)
	if err != nil {
		return nil, fsToConnect("write", p, err)
	}
	defer f.Close()
	if os.IsNotExist(statErr) || flag&os.O_EXCL != 0 {
		if err := f.Chmod(goMode(mode)); err != nil {
			return nil, fsToConnect("write", p, err)
		}
	}
	var size int64
	if flag&os.O_APPEND != 0 {
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
	}
	var written int64
	for stream.Receive() {
		data := stream.Msg().GetData()
		if h.SizeLimit > 0 && size+int64(len(data)) > h.SizeLimit {
			return nil, fsToConnect("write", p, newFileError(agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE, "write", p,
				"file would exceed the size limit of "+strconv.FormatInt(h.SizeLimit, 10)+" bytes"))
		}
		n, err := f.Write(data)
		written += int64(n)
		size += int64(n)
		if err != nil {
			return nil, fsToConnect("write", p, err)
		}
	}
	if err := stream.Err(); err != nil {
		return nil, toConnect(err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fsToConnect("write", p, err)
	}
	if err := f.Close(); err != nil {
		return nil, fsToConnect("write", p, err)
	}
	return connect.NewResponse(&agentv1.WriteFileResponse{BytesWritten: written, Info: infoOf(p, fi)}), nil
}

// TarIn extracts a tar archive so that its entry "." becomes the header's
// path (see fstar.Extract).
func (s *fsService) TarIn(ctx context.Context, stream *connect.ClientStream[agentv1.TarInRequest]) (*connect.Response[agentv1.TarInResponse], error) {
	if !stream.Receive() {
		return nil, toConnect(streamErr(stream.Err(), "tar in: no header"))
	}
	h := stream.Msg().GetHeader()
	if h == nil {
		return nil, toConnect(errInvalid("tar in: the first message must be the header"))
	}
	p, err := cleanPath("untar", h.Path)
	if err != nil {
		return nil, fsToConnect("untar", h.Path, err)
	}
	r := &streamReader{next: func() ([]byte, error) {
		if !stream.Receive() {
			if err := stream.Err(); err != nil {
				return nil, &sendError{err}
			}
			return nil, io.EOF
		}
		return stream.Msg().GetData(), nil
	}}
	st, err := fstar.Extract(r, p)
	if err != nil {
		var se *sendError
		if errors.As(err, &se) {
			return nil, toConnect(se.err)
		}
		return nil, fsToConnect("untar", p, err)
	}
	io.Copy(io.Discard, r) // tar padding after the end marker
	return connect.NewResponse(&agentv1.TarInResponse{Entries: st.Entries, Bytes: st.Bytes}), nil
}

// streamReader reads the data of a stream's messages in order.
type streamReader struct {
	next func() ([]byte, error)
	buf  []byte
	err  error
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.buf, r.err = r.next()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// streamErr is the error of a client stream that ended before its header.
func streamErr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errInvalid("%s", msg)
}
