package agent

import (
	"context"
	"log/slog"
	"os"
	"path"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Options are the agent's dependencies and tunables; the zero value works.
type Options struct {
	// Logger receives the agent's own logs; nil discards them.
	Logger *slog.Logger
	// ReapAll makes the agent reap every child, as PID 1 (or a child
	// subreaper) must, instead of waiting only for its own.
	ReapAll bool
	// ExitGrace is how long output pipes may stay open after an exec's
	// leader exits (held by background descendants) before they are
	// detached and the Exited event is sent. Zero means 100 ms.
	ExitGrace time.Duration
	// MaxFinished is how many finished execs are remembered (oldest are
	// forgotten first). Zero means 1024.
	MaxFinished int
}

// Agent runs and tracks execs. Safe for concurrent use.
type Agent struct {
	cfg         Config
	log         *slog.Logger
	reaper      reaper
	boot        time.Time
	grace       time.Duration
	maxFinished int
	mounts      *imageMounts // images mounted while running (mount.go)
	// set holds the base environment and default workdir of execs: the
	// config's, or Configure's for an agent started idle.
	set atomic.Pointer[settings]

	mu       sync.Mutex
	execs    map[string]*execution
	finished []*execution // leaders reaped, oldest first
	running  int
	closed   bool
	// configured is set once Configure has run (idle agents only).
	configured bool
}

// settings are what every exec starts from.
type settings struct {
	env     []string
	workdir string
}

// New validates cfg and returns an agent. When cfg has an entrypoint it is
// started now as exec EntrypointExecID; a failure to start it is recorded as
// that exec exiting with code 127 and the error on its stderr. The caller
// must call Close.
func New(cfg Config, opts Options) (*Agent, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:         cfg,
		log:         log.With("sandbox_id", cfg.SandboxID),
		boot:        time.Now(),
		grace:       opts.ExitGrace,
		maxFinished: opts.MaxFinished,
		execs:       make(map[string]*execution),
		reaper:      processReaper{},
		mounts:      newImageMounts(sysMounter{}),
	}
	if a.grace <= 0 {
		a.grace = 100 * time.Millisecond
	}
	if a.maxFinished <= 0 {
		a.maxFinished = 1024
	}
	if opts.ReapAll {
		a.reaper = newInitReaper(a.log)
	}
	a.apply(cfg.Env, cfg.Workdir)
	if len(cfg.Entrypoint) > 0 {
		a.startEntrypoint(cfg.Entrypoint)
	} else {
		go a.warmUp() // see warmup.go; an entrypoint does the same for free
	}
	return a, nil
}

// apply sets the base environment and default workdir of execs to come.
func (a *Agent) apply(env []string, workdir string) {
	// The sandbox's working directory is made if the image lacks it, as
	// container engines do.
	if err := os.MkdirAll(workdir, 0o755); err != nil {
		a.log.Warn("make the default workdir", "workdir", workdir, "err", err)
	}
	a.set.Store(&settings{env: env, workdir: workdir})
}

// Configure completes an agent started idle (Config.Idle): env and workdir
// become every exec's base, and the entrypoint, if any, starts as exec
// EntrypointExecID. It succeeds once; an agent not started idle refuses it.
func (a *Agent) Configure(env []string, workdir string, entrypoint []string) error {
	if workdir == "" {
		workdir = DefaultWorkdir
	}
	if !path.IsAbs(workdir) {
		return errdefs.Invalid("workdir %q is not absolute", workdir)
	}
	if err := checkEnv(env); err != nil {
		return err
	}
	if len(entrypoint) > 0 && entrypoint[0] == "" {
		return errdefs.Invalid("entrypoint: empty program name")
	}
	a.mu.Lock()
	switch {
	case !a.cfg.Idle:
		a.mu.Unlock()
		return errdefs.FailedPrecondition("the agent was not started idle: its settings are fixed")
	case a.configured:
		a.mu.Unlock()
		return errdefs.FailedPrecondition("the agent is configured already")
	}
	a.configured = true
	a.mu.Unlock()
	a.apply(env, workdir)
	if len(entrypoint) > 0 {
		a.startEntrypoint(entrypoint)
	}
	a.log.Info("configured", "workdir", workdir, "entrypoint", len(entrypoint) > 0)
	return nil
}

func (a *Agent) startEntrypoint(argv []string) {
	spec := &agentv1.ProcessSpec{Argv: argv, Stdin: true}
	_, _, err := a.startOrAttach(context.Background(), &agentv1.ExecRequest{ExecId: EntrypointExecID, Spec: spec})
	if err == nil {
		return
	}
	a.log.Error("start entrypoint", "argv0", argv[0], "err", err)
	e := newExecution(EntrypointExecID, a.cfg.OutputLimit, a.grace)
	e.out[stderrIdx].append([]byte("sandbox-agent: start entrypoint: " + err.Error() + "\n"))
	e.out[stdoutIdx].closed, e.out[stderrIdx].closed = true, true
	e.exited = &agentv1.Exited{ExitCode: 127}
	close(e.ready)
	a.mu.Lock()
	a.execs[e.id] = e
	a.finished = append(a.finished, e)
	a.mu.Unlock()
}

// Close kills every running exec and stops reaping. Execs stay readable.
func (a *Agent) Close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	execs := make([]*execution, 0, len(a.execs))
	for _, e := range a.execs {
		execs = append(execs, e)
	}
	a.mu.Unlock()
	for _, e := range execs {
		<-e.ready
		e.kill()
		e.abandon()
	}
	a.reaper.stop()
}

// startOrAttach returns the exec named by req, starting it when it does not
// exist. created reports whether it was started by this call. A failed
// start leaves no exec behind, so the id may be used again.
func (a *Agent) startOrAttach(ctx context.Context, req *agentv1.ExecRequest) (e *execution, created bool, err error) {
	if req.ExecId == "" || len(req.ExecId) > 256 {
		return nil, false, errdefs.Invalid("exec_id must have 1 to 256 bytes")
	}
	a.mu.Lock()
	e, ok := a.execs[req.ExecId]
	a.mu.Unlock()
	if ok {
		return attach(ctx, e)
	}
	if req.AttachOnly {
		return nil, false, errdefs.NotFound("exec %q not found", req.ExecId)
	}
	// Outside the lock: resolving argv[0] touches the file system.
	p, err := a.prepare(req.Spec)
	a.mu.Lock()
	if e, ok := a.execs[req.ExecId]; ok { // started meanwhile by another call
		a.mu.Unlock()
		return attach(ctx, e)
	}
	if err != nil {
		a.mu.Unlock()
		return nil, false, err
	}
	if a.closed {
		a.mu.Unlock()
		return nil, false, errdefs.Unavailable("agent is shutting down")
	}
	e = newExecution(req.ExecId, a.cfg.OutputLimit, a.grace)
	a.execs[e.id] = e
	a.running++
	a.mu.Unlock()

	if err := a.spawn(e, p); err != nil {
		a.mu.Lock()
		delete(a.execs, e.id)
		a.running--
		a.mu.Unlock()
		e.startErr = err
		close(e.ready)
		return nil, false, err
	}
	close(e.ready)
	e.started(time.Duration(req.Spec.TimeoutMs) * time.Millisecond)
	a.log.Info("exec started", "exec_id", e.id, "argv0", p.argv[0], "pid", e.pid)
	return e, true, nil
}

// attach waits for e's start and returns it.
func attach(ctx context.Context, e *execution) (*execution, bool, error) {
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	if e.startErr != nil {
		return nil, false, e.startErr
	}
	return e, false, nil
}

// exited is called once an exec's leader was reaped.
func (a *Agent) exited(e *execution, ws syscall.WaitStatus) {
	e.onExit(ws)
	a.mu.Lock()
	a.running--
	a.finished = append(a.finished, e)
	for len(a.finished) > a.maxFinished {
		old := a.finished[0]
		a.finished[0] = nil
		a.finished = a.finished[1:]
		if a.execs[old.id] == old {
			delete(a.execs, old.id)
		}
		old.abandon()
	}
	a.mu.Unlock()
	a.log.Info("exec exited", "exec_id", e.id, "status", int(ws))
}

// lookup returns the started exec named id.
func (a *Agent) lookup(id string) (*execution, error) {
	a.mu.Lock()
	e, ok := a.execs[id]
	a.mu.Unlock()
	if !ok {
		return nil, errdefs.NotFound("exec %q not found", id)
	}
	<-e.ready
	if e.startErr != nil {
		return nil, errdefs.NotFound("exec %q not found", id)
	}
	return e, nil
}

// info reports the agent's state.
func (a *Agent) info() *agentv1.InfoResponse {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &agentv1.InfoResponse{
		SandboxId:    a.cfg.SandboxID,
		Pid:          int32(os.Getpid()),
		BootUnixNano: a.boot.UnixNano(),
		RunningExecs: int32(a.running),
	}
}

// list returns the state of every exec the agent remembers, by id.
func (a *Agent) list() []*agentv1.ExecStatus {
	a.mu.Lock()
	execs := make([]*execution, 0, len(a.execs))
	for _, e := range a.execs {
		execs = append(execs, e)
	}
	a.mu.Unlock()
	out := make([]*agentv1.ExecStatus, 0, len(execs))
	for _, e := range execs {
		select {
		case <-e.ready:
			if e.startErr == nil {
				out = append(out, e.status())
			}
		default: // still starting
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ExecId < out[j].ExecId })
	return out
}
