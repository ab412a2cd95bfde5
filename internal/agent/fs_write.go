package agent

import (
	"context"
	"errors"
	"io"

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
	w, err := openWrite(h)
	if err != nil {
		return nil, err
	}
	defer w.close()
	var written int64
	for stream.Receive() {
		n, err := w.write(stream.Msg().GetData())
		written += n
		if err != nil {
			return nil, err
		}
	}
	if err := stream.Err(); err != nil {
		return nil, toConnect(err)
	}
	return w.finish(written)
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
