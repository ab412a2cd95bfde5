package agent

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// stdinPipe is the agent's end of an exec's stdin. Writes carry offsets so a
// client may re-send a range it is unsure about: bytes already accepted are
// acknowledged without being written again. Safe for concurrent use; writes
// are serialised.
type stdinPipe struct {
	f    *os.File    // write end; set once, closed by close or shut
	gone atomic.Bool // the process exited

	mu       sync.Mutex
	accepted int64 // bytes written so far: the next write's offset
	closed   bool  // closed on request
}

func newStdinPipe(f *os.File) *stdinPipe { return &stdinPipe{f: f} }

// write writes data at offset off and closes stdin after it when close is
// set. It returns the number of bytes accepted so far. A range already
// accepted is acknowledged (idempotent); an offset past the accepted bytes is
// an out-of-range error. A write blocks while the process does not read;
// when ctx ends first, the bytes written so far stay accepted and ctx's
// error is returned.
func (s *stdinPipe) write(ctx context.Context, off int64, data []byte, close bool) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < 0 {
		return s.accepted, errdefs.Invalid("stdin offset %d is negative", off)
	}
	if off > s.accepted {
		return s.accepted, outOfRange("stdin gap: write at offset %d but only %d bytes accepted; resend from %d", off, s.accepted, s.accepted)
	}
	p := data[min(int64(len(data)), s.accepted-off):]
	if len(p) == 0 && (s.closed || !close) {
		return s.accepted, nil // a re-sent range, or an empty write
	}
	if s.closed {
		return s.accepted, errdefs.FailedPrecondition("stdin is closed; %d bytes were accepted", s.accepted)
	}
	if s.gone.Load() {
		return s.accepted, errdefs.FailedPrecondition("process has exited; %d bytes of stdin were accepted", s.accepted)
	}
	if len(p) > 0 {
		n, err := s.writeCtx(ctx, p)
		s.accepted += int64(n)
		if err != nil {
			return s.accepted, err
		}
	}
	if close {
		s.closed = true
		s.f.Close()
	}
	return s.accepted, nil
}

// writeCtx writes p, giving up when ctx ends. The caller holds s.mu.
func (s *stdinPipe) writeCtx(ctx context.Context, p []byte) (int, error) {
	s.f.SetWriteDeadline(time.Time{})
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		s.f.SetWriteDeadline(time.Unix(1, 0))
	})
	n, err := s.f.Write(p)
	if !stop() {
		<-fired
	}
	switch {
	case err == nil:
		return n, nil
	case ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return n, ctx.Err()
	case s.gone.Load() || errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed):
		return n, errdefs.FailedPrecondition("process closed its stdin or exited")
	default:
		return n, err
	}
}

// shut closes stdin because the process exited. It does not wait for a
// blocked write; that write fails.
func (s *stdinPipe) shut() {
	s.gone.Store(true)
	s.f.Close()
}
