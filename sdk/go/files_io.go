package sandboxd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// fileChunk is the most bytes sent in one message of a write.
const fileChunk = 256 << 10

// FileReader reads a file of a sandbox as it streams in. Close it when done.
// Not safe for concurrent use.
type FileReader struct {
	info   FileInfo
	s      *connect.ServerStreamForClient[pb.ReadFileResponse]
	cancel context.CancelFunc
	buf    []byte
	err    error
}

// Info describes the file as it was when it was opened.
func (r *FileReader) Info() FileInfo { return r.info }

func (r *FileReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if !r.s.Receive() {
			r.err = io.EOF
			if err := r.s.Err(); err != nil {
				r.err = wrapFile(err)
			}
			continue
		}
		r.buf = r.s.Msg().Data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// Close stops the stream.
func (r *FileReader) Close() error {
	r.cancel()
	r.s.Close()
	return nil
}

// Open opens the file p for reading; the content streams as it is read.
func (f *Files) Open(ctx context.Context, p string) (*FileReader, error) {
	return f.OpenRange(ctx, p, 0, 0)
}

// OpenRange opens length bytes of the file p from offset (length 0: to the
// end). A range past the end reads nothing.
func (f *Files) OpenRange(ctx context.Context, p string, offset, length int64) (*FileReader, error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := f.sb.c.fileReads.ReadFile(ctx, connect.NewRequest(&pb.ReadFileRequest{
		SandboxId: f.sb.ID, Path: p, Offset: offset, Length: length}))
	if err != nil {
		cancel()
		return nil, wrapFile(err)
	}
	// The first message says whether the file could be opened.
	if !s.Receive() {
		err := s.Err()
		s.Close()
		cancel()
		if err == nil {
			err = errors.New("read " + p + ": stream ended before the file's info")
		}
		return nil, wrapFile(err)
	}
	m := s.Msg()
	return &FileReader{info: fileInfoFromPB(m.Info), s: s, cancel: cancel, buf: m.Data}, nil
}

// wholeMax is the largest file ReadFile and WriteFile move in one message
// (GetFile, PutFile) rather than stream: for small files a stream's extra
// round trips, into the sandbox's network stack above all, cost more than
// the data.
const wholeMax = 1 << 20

// ReadFile returns the content of the file p: a regular file of up to 1 MiB
// in one call, anything else streamed.
func (f *Files) ReadFile(ctx context.Context, p string) ([]byte, error) {
	resp, err := f.sb.c.files.GetFile(ctx, connect.NewRequest(&pb.GetFileRequest{SandboxId: f.sb.ID, Path: p, MaxSize: wholeMax}))
	switch {
	case err == nil && resp.Msg.Complete:
		return resp.Msg.Data, nil
	case err != nil && !unimplemented(err):
		return nil, wrapFile(err)
	}
	// Larger than wholeMax, not a regular file, or a daemon or agent older
	// than GetFile: stream it.
	r, err := f.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var b bytes.Buffer
	if n := r.info.Size; n > 0 && n < 1<<31 {
		b.Grow(int(n))
	}
	_, err = b.ReadFrom(r)
	return b.Bytes(), err
}

// unimplemented reports whether err says that the daemon, or the sandbox's
// agent (restored from a snapshot of an older version), lacks a call.
func unimplemented(err error) bool { return connect.CodeOf(err) == connect.CodeUnimplemented }

// WriteOptions say how a file is written. nil means the defaults: create or
// truncate, mode 0644 for a new file.
type WriteOptions struct {
	// Mode of a new file (0 means 0644); an existing file keeps its own.
	Mode fs.FileMode
	// Append to the file instead of truncating it.
	Append bool
	// Exclusive fails with ErrAlreadyExists if the file exists.
	Exclusive bool
	// MakeParents makes missing parent directories.
	MakeParents bool
	// SizeLimit fails the write with ErrFileTooLarge rather than let the
	// file grow past it; 0 means the daemon's limit, if any.
	SizeLimit int64
}

// FileWriter writes a file of a sandbox as a stream. Errors may surface at
// any Write and at the latest at Close, which must be called: the file is
// complete once Close returns nil. Not safe for concurrent use.
type FileWriter struct {
	s      *connect.ClientStreamForClient[pb.WriteFileRequest, pb.WriteFileResponse]
	cancel context.CancelFunc
	buf    []byte
	err    error
	n      int64
	closed bool
}

// Create opens the file p for writing, as o says.
func (f *Files) Create(ctx context.Context, p string, o *WriteOptions) (*FileWriter, error) {
	hdr, err := f.writeHeader(p, o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &FileWriter{s: f.sb.c.files.WriteFile(ctx), cancel: cancel, buf: make([]byte, 0, fileChunk)}
	if err := w.send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Header{Header: hdr}}); err != nil {
		w.Close()
		return nil, w.err
	}
	return w, nil
}

// writeHeader is the header of a write of p as o says (nil: the defaults).
func (f *Files) writeHeader(p string, o *WriteOptions) (*pb.WriteHeader, error) {
	if o == nil {
		o = &WriteOptions{}
	}
	mode := pb.WriteMode_WRITE_MODE_TRUNCATE
	switch {
	case o.Append && o.Exclusive:
		return nil, &Error{Class: ErrInvalidArgument, Message: "write " + p + ": Append and Exclusive exclude each other"}
	case o.Append:
		mode = pb.WriteMode_WRITE_MODE_APPEND
	case o.Exclusive:
		mode = pb.WriteMode_WRITE_MODE_EXCLUSIVE
	}
	return &pb.WriteHeader{SandboxId: f.sb.ID, Path: p, WriteMode: mode, Mode: modeToUnix(o.Mode),
		Parents: o.MakeParents, SizeLimit: o.SizeLimit}, nil
}

func (w *FileWriter) send(m *pb.WriteFileRequest) error {
	if err := w.s.Send(m); err != nil {
		// The daemon answered early (an error): its answer says why.
		if _, rerr := w.s.CloseAndReceive(); rerr != nil {
			err = rerr
		}
		w.closed = true
		w.err = wrapFile(err)
		w.cancel()
		return w.err
	}
	return nil
}

func (w *FileWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Data{Data: w.buf}})
	w.buf = w.buf[:0]
	return err
}

// Write sends p (in chunks, as they fill).
func (w *FileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, fs.ErrClosed
	}
	n := len(p)
	for len(p) > 0 {
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	w.n += int64(n)
	return n, nil
}

// Close sends what is left and waits until the file is written.
func (w *FileWriter) Close() error {
	if w.closed {
		return w.err
	}
	if err := w.flush(); err != nil {
		return err
	}
	w.closed = true
	_, err := w.s.CloseAndReceive()
	w.cancel()
	if err != nil {
		w.err = wrapFile(err)
	}
	return w.err
}

// WriteFile writes data to the file p, as o says (nil: create or truncate):
// up to 1 MiB in one call, more streamed.
func (f *Files) WriteFile(ctx context.Context, p string, data []byte, o *WriteOptions) error {
	if len(data) <= wholeMax {
		if done, err := f.put(ctx, p, data, o); done {
			return err
		}
	}
	_, err := f.writeStream(ctx, p, bytes.NewReader(data), o)
	return err
}

// WriteFrom writes the file p with what r gives until EOF, and returns the
// number of bytes written. What r gives beyond wholeMax is streamed as it
// comes; up to that, it is sent once r ends, in one call.
func (f *Files) WriteFrom(ctx context.Context, p string, r io.Reader, o *WriteOptions) (int64, error) {
	head, err := io.ReadAll(io.LimitReader(r, wholeMax+1))
	if err != nil {
		return 0, err
	}
	if len(head) <= wholeMax {
		if done, err := f.put(ctx, p, head, o); done {
			if err != nil {
				return 0, err
			}
			return int64(len(head)), nil
		}
	}
	return f.writeStream(ctx, p, io.MultiReader(bytes.NewReader(head), r), o)
}

// put writes the whole file p in one call. done is false when the daemon or
// the sandbox's agent is older than PutFile: the caller streams instead.
func (f *Files) put(ctx context.Context, p string, data []byte, o *WriteOptions) (done bool, err error) {
	hdr, err := f.writeHeader(p, o)
	if err != nil {
		return true, err
	}
	_, err = f.sb.c.files.PutFile(ctx, connect.NewRequest(&pb.PutFileRequest{Header: hdr, Data: data}))
	if err != nil && unimplemented(err) {
		return false, nil
	}
	return true, wrapFile(err)
}

// writeStream writes the file p with what r gives until EOF, streamed.
func (f *Files) writeStream(ctx context.Context, p string, r io.Reader, o *WriteOptions) (int64, error) {
	w, err := f.Create(ctx, p, o)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(w, r)
	if err != nil {
		w.cancel()
		w.Close()
		return n, err
	}
	return n, w.Close()
}
