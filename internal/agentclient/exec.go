package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// ExecStream is the event stream of one Exec call. It tracks the offsets of
// the output received, so a caller that loses the stream resumes exactly with
// Exec(ExecRequest{ExecId, StdoutOffset, StderrOffset, AttachOnly: true}).
// It is not safe for concurrent use.
type ExecStream struct {
	id      string
	s       *connect.ServerStreamForClient[agentv1.ExecEvent]
	offs    [2]int64
	started *agentv1.Started
	exited  *agentv1.Exited
}

// Exec starts the exec req.ExecId (or attaches to it if it exists) and
// returns its event stream from req's offsets. The first event is Started,
// the last Exited; errors (bad spec, unknown exec with AttachOnly, dropped
// offsets) surface from the first Recv.
func (c *Client) Exec(ctx context.Context, req *agentv1.ExecRequest) (*ExecStream, error) {
	s, err := c.client().Exec(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, fromConnect(err, "exec "+req.ExecId)
	}
	return &ExecStream{id: req.ExecId, s: s, offs: [2]int64{req.StdoutOffset, req.StderrOffset}}, nil
}

// Recv returns the next event, or io.EOF after the Exited event. Any other
// error means the stream broke; the exec itself goes on in the sandbox.
func (s *ExecStream) Recv() (*agentv1.ExecEvent, error) {
	if s.exited != nil {
		return nil, io.EOF
	}
	if !s.s.Receive() {
		if err := s.s.Err(); err != nil {
			return nil, fromConnect(err, "exec "+s.id)
		}
		return nil, fromConnect(connect.NewError(connect.CodeUnavailable,
			errors.New("stream ended before the exit")), "exec "+s.id)
	}
	ev := s.s.Msg()
	switch e := ev.Event.(type) {
	case *agentv1.ExecEvent_Started:
		s.started = e.Started
	case *agentv1.ExecEvent_Stdout:
		s.offs[0] = e.Stdout.Offset + int64(len(e.Stdout.Data))
	case *agentv1.ExecEvent_Stderr:
		s.offs[1] = e.Stderr.Offset + int64(len(e.Stderr.Data))
	case *agentv1.ExecEvent_Exited:
		s.exited = e.Exited
	}
	return ev, nil
}

// Offsets returns the offsets after the output received so far.
func (s *ExecStream) Offsets() (stdout, stderr int64) { return s.offs[0], s.offs[1] }

// Started returns the Started event once received, else nil.
func (s *ExecStream) Started() *agentv1.Started { return s.started }

// Exited returns the Exited event once received, else nil.
func (s *ExecStream) Exited() *agentv1.Exited { return s.exited }

// Close ends the stream (not the exec). After the Exited event it first
// reads the stream to its end, which the agent sends right after: an
// HTTP/1.1 response closed before its end takes its connection with it,
// and the next call to the agent would pay for a new one (a TCP handshake
// and a first request into the sandbox's network stack: 6-8 ms here, as
// much as half an exec round trip).
func (s *ExecStream) Close() error {
	if s.exited != nil {
		for s.s.Receive() {
		}
	}
	return s.s.Close()
}

// Run runs an exec to its end, copying its output to stdout and stderr (nil
// discards), and returns its exit. When the stream breaks (a transport
// failure or an Unavailable error, not an error the agent answered) it
// attaches again from the offsets already copied, so
// no byte is lost or repeated, until ctx ends. A spec is needed only when
// the exec does not exist yet.
func (c *Client) Run(ctx context.Context, id string, spec *agentv1.ProcessSpec, stdout, stderr io.Writer) (*agentv1.Exited, error) {
	req := &agentv1.ExecRequest{ExecId: id, Spec: spec}
	backoff := time.Millisecond
	for {
		ex, err := c.runOnce(ctx, req, [2]io.Writer{stdout, stderr})
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return ex, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
		req.AttachOnly = true
	}
}

// retryable reports whether err broke the stream rather than came from the
// agent: a transport failure, or an Unavailable error.
func retryable(err error) bool {
	var ce *connect.Error
	if errors.As(err, &ce) && connect.IsWireError(ce) {
		return ce.Code() == connect.CodeUnavailable
	}
	var we *writeError
	return !errors.As(err, &we)
}

// writeError is a failure of the caller's writer; Run does not retry it.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// runOnce follows one Exec stream, advancing req's offsets as output is copied.
func (c *Client) runOnce(ctx context.Context, req *agentv1.ExecRequest, w [2]io.Writer) (*agentv1.Exited, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.Exec(ctx, req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	for {
		ev, err := s.Recv()
		if err != nil {
			return nil, err
		}
		var out *agentv1.Output
		var i int
		switch e := ev.Event.(type) {
		case *agentv1.ExecEvent_Stdout:
			out, i = e.Stdout, 0
		case *agentv1.ExecEvent_Stderr:
			out, i = e.Stderr, 1
		case *agentv1.ExecEvent_Exited:
			return e.Exited, nil
		}
		if out == nil {
			continue
		}
		if w[i] != nil {
			if _, err := w[i].Write(out.Data); err != nil {
				return nil, &writeError{fmt.Errorf("exec %s: copy output: %w", req.ExecId, err)}
			}
		}
		req.StdoutOffset, req.StderrOffset = s.Offsets()
	}
}
