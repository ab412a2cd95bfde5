package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sync"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Staged transfers: large writes into a running sandbox go through its
// staging dir, a host directory the sandbox sees read-only at a fixed path,
// rather than through its network stack. A write is cut into steps; for
// each, the daemon writes the step's bytes into a fresh hidden file of the
// staging dir, the agent copies that file into the target, and the daemon
// removes it (Staging.Step).
//
// A memory snapshot must not see a step: the agent would hold a file of the
// host open, which the restored copy (with another staging dir) cannot open
// again, and the file would be left in the staging dir. So every step runs
// under the sandbox's transfer gate, which a snapshot holds from before its
// checkpoint until the checkpoint returns: the snapshot waits for the steps
// in flight (each copies a few MiB), and steps that come meanwhile wait for
// the snapshot. A step ends only when the agent has answered, that is when
// it has closed the staged file.

// TransferPrefix starts the name of every staged transfer file (the agent
// accepts ".xfer-" and hex only). Staged images' names never start with it.
const TransferPrefix = ".xfer-"

// TransferStager is the optional ability of a Provisioner to pass files to a
// running sandbox through its staging dir.
type TransferStager interface {
	// TransferDir returns the host directory shown to sandbox h and the
	// path where it appears inside; ErrFailedPrecondition if h has none.
	TransferDir(ctx context.Context, h Handle) (host, inside string, err error)
	// RemoveTransfers removes the transfer files left in h's staging dir
	// (by a daemon that stopped midway). Idempotent.
	RemoveTransfers(ctx context.Context, h Handle) error
}

// RawFileAgent is the optional ability of an AgentConn to read files
// without messages (the agent's raw read; see agent.RawReadPath).
type RawFileAgent interface {
	// ReadRaw returns the info of the file or range req asks for and a
	// body of its bytes to close; a body that ends early ends with an
	// error. Its errors are the agent's Connect errors, or one for which
	// NoRawRead is true (an agent without the raw read).
	ReadRaw(ctx context.Context, req *agentv1.ReadFileRequest) (*agentv1.FileInfo, io.ReadCloser, error)
	NoRawRead(err error) bool
}

// Staging passes files into one running sandbox through its staging dir.
// Safe for concurrent use; good for the calls of one request.
type Staging struct {
	host, inside string
	gate         *transferGate
}

// Staging returns the staging of running sandbox id, or
// ErrFailedPrecondition when it has none (the engine cannot, or the
// sandbox was started without a staging dir): the caller then sends the
// data over the agent's connection.
func (m *Manager) Staging(ctx context.Context, id string) (*Staging, error) {
	l, err := m.running(ctx, id)
	if err != nil {
		return nil, err
	}
	ts, ok := m.prov.(TransferStager)
	if !ok {
		return nil, errdefs.FailedPrecondition("the engine cannot stage transfers")
	}
	host, inside, err := ts.TransferDir(ctx, l.handle)
	if err != nil {
		return nil, err
	}
	return &Staging{host: host, inside: inside, gate: &l.transfers}, nil
}

// RawReader returns the raw read of running sandbox id's agent, or false
// if its connection has none.
func (m *Manager) RawReader(ctx context.Context, id string) (RawFileAgent, bool, error) {
	l, err := m.running(ctx, id)
	if err != nil {
		return nil, false, err
	}
	ra, ok := l.agent.(RawFileAgent)
	return ra, ok, nil
}

// StagedFile is a transfer file of the staging dir holding a step's data.
// Until Done, no memory snapshot of the sandbox is taken.
type StagedFile struct {
	// Name is the file's name in the staging dir, as the agent knows it.
	Name string
	path string
	done func()
}

// Stage writes bufs into a fresh transfer file of the staging dir. It first
// waits for a memory snapshot being taken to end, or for ctx. The caller
// must call Done once the agent is done with the file.
func (s *Staging) Stage(ctx context.Context, bufs [][]byte) (*StagedFile, error) {
	leave, err := s.gate.enter(ctx)
	if err != nil {
		return nil, err
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	name := TransferPrefix + hex.EncodeToString(rnd[:])
	p := filepath.Join(s.host, name)
	if err := writeAll(p, bufs); err != nil {
		os.Remove(p)
		leave()
		return nil, err
	}
	return &StagedFile{Name: name, path: p, done: leave}, nil
}

// Done removes the file and lets memory snapshots in again. Idempotent.
func (f *StagedFile) Done() {
	if f.done == nil {
		return
	}
	os.Remove(f.path)
	f.done()
	f.done = nil
}

// Step stages bufs, calls fn with the staged file's name and ends the step.
// fn must return only once the agent is done with the file.
func (s *Staging) Step(ctx context.Context, bufs [][]byte, fn func(name string) error) error {
	f, err := s.Stage(ctx, bufs)
	if err != nil {
		return err
	}
	defer f.Done()
	return fn(f.Name)
}

// writeAll creates the file p (it must not exist) holding bufs in order.
// It leaves bufs as they are.
func writeAll(p string, bufs [][]byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return errdefs.Unavailable("stage a transfer: %v", err)
	}
	for _, b := range bufs {
		if _, err = f.Write(b); err != nil {
			break
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return errdefs.Unavailable("stage a transfer: %v", err)
	}
	return nil
}

// transferGate keeps staged steps and memory snapshots of one sandbox apart:
// steps share it, a snapshot holds it alone. A snapshot waiting for it keeps
// new steps out, so a stream of steps cannot starve it.
type transferGate struct {
	mu      sync.Mutex
	steps   int           // steps in flight
	held    bool          // a snapshot holds or waits for the gate
	changed chan struct{} // closed (and replaced) whenever steps or held change
}

func (g *transferGate) signalLocked() {
	if g.changed != nil {
		close(g.changed)
	}
	g.changed = make(chan struct{})
}

func (g *transferGate) waitChan() chan struct{} {
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	return g.changed
}

// lockUnheld locks g.mu once no snapshot holds the gate, or returns ctx's
// error (g.mu unlocked) when ctx ends first.
func (g *transferGate) lockUnheld(ctx context.Context) error {
	g.mu.Lock()
	for g.held {
		ch := g.waitChan()
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		g.mu.Lock()
	}
	return nil
}

// enter waits until no snapshot holds or waits for the gate and counts a
// step in; leave counts it out. Its error is ctx's.
func (g *transferGate) enter(ctx context.Context) (leave func(), err error) {
	if err := g.lockUnheld(ctx); err != nil {
		return nil, err
	}
	g.steps++
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.steps--
			g.signalLocked()
			g.mu.Unlock()
		})
	}, nil
}

// hold keeps new steps out and waits for those in flight to end; release
// lets steps in again. A second hold waits for the first's release. On ctx's
// end it gives up, releasing, with ctx's error.
func (g *transferGate) hold(ctx context.Context) (release func(), err error) {
	if err := g.lockUnheld(ctx); err != nil {
		return nil, err
	}
	g.held = true
	g.signalLocked()
	rel := func() {
		g.mu.Lock()
		g.held = false
		g.signalLocked()
		g.mu.Unlock()
	}
	for g.steps > 0 {
		ch := g.waitChan()
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			rel()
			return nil, ctx.Err()
		}
		g.mu.Lock()
	}
	g.mu.Unlock()
	var once sync.Once
	return func() { once.Do(rel) }, nil
}
