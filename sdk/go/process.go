package sandboxd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// ExecOptions describe a process to run in a sandbox. nil means the defaults.
type ExecOptions struct {
	// ExecID names the exec. Exec with an id that exists attaches to that
	// process instead of starting another. Empty: the daemon picks one.
	ExecID  string
	Workdir string
	Env     map[string]string
	Secrets []string
	// Timeout kills the process (Wait then reports 124 and TimedOut).
	Timeout time.Duration
	// Stdin opens the process's stdin for Process.Stdin; otherwise it reads EOF.
	Stdin bool
	// Stdout and Stderr, if set, receive the output as it comes; otherwise it
	// is buffered (up to 8 MiB each, then the process is slowed down) for
	// Process.Stdout and Process.Stderr. DiscardStdout/DiscardStderr drop it in
	// the sandbox.
	Stdout, Stderr               io.Writer
	DiscardStdout, DiscardStderr bool
	// TTY runs the process on a terminal of Rows x Cols (0: 24 x 80):
	// all output comes on Stdout, and Process.Resize changes the size.
	TTY        bool
	Rows, Cols int
}

// Process is a process started by Exec.
type Process struct {
	ExecID string
	// Stdin writes to the process's stdin (when ExecOptions.Stdin is set).
	Stdin io.WriteCloser
	// Stdout and Stderr read the output when no writer was given in ExecOptions.
	Stdout, Stderr io.Reader

	sb   *Sandbox
	done chan struct{}
	res  ExitStatus
	err  error
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code     int
	TimedOut bool
	// Signal is the signal that ended the process, if any (then Code is 128+Signal).
	Signal int
}

const (
	maxRetries   = 8
	pipeCapacity = 8 << 20
)

// Exec starts a process in the sandbox. Its output streams until it exits; a
// broken connection is resumed where it broke.
func (s *Sandbox) Exec(ctx context.Context, argv []string, o *ExecOptions) (*Process, error) {
	if o == nil {
		o = &ExecOptions{}
	}
	req := &pb.ExecRequest{
		SandboxId: s.ID, ExecId: o.ExecID, Argv: argv, Workdir: o.Workdir, Env: o.Env, Secrets: o.Secrets,
		Stdin: o.Stdin, TimeoutMs: o.Timeout.Milliseconds(),
		Tty: o.TTY, Rows: uint32(o.Rows), Cols: uint32(o.Cols),
	}
	if o.DiscardStdout {
		req.Stdout = pb.OutputMode_OUTPUT_MODE_DEVNULL
	}
	if o.DiscardStderr {
		req.Stderr = pb.OutputMode_OUTPUT_MODE_DEVNULL
	}
	stream, err := s.c.exec.Exec(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, wrap(err)
	}
	// The first event says the process exists (or why it does not).
	if !stream.Receive() {
		err := stream.Err()
		stream.Close()
		if err == nil {
			err = errors.New("exec stream ended before the process started")
		}
		return nil, wrap(err)
	}
	st, ok := stream.Msg().Event.(*pb.ExecEvent_Started)
	if !ok {
		stream.Close()
		return nil, fmt.Errorf("exec: unexpected first event %T", stream.Msg().Event)
	}
	p := &Process{ExecID: st.Started.ExecId, sb: s, done: make(chan struct{})}
	req.ExecId = p.ExecID
	out, errw := o.Stdout, o.Stderr
	var outPipe, errPipe *pipe
	if out == nil {
		outPipe = newPipe(pipeCapacity)
		out, p.Stdout = outPipe, outPipe
	}
	if errw == nil {
		errPipe = newPipe(pipeCapacity)
		errw, p.Stderr = errPipe, errPipe
	}
	if o.Stdin {
		p.Stdin = &stdinWriter{write: func(ctx context.Context, off int64, data []byte, close bool) (int64, error) {
			resp, err := s.c.exec.WriteStdin(ctx, connect.NewRequest(&pb.WriteStdinRequest{
				SandboxId: s.ID, ExecId: p.ExecID, Offset: off, Data: data, Close: close}))
			if err != nil {
				return 0, err
			}
			return resp.Msg.NextOffset, nil
		}}
	}
	go func() {
		p.res, p.err = p.pump(ctx, stream, req, out, errw)
		outPipe.closeWithError(p.err)
		errPipe.closeWithError(p.err)
		close(p.done)
	}()
	return p, nil
}

// pump copies the stream's output to the writers until the exit event,
// reattaching from the offsets reached when the stream breaks.
func (p *Process) pump(ctx context.Context, stream *connect.ServerStreamForClient[pb.ExecEvent], req *pb.ExecRequest, out, errw io.Writer) (ExitStatus, error) {
	var outOff, errOff int64
	write := func(w io.Writer, o *pb.Output, off *int64) error {
		if end := o.Offset + int64(len(o.Data)); end > *off && o.Offset <= *off {
			if _, err := w.Write(o.Data[*off-o.Offset:]); err != nil {
				return err
			}
			*off = end
		}
		return nil
	}
	for attempt := 0; ; {
		for stream.Receive() {
			attempt = 0
			var err error
			switch e := stream.Msg().Event.(type) {
			case *pb.ExecEvent_Stdout:
				err = write(out, e.Stdout, &outOff)
			case *pb.ExecEvent_Stderr:
				err = write(errw, e.Stderr, &errOff)
			case *pb.ExecEvent_Exited:
				stream.Close()
				return ExitStatus{Code: int(e.Exited.ExitCode), TimedOut: e.Exited.TimedOut, Signal: int(e.Exited.Signal)}, nil
			}
			if err != nil {
				stream.Close()
				return ExitStatus{}, err
			}
		}
		err := stream.Err()
		stream.Close()
		if err == nil {
			err = errors.New("exec stream ended without an exit status")
		}
		if !retryable(err) || attempt >= maxRetries || ctx.Err() != nil {
			return ExitStatus{}, wrap(err)
		}
		sleepBackoff(ctx, attempt)
		attempt++
		req.AttachOnly, req.StdoutOffset, req.StderrOffset = true, outOff, errOff
		stream, err = p.sb.c.exec.Exec(ctx, connect.NewRequest(req))
		if err != nil {
			return ExitStatus{}, wrap(err)
		}
	}
}

// Wait waits for the process to exit and returns its exit code.
func (p *Process) Wait(ctx context.Context) (int, error) {
	st, err := p.WaitStatus(ctx)
	return st.Code, err
}

// WaitStatus waits for the process to exit and returns how it ended.
func (p *Process) WaitStatus(ctx context.Context) (ExitStatus, error) {
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Signal sends a signal to the process's group.
func (p *Process) Signal(ctx context.Context, sig int) error {
	_, err := p.sb.c.exec.SignalExec(ctx, connect.NewRequest(&pb.SignalExecRequest{
		SandboxId: p.sb.ID, ExecId: p.ExecID, Signal: int32(sig)}))
	return wrap(err)
}

// retryable reports whether a stream error is a lost connection worth resuming.
func retryable(err error) bool {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code() == connect.CodeUnavailable || ce.Code() == connect.CodeUnknown
	}
	return false
}

func sleepBackoff(ctx context.Context, attempt int) {
	d := 20 * time.Millisecond << attempt
	if d > 2*time.Second {
		d = 2 * time.Second
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// stdinWriter writes stdin with offsets, so a retried write is not doubled.
type stdinWriter struct {
	mu     sync.Mutex
	off    int64
	closed bool
	write  func(ctx context.Context, off int64, data []byte, close bool) (int64, error)
}

func (w *stdinWriter) send(data []byte, close bool) error {
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		next, err := w.write(ctx, w.off, data, close)
		if err == nil {
			w.off = next
			return nil
		}
		if !retryable(err) || attempt >= maxRetries {
			return wrap(err)
		}
		sleepBackoff(ctx, attempt)
	}
}

func (w *stdinWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, io.ErrClosedPipe
	}
	for sent := 0; sent < len(b); {
		n := min(len(b)-sent, 1<<20)
		if err := w.send(b[sent:sent+n], false); err != nil {
			return sent, err
		}
		sent += n
	}
	return len(b), nil
}

func (w *stdinWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.send(nil, true)
}

// pipe is an in-memory pipe with a bounded buffer: Write blocks while it is
// full, Read blocks while it is empty and open.
type pipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	max    int
	closed bool
	err    error
}

func newPipe(max int) *pipe {
	p := &pipe{max: max}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) > 0 && len(p.buf)+len(b) > p.max && !p.closed {
		p.cond.Wait()
	}
	if p.closed {
		return 0, io.ErrClosedPipe
	}
	p.buf = append(p.buf, b...)
	p.cond.Broadcast()
	return len(b), nil
}

func (p *pipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && !p.closed {
		p.cond.Wait()
	}
	if len(p.buf) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	if len(p.buf) == 0 {
		p.buf = nil
	}
	p.cond.Broadcast()
	return n, nil
}

func (p *pipe) closeWithError(err error) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed, p.err = true, err
	p.cond.Broadcast()
}
