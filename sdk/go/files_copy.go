package sandboxd

import (
	"context"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/fstar"
)

// ReadTar returns a tar archive of the file or tree p, streamed: p itself
// is the entry ".", the tree's entries "./sub/name"; symlinks are archived
// as links. Close it when done.
func (f *Files) ReadTar(ctx context.Context, p string) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := f.sb.c.files.TarOut(ctx, connect.NewRequest(&pb.TarOutRequest{SandboxId: f.sb.ID, Path: p}))
	if err != nil {
		cancel()
		return nil, wrapFile(err)
	}
	return &tarReader{s: s, cancel: cancel}, nil
}

type tarReader struct {
	s      *connect.ServerStreamForClient[pb.DataChunk]
	cancel context.CancelFunc
	buf    []byte
	err    error
}

func (r *tarReader) Read(p []byte) (int, error) {
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

func (r *tarReader) Close() error {
	r.cancel()
	return r.s.Close()
}

// WriteTar extracts the tar archive r (in ReadTar's layout) so that its
// entry "." becomes p: a directory is made (with parents) or merged into; a
// file or symlink replaces what is at p. Entries cannot land outside p.
func (f *Files) WriteTar(ctx context.Context, p string, r io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := f.sb.c.files.TarIn(ctx)
	finish := func(err error) error {
		if _, rerr := s.CloseAndReceive(); rerr != nil {
			return wrapFile(rerr)
		}
		return wrapFile(err)
	}
	if err := s.Send(&pb.TarInRequest{Msg: &pb.TarInRequest_Header{Header: &pb.TarInHeader{SandboxId: f.sb.ID, Path: p}}}); err != nil {
		return finish(err)
	}
	buf := make([]byte, fileChunk)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := s.Send(&pb.TarInRequest{Msg: &pb.TarInRequest_Data{Data: buf[:n]}}); err != nil {
				return finish(err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return finish(nil)
		}
		if rerr != nil {
			cancel() // do not let the agent take a partial archive as whole
			s.CloseAndReceive()
			return rerr
		}
	}
}

// CopyTo copies the local file or tree src into the sandbox as cp -r would:
// to dst/NAME if dst is a directory (NAME is src's last element), else to
// dst. Modes, modification times and symlinks are kept (symlinks are copied
// as links, not followed), ownership is not.
func (f *Files) CopyTo(ctx context.Context, src, dst string) error {
	if _, err := os.Lstat(src); err != nil {
		return err
	}
	if fi, err := f.StatFollow(ctx, dst); err == nil && fi.IsDir() {
		dst = path.Join(dst, filepath.Base(filepath.Clean(src)))
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(fstar.Write(pw, src)) }()
	err := f.WriteTar(ctx, dst, pr)
	pr.CloseWithError(errors.New("copy ended"))
	return err
}

// CopyFrom copies the file or tree src of the sandbox to the local path dst
// as cp -r would (into dst if it is a directory). Entries of the archive
// cannot land outside the destination, whatever the sandbox sends.
func (f *Files) CopyFrom(ctx context.Context, src, dst string) error {
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		dst = filepath.Join(dst, path.Base(path.Clean(src)))
	}
	r, err := f.ReadTar(ctx, src)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = fstar.Extract(r, dst)
	return err
}
