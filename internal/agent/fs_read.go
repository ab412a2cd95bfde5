package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/fstar"
)

// ReadFile streams a file or a range of it: the first message carries the
// file's info (and the first data), the next ones data of at most s.chunk
// bytes. It reads until the end of the file (or the range), whatever size
// stat reported, so growing files and /proc files read whole.
func (s *fsService) ReadFile(ctx context.Context, req *connect.Request[agentv1.ReadFileRequest], stream *connect.ServerStream[agentv1.ReadFileResponse]) error {
	f, info, r, err := openRead(req.Msg)
	if err != nil {
		return err
	}
	defer f.Close()
	p := info.Path
	buf := make([]byte, s.chunk)
	for first := true; ; first = false {
		n, err := io.ReadFull(r, buf)
		if n > 0 || first {
			msg := &agentv1.ReadFileResponse{Data: buf[:n]}
			if first {
				msg.Info = info
			}
			if serr := stream.Send(msg); serr != nil {
				return serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return fsToConnect("read", p, err)
		}
		if ctx.Err() != nil {
			return toConnect(ctx.Err())
		}
	}
}

// openRead opens the file or range that m asks for: f to close, its info
// and a reader of the range. Its errors are Connect errors.
func openRead(m *agentv1.ReadFileRequest) (f *os.File, info *agentv1.FileInfo, r io.Reader, err error) {
	p, err := cleanPath("read", m.Path)
	if err != nil {
		return nil, nil, nil, fsToConnect("read", m.Path, err)
	}
	if m.Offset < 0 || m.Length < 0 {
		return nil, nil, nil, fsToConnect("read", p, errInvalid("offset %d and length %d must not be negative", m.Offset, m.Length))
	}
	f, err = os.Open(p)
	if err != nil {
		return nil, nil, nil, fsToConnect("read", p, err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, nil, fsToConnect("read", p, err)
	}
	info = infoOf(p, fi)
	switch {
	case fi.IsDir():
		return nil, nil, nil, fsToConnect("read", p, newFileError(agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY, "read", p, "is a directory"))
	case !fi.Mode().IsRegular() && m.Length == 0:
		// A device or a fifo may never end: the caller must say how much.
		return nil, nil, nil, fsToConnect("read", p, errInvalid("read %s: not a regular file; give a length", p))
	}
	r = f
	if m.Offset > 0 {
		if fi.Mode().IsRegular() {
			r = io.NewSectionReader(f, m.Offset, 1<<62)
		} else if _, err := io.CopyN(io.Discard, f, m.Offset); err != nil && err != io.EOF {
			return nil, nil, nil, fsToConnect("read", p, err)
		}
	}
	if m.Length > 0 {
		r = io.LimitReader(r, m.Length)
	}
	return f, info, r, nil
}

// TarOut streams a tar archive of a file or tree (fstar's layout).
func (s *fsService) TarOut(ctx context.Context, req *connect.Request[agentv1.TarOutRequest], stream *connect.ServerStream[agentv1.DataChunk]) error {
	p, err := cleanPath("tar", req.Msg.Path)
	if err != nil {
		return fsToConnect("tar", req.Msg.Path, err)
	}
	if _, err := os.Lstat(p); err != nil {
		return fsToConnect("tar", p, err)
	}
	w := bufio.NewWriterSize(chunkSender(func(b []byte) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return stream.Send(&agentv1.DataChunk{Data: b})
	}), s.chunk)
	err = fstar.Write(w, p)
	if err == nil {
		err = w.Flush()
	}
	var se *sendError
	if errors.As(err, &se) {
		return se.err
	}
	return fsToConnect("tar", p, err)
}

// chunkSender is an io.Writer sending each write as one message. The sender
// must be done with b when it returns (Connect marshals in Send).
type chunkSender func(b []byte) error

func (f chunkSender) Write(b []byte) (int, error) {
	if err := f(b); err != nil {
		return 0, &sendError{err}
	}
	return len(b), nil
}

// sendError is a failure to send on a stream, told apart from file errors.
type sendError struct{ err error }

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }
