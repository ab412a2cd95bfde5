package sandbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Config configures a Manager.
type Config struct {
	// DataDir holds the entrypoints' logs (DataDir/logs/ID/).
	DataDir string
	// DefaultImage is used when a create names no image.
	DefaultImage string
	// LivenessInterval is how often the host processes of live sandboxes are
	// checked; 0 means one second.
	LivenessInterval time.Duration
	// ReadyTimeout bounds the wait for a new sandbox's agent; 0 means 30 s.
	ReadyTimeout time.Duration
}

// Deps are the Manager's collaborators.
type Deps struct {
	DB          *sql.DB
	Provisioner Provisioner
	Agents      AgentDialer
	Images      Images
	Secrets     Secrets
	Clock       clock.Clock
	Logger      *slog.Logger
}

// Manager owns the sandboxes of this machine. Safe for concurrent use.
type Manager struct {
	cfg     Config
	repo    repo
	prov    Provisioner
	agents  AgentDialer
	images  Images
	secrets Secrets
	clock   clock.Clock
	log     *slog.Logger

	ctx    context.Context // ends when the manager closes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	live map[string]*live

	pools pools // warm pools (pool.go)
}

// live is the in-memory side of a sandbox that has not finished.
type live struct {
	id        string
	handle    Handle
	agent     AgentConn
	logs      *logFiles
	done      chan struct{} // closed once the sandbox has finished and is torn down
	finishing bool          // guarded by Manager.mu
	timer     clock.Timer
	cancel    context.CancelFunc // stops the entrypoint follower
	// mountMu serialises live mounts (livemounts.go), memory snapshots and
	// the teardown of this sandbox.
	mountMu sync.Mutex
	// transfers keeps staged transfer steps and memory snapshots apart
	// (transfers.go).
	transfers transferGate
}

// New returns a Manager. Call Recover before serving requests and Close at the end.
func New(cfg Config, d Deps) *Manager {
	if cfg.LivenessInterval == 0 {
		cfg.LivenessInterval = time.Second
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg: cfg, repo: repo{d.DB}, prov: d.Provisioner, agents: d.Agents, images: d.Images,
		secrets: d.Secrets, clock: d.Clock, log: d.Logger, ctx: ctx, cancel: cancel,
		live: map[string]*live{},
	}
	m.wg.Add(1)
	go m.livenessLoop()
	return m
}

// Close stops the manager's background work and drops its connections. The
// sandboxes keep running: a manager started later over the same data finds them
// again (Recover).
func (m *Manager) Close() {
	m.cancel()
	m.closePools()
	m.mu.Lock()
	for _, l := range m.live {
		if l.timer != nil {
			l.timer.Stop()
		}
		l.cancel()
		l.agent.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Create validates spec, records the sandbox and brings it up. It returns when
// the sandbox's agent answers. Bad input is ErrInvalidArgument and records
// nothing; a name in use is ErrAlreadyExists.
func (m *Manager) Create(ctx context.Context, spec Spec) (*Sandbox, error) {
	if err := spec.normalize(); err != nil {
		return nil, err
	}
	if spec.Image == "" {
		spec.Image = m.cfg.DefaultImage
	}
	img, err := m.images.ResolveImage(ctx, spec.Image)
	if err != nil {
		return nil, err
	}
	mounts, err := m.resolveMounts(ctx, &spec)
	if err != nil {
		return nil, err
	}
	secretEnv, err := m.secrets.Values(ctx, spec.Secrets)
	if err != nil {
		return nil, err
	}
	req := ProvisionRequest{
		Image: img, Resources: spec.Resources, Env: mergeEnv(img.Env, spec.Env, secretEnv),
		Workdir: workdirOf(spec.Workdir, img), Entrypoint: spec.Entrypoint, Mounts: mounts,
	}
	sb := &Sandbox{Spec: spec, ImageID: img.ID, Tags: spec.Tags, State: StateCreating, CreatedAt: m.clock.Now()}
	if sb.Tags == nil {
		sb.Tags = map[string]string{}
	}
	if pooled, err := m.createFromPool(ctx, sb, req); pooled {
		if err != nil {
			return nil, err
		}
		m.log.Info("sandbox running", "sandbox_id", sb.ID, "image", spec.Image, "app", spec.App, "warm_pool", true)
		return sb, nil
	}
	sb.ID = newID("sb-")
	req.ID = sb.ID
	if err := m.repo.insert(ctx, sb); err != nil {
		return nil, err
	}
	log := m.log.With("sandbox_id", sb.ID)
	h, err := m.prov.Provision(ctx, req)
	if err == nil {
		err = m.goLive(ctx, sb, h)
	}
	if err != nil {
		return nil, m.createFailed(ctx, sb.ID, err)
	}
	log.Info("sandbox running", "image", spec.Image, "app", spec.App)
	return sb, nil
}

// createFailed records the create of sandbox id as failed with err and
// returns the error its caller sees.
func (m *Manager) createFailed(ctx context.Context, id string, err error) error {
	m.log.Warn("create failed", "sandbox_id", id, "err", err)
	m.repo.setFinished(context.WithoutCancel(ctx), id, ReasonFailed, ExitCodeLost, err.Error(), m.clock.Now())
	return fmt.Errorf("create sandbox: %w", err)
}

// workdirOf is a sandbox's default working directory: the one asked for,
// else the image's, else "/".
func workdirOf(asked string, img ImageInfo) string {
	switch {
	case asked != "":
		return asked
	case img.Workdir != "":
		return img.Workdir
	}
	return "/"
}

// goLive takes a sandbox whose engine is up (created or restored) to
// running: it waits for its agent, records it running with a fresh deadline
// and registers it live. On error the engine side is torn down (or the
// sandbox finished) and the caller records the failure.
func (m *Manager) goLive(ctx context.Context, sb *Sandbox, h Handle) error {
	conn, err := m.dialReady(ctx, h)
	if err != nil {
		m.prov.Destroy(context.WithoutCancel(ctx), h)
		return err
	}
	return m.register(ctx, sb, h, conn)
}

// dialReady connects to the agent of h and waits until it answers.
func (m *Manager) dialReady(ctx context.Context, h Handle) (AgentConn, error) {
	conn, err := m.agents.Dial(h.AgentAddr, h.AgentToken)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.ReadyTimeout)
	defer cancel()
	if err := conn.WaitReady(rctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent did not answer: %w", err)
	}
	return conn, nil
}

// register records sb running on h with a fresh deadline and registers it
// live. On error conn is closed and h torn down.
func (m *Manager) register(ctx context.Context, sb *Sandbox, h Handle, conn AgentConn) error {
	bg := context.WithoutCancel(ctx)
	sb.StartedAt = m.clock.Now()
	sb.Deadline = sb.StartedAt.Add(sb.Spec.Timeout)
	sb.State = StateRunning
	err := m.repo.setRunning(bg, sb.ID, h, sb.StartedAt, sb.Deadline)
	if err == nil {
		// Recorded running: should this fail, finishing it records the
		// failure and tears down.
		err = m.startLive(sb, h, conn)
	}
	if err != nil {
		conn.Close()
		m.prov.Destroy(bg, h)
	}
	return err
}

// startLive registers a running sandbox: its lifetime timer, its entrypoint
// follower and its log files.
func (m *Manager) startLive(sb *Sandbox, h Handle, conn AgentConn) error {
	logs, err := openLogFiles(filepath.Join(m.cfg.DataDir, "logs", sb.ID))
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(m.ctx)
	l := &live{id: sb.ID, handle: h, agent: conn, logs: logs, done: make(chan struct{}), cancel: cancel}
	m.mu.Lock()
	m.live[sb.ID] = l
	m.mu.Unlock()
	d := sb.Deadline.Sub(m.clock.Now())
	l.timer = m.clock.AfterFunc(d, func() {
		m.finish(sb.ID, ReasonTimeout, ExitCodeTimeout, "")
	})
	if len(sb.Spec.Entrypoint) > 0 {
		m.wg.Add(1)
		go m.follow(fctx, l)
	}
	return nil
}

// finish ends a live sandbox: records why, tears it down and wakes its
// waiters. Only the first call for a sandbox acts; later ones wait for it.
func (m *Manager) finish(id string, reason FinishReason, code int, msg string) {
	m.mu.Lock()
	l := m.live[id]
	if l == nil {
		m.mu.Unlock()
		return
	}
	if l.finishing {
		m.mu.Unlock()
		<-l.done
		return
	}
	l.finishing = true
	m.mu.Unlock()

	log := m.log.With("sandbox_id", id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.cancel()
	if err := m.repo.setFinished(ctx, id, reason, code, msg, m.clock.Now()); err != nil {
		log.Error("record finish", "err", err)
	}
	l.agent.Close()
	l.mountMu.Lock()
	if err := m.prov.Destroy(ctx, l.handle); err != nil {
		log.Error("tear down", "err", err)
	}
	if err := m.repo.deleteLiveMountsOf(ctx, id); err != nil {
		log.Error("tear down", "err", err)
	}
	l.mountMu.Unlock()
	m.mu.Lock()
	delete(m.live, id)
	m.mu.Unlock()
	l.logs.close()
	close(l.done)
	log.Info("sandbox finished", "reason", reason, "exit_code", code)
}

// Get returns the sandbox with the given id.
func (m *Manager) Get(ctx context.Context, id string) (*Sandbox, error) {
	if !ValidID(id) {
		return nil, errdefs.Invalid("bad sandbox id %q: want sb- and 16 hex digits", id)
	}
	sb, _, err := m.repo.get(ctx, id)
	return sb, err
}

// GetByName returns the running sandbox named name in app.
func (m *Manager) GetByName(ctx context.Context, app, name string) (*Sandbox, error) {
	if app == "" {
		app = DefaultApp
	}
	if !ValidName(app) || !ValidName(name) {
		return nil, errdefs.Invalid("bad app or sandbox name %q/%q", app, name)
	}
	return m.repo.getByName(ctx, app, name)
}

// List returns sandboxes of app (all apps if empty) holding at least tags,
// newest first; finished ones only when all is set.
func (m *Manager) List(ctx context.Context, app string, tags map[string]string, all bool) ([]*Sandbox, error) {
	if app != "" && !ValidName(app) {
		return nil, errdefs.Invalid("bad app name %q", app)
	}
	sbs, err := m.repo.list(ctx, app, all)
	if err != nil {
		return nil, err
	}
	out := sbs[:0]
	for _, sb := range sbs {
		if hasTags(sb.Tags, tags) {
			out = append(out, sb)
		}
	}
	return out, nil
}

// SetTags replaces a sandbox's tags.
func (m *Manager) SetTags(ctx context.Context, id string, tags map[string]string) (*Sandbox, error) {
	if err := checkTags(tags); err != nil {
		return nil, err
	}
	if tags == nil {
		tags = map[string]string{}
	}
	if _, err := m.Get(ctx, id); err != nil {
		return nil, err
	}
	if err := m.repo.setTags(ctx, id, tags); err != nil {
		return nil, err
	}
	return m.Get(ctx, id)
}

// Terminate ends a sandbox (exit code 137). On a finished one it does nothing.
func (m *Manager) Terminate(ctx context.Context, id string) (*Sandbox, error) {
	if _, err := m.Get(ctx, id); err != nil {
		return nil, err
	}
	m.finish(id, ReasonTerminated, ExitCodeTerminated, "")
	return m.Get(ctx, id)
}

// Wait waits until the sandbox finishes or timeout passes (negative: no
// limit; zero: answer at once). It reports whether the sandbox has finished.
func (m *Manager) Wait(ctx context.Context, id string, timeout time.Duration) (*Sandbox, bool, error) {
	sb, err := m.Get(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if sb.State == StateFinished || timeout == 0 {
		return sb, sb.State == StateFinished, nil
	}
	m.mu.Lock()
	l := m.live[id]
	m.mu.Unlock()
	if l != nil {
		var expire <-chan time.Time
		if timeout > 0 {
			t := time.NewTimer(timeout)
			defer t.Stop()
			expire = t.C
		}
		select {
		case <-l.done:
		case <-expire:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("wait: %w", errdefs.ErrCanceled)
		}
	}
	sb, err = m.Get(ctx, id)
	if err != nil {
		return nil, false, err
	}
	return sb, sb.State == StateFinished, nil
}

// running returns the live record of a running sandbox, or an error saying
// why there is none.
func (m *Manager) running(ctx context.Context, id string) (*live, error) {
	m.mu.Lock()
	l := m.live[id]
	if l != nil && !l.finishing {
		m.mu.Unlock()
		return l, nil
	}
	m.mu.Unlock()
	sb, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if sb.State == StateFinished {
		return nil, errdefs.FailedPrecondition("sandbox %s has finished (%s)", id, sb.FinishReason)
	}
	return nil, errdefs.FailedPrecondition("sandbox %s is %s", id, sb.State)
}

// livenessLoop finishes sandboxes whose host process went away (killed by the
// OOM killer, or by hand).
func (m *Manager) livenessLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(m.cfg.LivenessInterval):
		}
		m.mu.Lock()
		var dead []string
		for id, l := range m.live {
			if !l.finishing && l.handle.Pid > 0 && !procAlive(l.handle.Pid, l.handle.PidStart) {
				dead = append(dead, id)
			}
		}
		m.mu.Unlock()
		for _, id := range dead {
			go m.finish(id, ReasonFailed, ExitCodeTerminated, "the sandbox's process ended unexpectedly (out of memory or killed)")
		}
	}
}

func mergeEnv(base []string, env, secrets map[string]string) []string {
	m := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := m[k]; !ok {
			order = append(order, k)
		}
		m[k] = v
	}
	for _, kv := range base {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				set(kv[:i], kv[i+1:])
				break
			}
		}
	}
	keys := func(x map[string]string) []string {
		ks := make([]string, 0, len(x))
		for k := range x {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return ks
	}
	for _, k := range keys(env) {
		set(k, env[k])
	}
	for _, k := range keys(secrets) {
		set(k, secrets[k])
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+m[k])
	}
	return out
}

// LiveCount returns how many sandboxes are running.
func (m *Manager) LiveCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}
