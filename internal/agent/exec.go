package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

const (
	stdoutIdx = 0
	stderrIdx = 1
	// timeoutExitCode is the exit code reported for an exec killed by its
	// timeout, as timeout(1) does.
	timeoutExitCode = 124
	// pipeReadSize is the most bytes read from an output pipe at once.
	pipeReadSize = 32 << 10
)

var streamNames = [2]string{"stdout", "stderr"}

// execution is one exec: a process group led by pid, its output buffers and
// its stdin. Safe for concurrent use.
type execution struct {
	id    string
	ready chan struct{} // closed once the start attempt is over
	// Set before ready is closed, read-only after.
	startErr error
	pid      int
	stdin    *stdinPipe // nil when stdin is off
	pipes    [2]*os.File
	tty      *os.File      // the terminal's master, for tty execs; closed on exit
	grace    time.Duration // how long output may stay open after the leader exits

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of the fields below
	out     [2]outputBuffer
	exited  *agentv1.Exited // set when the leader is reaped
	// groupGone is set with exited when no process of the exec's group was
	// left: nothing can write to its pipes any more, so what they hold is
	// read at once instead of waiting for EOF (gVisor reports a child's exit
	// some 10-30 ms before it closes the child's files).
	groupGone bool
	timedOut  bool
	timer     *time.Timer
}

func newExecution(id string, limit int64, grace time.Duration) *execution {
	e := &execution{id: id, ready: make(chan struct{}), grace: grace, changed: make(chan struct{})}
	e.out[stdoutIdx].limit = limit
	e.out[stderrIdx].limit = limit
	return e
}

// notifyLocked wakes everyone waiting for a change. The caller holds e.mu.
func (e *execution) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// running reports whether the leader has not been reaped yet.
func (e *execution) running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.exited == nil
}

// status returns the exec's state for ListExecs.
func (e *execution) status() *agentv1.ExecStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := &agentv1.ExecStatus{ExecId: e.id, Pid: int32(e.pid), Running: e.exited == nil}
	if e.exited != nil {
		st.Exited = e.exitedLocked()
	}
	return st
}

// exitedLocked returns a copy of the exit event with the current sizes.
func (e *execution) exitedLocked() *agentv1.Exited {
	return &agentv1.Exited{
		ExitCode:   e.exited.ExitCode,
		TimedOut:   e.exited.TimedOut,
		Signal:     e.exited.Signal,
		StdoutSize: e.out[stdoutIdx].end,
		StderrSize: e.out[stderrIdx].end,
	}
}

// started finishes the start: it begins reading the pipes and arms the
// timeout. Called once, after the process was started.
func (e *execution) started(timeout time.Duration) {
	for i, f := range e.pipes {
		if f != nil {
			go e.pump(i, f)
		}
	}
	if timeout > 0 {
		e.mu.Lock()
		if e.exited == nil {
			e.timer = time.AfterFunc(timeout, e.timeout)
		}
		e.mu.Unlock()
	}
}

// timeout kills the whole process group because the timeout passed.
func (e *execution) timeout() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.exited != nil {
		return
	}
	e.timedOut = true
	syscall.Kill(-e.pid, syscall.SIGKILL)
}

// signal sends sig to the process group. It fails with FailedPrecondition
// once the leader was reaped: its pid, and so the group id, may be reused.
func (e *execution) signal(sig syscall.Signal) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.exited != nil {
		return errdefs.FailedPrecondition("exec %q has exited", e.id)
	}
	if err := syscall.Kill(-e.pid, sig); err != nil && err != syscall.ESRCH {
		return errPermission("signal exec %q: %v", e.id, err)
	}
	return nil
}

// onExit records the leader's wait status. Output pipes still open (held
// by descendants) get e.grace more to reach EOF.
func (e *execution) onExit(ws syscall.WaitStatus) {
	e.mu.Lock()
	ex := &agentv1.Exited{}
	switch {
	case ws.Exited():
		ex.ExitCode = int32(ws.ExitStatus())
	case ws.Signaled():
		ex.Signal = int32(ws.Signal())
		ex.ExitCode = 128 + ex.Signal
	}
	if e.timedOut {
		ex.TimedOut = true
		ex.ExitCode = timeoutExitCode
	}
	e.exited = ex
	if e.timer != nil {
		e.timer.Stop()
	}
	// The leader is reaped; a member left in its group keeps the group.
	e.groupGone = e.pid > 0 && syscall.Kill(-e.pid, 0) == syscall.ESRCH
	e.notifyLocked()
	e.mu.Unlock()

	deadline := e.outputDeadline()
	for _, f := range e.pipes {
		if f != nil {
			f.SetReadDeadline(deadline)
		}
	}
	if e.stdin != nil {
		e.stdin.shut()
	}
	if e.tty != nil {
		e.tty.Close()
	}
}

// outputDeadline is how long the pipes may still be read after the leader
// exited: until now when its group is gone, else e.grace more.
func (e *execution) outputDeadline() time.Time {
	e.mu.Lock()
	gone := e.groupGone
	e.mu.Unlock()
	if gone {
		return time.Now()
	}
	return time.Now().Add(e.grace)
}

// drain appends to buffer i what the pipe holds now, without waiting.
func (e *execution) drain(i int, f *os.File, buf []byte) {
	f.SetReadDeadline(time.Time{})
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf)
			if n <= 0 || err != nil {
				return true
			}
			e.mu.Lock()
			if !e.out[i].closed {
				e.out[i].append(buf[:n])
			}
			e.notifyLocked()
			e.mu.Unlock()
		}
	})
}

// pump copies one output pipe into its buffer. It stops reading while the
// buffer holds limit unsent bytes (back-pressure). After the leader exits,
// a pipe that stays silent for e.grace is detached: its buffer is closed and
// what still comes (from background descendants) is discarded.
func (e *execution) pump(i int, f *os.File) {
	defer f.Close()
	buf := make([]byte, pipeReadSize)
	for {
		e.mu.Lock()
		room, closed, exited, ch := e.out[i].room(), e.out[i].closed, e.exited != nil, e.changed
		e.mu.Unlock()
		if closed { // abandoned by Close
			f.SetReadDeadline(time.Time{})
			io.Copy(io.Discard, f)
			return
		}
		if room <= 0 {
			<-ch
			continue
		}
		if exited {
			f.SetReadDeadline(e.outputDeadline())
		}
		n, err := f.Read(buf[:min(room, int64(len(buf)))])
		timedOut := errors.Is(err, os.ErrDeadlineExceeded)
		e.mu.Lock()
		if n > 0 && !e.out[i].closed {
			e.out[i].append(buf[:n])
		}
		gone := e.groupGone
		if err != nil && !(timedOut && gone) {
			e.out[i].closed = true
		}
		e.notifyLocked()
		e.mu.Unlock()
		if timedOut && gone {
			// Nobody is left to write: keep what the pipe holds, then end.
			e.drain(i, f, buf)
			e.mu.Lock()
			e.out[i].closed = true
			e.notifyLocked()
			e.mu.Unlock()
			return
		}
		if err != nil {
			if timedOut {
				f.SetReadDeadline(time.Time{})
				io.Copy(io.Discard, f)
			}
			return
		}
	}
}

// abandon closes the output buffers so pumps stop waiting for readers.
func (e *execution) abandon() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.out[stdoutIdx].closed = true
	e.out[stderrIdx].closed = true
	e.notifyLocked()
}

// kill kills the process group if the leader still runs.
func (e *execution) kill() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.exited == nil && e.pid > 0 {
		syscall.Kill(-e.pid, syscall.SIGKILL)
	}
}

// follow sends the output from offsets offs, then the exit, through send.
// It returns nil after the Exited event, once both streams are closed and
// sent to their end; an out-of-range error when an offset was dropped or
// lies beyond the output; ctx's error when ctx ends first.
func (e *execution) follow(ctx context.Context, offs [2]int64, send func(*agentv1.ExecEvent) error) error {
	for {
		var data [2][]byte
		var exited *agentv1.Exited
		e.mu.Lock()
		for i := range data {
			d, err := e.out[i].read(streamNames[i], offs[i])
			if err != nil {
				e.mu.Unlock()
				return err
			}
			data[i] = d
		}
		if e.exited != nil && data[0] == nil && data[1] == nil &&
			e.out[0].closed && e.out[1].closed {
			exited = e.exitedLocked()
		}
		ch := e.changed
		e.mu.Unlock()

		if exited != nil {
			return send(&agentv1.ExecEvent{Event: &agentv1.ExecEvent_Exited{Exited: exited}})
		}
		if data[0] == nil && data[1] == nil {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for i, d := range data {
			if d == nil {
				continue
			}
			out := &agentv1.Output{Offset: offs[i], Data: d}
			ev := &agentv1.ExecEvent{Event: &agentv1.ExecEvent_Stdout{Stdout: out}}
			if i == stderrIdx {
				ev.Event = &agentv1.ExecEvent_Stderr{Stderr: out}
			}
			if err := send(ev); err != nil {
				return err
			}
			offs[i] += int64(len(d))
			e.mu.Lock()
			if e.out[i].markSent(offs[i]) {
				e.notifyLocked()
			}
			e.mu.Unlock()
		}
	}
}
