package agentclient

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// FollowOptions tune a FollowStream; the zero value is the default.
type FollowOptions struct {
	// SilenceCheck is how long a stream waits for an event before it asks
	// the agent, on another connection, whether its exec ended; then again
	// as often while the silence lasts. 0: DefaultSilenceCheck.
	SilenceCheck time.Duration
	// Log receives a line for each resume (nil: none).
	Log *slog.Logger
}

const (
	// DefaultSilenceCheck is FollowOptions.SilenceCheck's default.
	DefaultSilenceCheck = 5 * time.Second
	// stallGrace is how much longer a stream may stay silent once the agent
	// said its exec ended: the Exited event is sent as soon as the output
	// pipes close, which takes at most the agent's exit grace (100 ms).
	stallGrace = time.Second
	// probeTimeout bounds one ListExecs of the silence check.
	probeTimeout = 2 * time.Second
	// followAttempts is how many attaches in a row may fail before Recv
	// returns the error.
	followAttempts = 8
)

// FollowStream is the event stream of one exec that outlives its
// connections. It is not safe for concurrent use.
//
// A call can fail in two ways while the exec goes on: its connection breaks
// (a reset, the agent's address gone), or it stays open and silent. The
// second is what a snapshot risks: the sandbox's network stack drops every
// segment while it is frozen and a call's connection must recover by
// retransmission; should it not, nothing would notice, as TCP keep-alive
// never fires while the peer's stack answers and a request the peer never
// acknowledged is retransmitted for many minutes. A silent call is
// therefore checked (see watch). Either way the FollowStream attaches again
// by exec id from the offsets it has returned: no output is lost or
// repeated.
type FollowStream struct {
	c     *Client
	ctx   context.Context
	req   *agentv1.ExecRequest // offsets advanced as events are returned
	check time.Duration
	log   *slog.Logger

	started bool // Started returned: later ones (of re-attaches) are dropped
	exited  bool
	exitEv  *agentv1.Exited

	mu      sync.Mutex
	cur     *ExecStream
	cancel  context.CancelFunc // cur's call
	gen     uint64             // counts Recv calls on cur, for the watchdog
	stalled bool               // the watchdog ended cur's call
	closed  bool
}

// Follow returns the event stream of exec req.ExecId, started (or attached
// to) by the first Recv from req's offsets, which survives broken and
// stalled connections (see FollowStream), tuned by o. The first event is
// Started (once), the last Exited; Recv then returns io.EOF. Errors the
// agent answers (bad spec, unknown exec, dropped offsets) are returned as
// they come; a call that cannot be made or resumed followAttempts times in
// a row returns the last failure; ctx ends it. Follow does no I/O.
func (c *Client) Follow(ctx context.Context, req *agentv1.ExecRequest, o FollowOptions) *FollowStream {
	if o.SilenceCheck <= 0 {
		o.SilenceCheck = DefaultSilenceCheck
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &FollowStream{c: c, ctx: ctx, req: proto.Clone(req).(*agentv1.ExecRequest), check: o.SilenceCheck, log: o.Log}
}

// open makes a new call from f.req, under the watchdog: the call returns
// once the agent has answered its headers, which a stalled connection
// never brings.
func (f *FollowStream) open() error {
	ctx, cancel := context.WithCancel(f.ctx)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		cancel()
		return errors.New("exec stream closed")
	}
	f.cancel, f.stalled = cancel, false
	f.gen++
	gen := f.gen
	f.mu.Unlock()
	id, known := f.req.ExecId, f.started || f.req.AttachOnly
	t := time.AfterFunc(f.check, func() { f.watch(gen, id, known) })
	s, err := f.c.Exec(ctx, f.req)
	t.Stop()
	f.mu.Lock()
	f.gen++
	if err == nil {
		f.cur = s
	}
	f.mu.Unlock()
	return err
}

// Recv returns the next event, or io.EOF after the Exited event.
func (f *FollowStream) Recv() (*agentv1.ExecEvent, error) {
	if f.exited {
		return nil, io.EOF
	}
	failures := 0
	for {
		if f.cur == nil {
			if err := f.open(); err != nil {
				if !f.retry(err, &failures) {
					return nil, err
				}
				continue
			}
		}
		ev, err := f.recvWatched()
		if err != nil {
			if !f.retry(err, &failures) {
				return nil, err
			}
			continue
		}
		if f.note(ev) {
			return ev, nil
		}
	}
}

// retry tells, after the call failed with err, whether to make another: a
// stalled call, a broken connection or an Unavailable answer, up to
// followAttempts in a row while ctx lasts. It abandons the call and waits a
// short backoff first.
func (f *FollowStream) retry(err error, failures *int) bool {
	f.mu.Lock()
	stalled, closed := f.stalled, f.closed
	f.mu.Unlock()
	if closed || f.ctx.Err() != nil || (!stalled && !retryable(err)) {
		return false
	}
	if *failures++; *failures > followAttempts {
		return false
	}
	why := "broken"
	if stalled {
		why = "stalled"
	}
	f.log.Info("exec stream resumed", "exec_id", f.req.ExecId, "stream", why, "err", err, "attempt", *failures,
		"stdout_offset", f.req.StdoutOffset, "stderr_offset", f.req.StderrOffset, "started", f.started)
	f.drop()
	return sleepCtx(f.ctx, time.Duration(*failures)*20*time.Millisecond) == nil
}

// note records ev and reports whether to return it (a Started after the
// first is not).
func (f *FollowStream) note(ev *agentv1.ExecEvent) bool {
	switch e := ev.Event.(type) {
	case *agentv1.ExecEvent_Started:
		if f.started {
			return false
		}
		f.started = true
		// The exec exists: a resume must not start it again should the
		// agent have forgotten it.
		f.req.AttachOnly, f.req.Spec = true, nil
	case *agentv1.ExecEvent_Stdout:
		f.req.StdoutOffset = e.Stdout.Offset + int64(len(e.Stdout.Data))
	case *agentv1.ExecEvent_Stderr:
		f.req.StderrOffset = e.Stderr.Offset + int64(len(e.Stderr.Data))
	case *agentv1.ExecEvent_Exited:
		f.exited, f.exitEv = true, e.Exited
	}
	return true
}

// recvWatched is f.cur.Recv under the watchdog (see watch).
func (f *FollowStream) recvWatched() (*agentv1.ExecEvent, error) {
	f.mu.Lock()
	f.gen++
	gen, cur := f.gen, f.cur
	f.mu.Unlock()
	id, known := f.req.ExecId, f.started || f.req.AttachOnly
	t := time.AfterFunc(f.check, func() { f.watch(gen, id, known) })
	defer t.Stop()
	ev, err := cur.Recv()
	f.mu.Lock()
	f.gen++ // a watchdog still running leaves the next Recv alone
	f.mu.Unlock()
	return ev, err
}

// watch runs while Recv number gen blocks: every f.check it asks the agent
// whether the silence can last (see stuck); when it cannot and the call
// stays silent stallGrace more, it cancels the call as stalled.
func (f *FollowStream) watch(gen uint64, id string, known bool) {
	for {
		f.mu.Lock()
		current := f.gen == gen && !f.closed
		f.mu.Unlock()
		if !current {
			return
		}
		if f.stuck(id, known) {
			break
		}
		if sleepCtx(f.ctx, f.check) != nil {
			return
		}
	}
	if sleepCtx(f.ctx, stallGrace) != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gen == gen && !f.closed && f.cancel != nil {
		f.stalled = true
		f.cancel()
	}
}

// stuck reports whether the agent says the silence on exec id cannot last:
// the exec ended, or it does not exist though not known to exist (no
// Started yet), so the request never arrived. An agent that does not
// answer is no reason: TCP keep-alive and the caller's context deal with a
// peer that is gone.
func (f *FollowStream) stuck(id string, known bool) bool {
	ctx, cancel := context.WithTimeout(f.ctx, probeTimeout)
	defer cancel()
	list, err := f.c.ListExecs(ctx)
	if err != nil {
		return false
	}
	for _, st := range list {
		if st.ExecId == id {
			return !st.Running
		}
	}
	return !known
}

// Exited returns the Exited event once returned by Recv, else nil.
func (f *FollowStream) Exited() *agentv1.Exited {
	if !f.exited {
		return nil
	}
	return f.exitEv
}

// drop abandons the current call.
func (f *FollowStream) drop() {
	f.mu.Lock()
	cur, cancel := f.cur, f.cancel
	f.cur, f.cancel, f.stalled = nil, nil, false
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if cur != nil {
		cur.Close()
	}
}

// Close ends the stream (not the exec). See ExecStream.Close.
func (f *FollowStream) Close() error {
	f.mu.Lock()
	f.closed = true
	cur, cancel := f.cur, f.cancel
	f.cur, f.cancel = nil, nil
	f.mu.Unlock()
	if cancel != nil {
		defer cancel()
	}
	if cur == nil {
		return nil
	}
	return cur.Close()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
