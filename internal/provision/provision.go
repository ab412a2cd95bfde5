// Package provision brings the machinery of one sandbox up and down: its root
// filesystem (a host overlay of the image's layers), its network namespace,
// its OCI bundle and engine container, and the agent that runs as its init.
// It implements sandbox.Provisioner; cmd/sandboxd wires it.
//
// On disk, sandbox ID owns DATA/sandboxes/ID/:
//
//	bundle/config.json   the OCI spec
//	rootfs/              the host overlay mount, the bundle's root
//	upper/ work/         the host overlay's own dirs (mount points only)
//	scratch/             gVisor's overlay upper layer: the sandbox's writes
//	agent/agent.json     the agent's config (mode 0600; holds env values)
//	init.log             the init's (agent's) stdout and stderr
//	stage/               images staged for the agent while running (stage.go)
//
// The agent binary is mounted read-only from a shared directory at
// /.sandboxd/bin, the per-sandbox agent dir at /.sandboxd/run, the staging
// dir at /.sandboxd/stage.
package provision

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/network"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Paths inside every sandbox.
const (
	AgentBinDir = "/.sandboxd/bin"
	AgentRunDir = "/.sandboxd/run"
	agentName   = "sandbox-agent"
)

// Engine is the part of the runsc driver the provisioner uses.
type Engine interface {
	Run(ctx context.Context, s runtime.Spec) error
	State(ctx context.Context, id string) (runtime.State, error)
	SandboxPid(id string) (int, error)
	Cleanup(ctx context.Context, id string) error
	List() ([]string, error)
}

// Network makes and removes per-sandbox network namespaces.
type Network interface {
	Setup(ctx context.Context, sandboxID string) (network.Endpoint, error)
	Teardown(ctx context.Context, ep network.Endpoint) error
	Reserve(ep network.Endpoint) error
	CleanupAll(ctx context.Context, keep []network.Endpoint) (network.Leftovers, error)
}

// Layers mounts image layers.
type Layers interface {
	MountRootfs(ctx context.Context, layers []image.Digest, upper, work, target string) error
}

// Provisioner implements sandbox.Provisioner over runsc, netns and overlayfs.
type Provisioner struct {
	dir      string // DATA/sandboxes
	agentDir string // holds the agent binary
	engine   Engine
	net      Network
	layers   Layers
	log      *slog.Logger

	tmu     sync.Mutex
	targets map[string]*target // restore targets by sandbox id (targets.go)
}

var _ sandbox.Provisioner = (*Provisioner)(nil)

// New returns a Provisioner keeping sandboxes under dataDir/sandboxes and
// mounting the agent binary found at agentBin (copied to dataDir/agent so the
// daemon's own files can be replaced while sandboxes run).
func New(dataDir, agentBin string, e Engine, n Network, l Layers, log *slog.Logger) (*Provisioner, error) {
	p := &Provisioner{
		dir: filepath.Join(dataDir, "sandboxes"), agentDir: filepath.Join(dataDir, "agent"),
		engine: e, net: n, layers: l, log: log,
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	if err := installAgent(agentBin, p.agentDir); err != nil {
		return nil, fmt.Errorf("install agent: %w", err)
	}
	return p, nil
}

// installAgent copies the agent binary into dir atomically, unless the same
// bytes are there already. Running sandboxes keep the inode they mounted.
func installAgent(src, dir string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dst := filepath.Join(dir, agentName)
	if old, err := os.ReadFile(dst); err == nil && string(old) == string(b) {
		return nil
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err == nil {
		f.Sync()
		f.Close()
	}
	return os.Rename(tmp, dst)
}

// engineState is what the Handle's Engine field holds.
type engineState struct {
	Dir      string           `json:"dir"`
	Endpoint network.Endpoint `json:"endpoint"`
}

func (p *Provisioner) sandboxDir(id string) string { return filepath.Join(p.dir, id) }

// Provision brings a sandbox up: network, root overlay, bundle, engine. Each
// step registers its undo; on error every step done is undone.
func (p *Provisioner) Provision(ctx context.Context, req sandbox.ProvisionRequest) (sandbox.Handle, error) {
	return p.bringUp(ctx, req, nil)
}

// bringUp is Provision, or with from set the restore of a checkpoint into a
// new sandbox (see snapshot.go): the same steps, so a restored sandbox has
// the same mounts at the same places as the one checkpointed.
func (p *Provisioner) bringUp(ctx context.Context, req sandbox.ProvisionRequest, from *restoreFrom) (h sandbox.Handle, err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	t0 := time.Now()
	bg := context.WithoutCancel(ctx)
	dir := p.sandboxDir(req.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return h, fmt.Errorf("sandbox dir: %w", err)
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	sub := func(name string) string { return filepath.Join(dir, name) }
	for _, d := range []string{"bundle", "rootfs", "upper", "work", "scratch", "agent"} {
		if err := os.Mkdir(sub(d), 0o700); err != nil {
			return h, fmt.Errorf("sandbox dir: %w", err)
		}
	}
	// The overlay's root takes the upper dir's mode: it is the sandbox's "/".
	if err := os.Chmod(sub("upper"), 0o755); err != nil {
		return h, fmt.Errorf("sandbox dir: %w", err)
	}

	// The network is set up while the root filesystem is mounted (each
	// takes a few ms: veth and namespace, overlay and staging mounts); the
	// spec needs the namespace, so it is joined before the spec is made.
	type netResult struct {
		ep  network.Endpoint
		err error
	}
	netc := make(chan netResult, 1)
	go func() {
		ep, err := p.net.Setup(ctx, req.ID)
		netc <- netResult{ep, err}
	}()
	netJoined := false
	var ep network.Endpoint
	joinNet := func() error {
		netJoined = true
		r := <-netc
		if r.err != nil {
			return fmt.Errorf("network: %w", r.err)
		}
		ep = r.ep
		undo = append(undo, func() { p.net.Teardown(bg, r.ep) })
		return nil
	}
	defer func() {
		if !netJoined { // an earlier step failed: the network is undone too
			if r := <-netc; r.err == nil {
				p.net.Teardown(bg, r.ep)
			}
		}
	}()

	layers := make([]image.Digest, len(req.Image.Layers))
	for i, l := range req.Image.Layers {
		layers[i] = image.Digest(l)
	}
	if err := p.layers.MountRootfs(ctx, layers, sub("upper"), sub("work"), sub("rootfs")); err != nil {
		return h, fmt.Errorf("root filesystem: %w", err)
	}
	undo = append(undo, func() { image.UnmountRootfs(sub("rootfs")) })
	if err := prepareRoot(sub("rootfs")); err != nil {
		return h, err
	}
	imageMounts, err := p.prepareMounts(ctx, dir, sub("rootfs"), req.Mounts)
	undo = append(undo, func() { unmountImages(dir) })
	if err != nil {
		return h, err
	}
	var sysMounts []runtime.Mount
	var initCaps []string
	if from == nil || !from.noStage {
		stage, err := p.prepareStage(ctx, dir, req.Staged)
		undo = append(undo, func() { unmountStage(dir) })
		if err != nil {
			return h, err
		}
		// The agent mounts staged images; what it runs may not mount.
		sysMounts, initCaps = []runtime.Mount{stage}, []string{"CAP_SYS_ADMIN"}
	}

	token := randomToken()
	cfg := agent.Config{
		SandboxID: req.ID, Token: token, Listen: fmt.Sprintf("0.0.0.0:%d", agent.DefaultPort),
		Env: req.Env, Workdir: req.Workdir, Entrypoint: req.Entrypoint, Idle: req.Idle,
	}
	if from != nil {
		cfg = from.agent // the restored agent keeps this config, token included, in memory
		token = cfg.Token
	}
	if err := writeAgentConfig(dir, cfg); err != nil {
		return h, err
	}

	if err := joinNet(); err != nil {
		return h, err
	}
	spec := runtime.Spec{
		ID: req.ID, BundleDir: sub("bundle"), RootfsPath: sub("rootfs"), ScratchDir: sub("scratch"),
		LogPath: sub("init.log"),
		Args:    []string{AgentBinDir + "/" + agentName, "init", "--config", AgentRunDir + "/agent.json"},
		Env:     []string{"PATH=" + agent.DefaultPath, agentProcs(req.Resources.CPU)},
		Cwd:     "/",
		Mounts: append(append([]runtime.Mount{
			{Source: p.agentDir, Destination: AgentBinDir, ReadOnly: true},
			{Source: sub("agent"), Destination: AgentRunDir, ReadOnly: true},
		}, sysMounts...), imageMounts...),
		InitCapabilities: initCaps,
		NetNSPath:        ep.NetNSPath,
		Resources: runtime.Resources{
			CPUs: req.Resources.CPU, MemoryBytes: req.Resources.MemoryMiB << 20, Pids: req.Resources.Pids,
		},
	}
	undo = append(undo, func() { p.engine.Cleanup(bg, req.ID) })
	start := time.Now()
	switch {
	case from != nil && from.createOnly:
		if err := from.engine.Create(ctx, spec); err != nil {
			return h, fmt.Errorf("create engine container: %w", err)
		}
		from.spec = spec
		h = sandbox.Handle{ID: req.ID, AgentAddr: ep.AgentAddr(agent.DefaultPort), AgentToken: token}
		h.Engine, _ = json.Marshal(engineState{Dir: dir, Endpoint: ep})
		return h, nil
	case from != nil:
		err = from.engine.Restore(ctx, spec, from.imageDir)
	default:
		err = p.engine.Run(ctx, spec)
	}
	if err != nil {
		return h, fmt.Errorf("start engine: %w", err)
	}
	engineUp := time.Since(start)
	if from == nil {
		// See ready.go: dial the agent once it has said something.
		output := waitInitOutput(ctx, spec.LogPath, initOutputWait)
		p.log.Info("engine up", "sandbox_id", req.ID, "prepare", start.Sub(t0), "engine", engineUp,
			"agent_output", time.Since(start)-engineUp, "agent_wrote", output)
	}
	h = sandbox.Handle{ID: req.ID, AgentAddr: ep.AgentAddr(agent.DefaultPort), AgentToken: token}
	h.Engine, _ = json.Marshal(engineState{Dir: dir, Endpoint: ep})
	return p.withPid(h)
}

// agentProcs is the GOMAXPROCS of the agent: the sandbox's CPU limit,
// rounded up. The sandbox shows every host CPU, and a Go runtime that runs
// on more threads than its quota allows only hands work between them: one
// agent call took about 1.75 ms with GOMAXPROCS=1 against 2.5 ms with 2,
// under a 1-CPU quota. The agent's environment never reaches what it runs.
func agentProcs(cpu float64) string {
	return fmt.Sprintf("GOMAXPROCS=%d", max(1, int(math.Ceil(cpu))))
}

// withPid completes h with the sandbox's host process once its engine
// container runs.
func (p *Provisioner) withPid(h sandbox.Handle) (sandbox.Handle, error) {
	pid, err := p.engine.SandboxPid(h.ID)
	if err != nil {
		return h, fmt.Errorf("engine state: %w", err)
	}
	h.Pid = pid
	h.PidStart, _ = sandbox.ProcStart(pid)
	return h, nil
}

// prepareRoot makes the mount points of the agent's directories in the root,
// replacing whatever the image had at /.sandboxd (a symlink there must not
// lead the mounts out of the root).
func prepareRoot(root string) error {
	d := filepath.Join(root, ".sandboxd")
	if err := os.RemoveAll(d); err != nil {
		return fmt.Errorf("prepare root: %w", err)
	}
	for _, sub := range []string{"bin", "run", "stage"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return fmt.Errorf("prepare root: %w", err)
		}
	}
	return nil
}

// Adopt re-reserves the network of a sandbox found after a restart and says
// whether its engine container still runs.
func (p *Provisioner) Adopt(ctx context.Context, h sandbox.Handle) (bool, error) {
	var es engineState
	if err := json.Unmarshal(h.Engine, &es); err != nil {
		return false, fmt.Errorf("decode engine state: %w", err)
	}
	if err := p.net.Reserve(es.Endpoint); err != nil {
		return false, err
	}
	// Transfers of the daemon that stopped are over: their files go.
	if err := p.RemoveTransfers(ctx, h); err != nil {
		p.log.Warn("remove leftover transfer files", "sandbox_id", h.ID, "err", err)
	}
	st, err := p.engine.State(ctx, h.ID)
	if err != nil {
		return false, nil
	}
	return st.Status == runtime.StatusRunning, nil
}

// Destroy takes a sandbox down and removes what it held. Idempotent.
func (p *Provisioner) Destroy(ctx context.Context, h sandbox.Handle) error {
	var errs []error
	if h.ID == "" {
		return nil
	}
	if err := p.engine.Cleanup(ctx, h.ID); err != nil {
		errs = append(errs, fmt.Errorf("engine: %w", err))
	}
	var es engineState
	if len(h.Engine) > 0 && json.Unmarshal(h.Engine, &es) == nil && es.Endpoint.NetNSName != "" {
		if err := p.net.Teardown(ctx, es.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("network: %w", err))
		}
	}
	if err := p.removeDir(h.ID); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (p *Provisioner) removeDir(id string) error {
	dir := p.sandboxDir(id)
	if err := image.UnmountRootfs(filepath.Join(dir, "rootfs")); err != nil {
		return fmt.Errorf("unmount root: %w", err)
	}
	if err := unmountImages(dir); err != nil {
		return fmt.Errorf("unmount images: %w", err)
	}
	if err := unmountStage(dir); err != nil {
		return err
	}
	// Never remove through a mount: it could reach stored layers.
	if mps, err := image.MountPointsUnder(dir); err != nil || len(mps) > 0 {
		return fmt.Errorf("remove sandbox dir: still mounted under it: %v %v", mps, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove sandbox dir: %w", err)
	}
	return nil
}

// Sweep removes engine containers, network namespaces and sandbox
// directories that belong to no sandbox in keep.
func (p *Provisioner) Sweep(ctx context.Context, keep []sandbox.Handle) error {
	known := map[string]bool{}
	var eps []network.Endpoint
	for _, h := range keep {
		known[h.ID] = true
		var es engineState
		if json.Unmarshal(h.Engine, &es) == nil {
			eps = append(eps, es.Endpoint)
		}
	}
	var errs []error
	ids, err := p.engine.List()
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range ids {
		if !known[id] && sandbox.ValidID(id) {
			p.log.Info("removing leftover engine container", "sandbox_id", id)
			if err := p.engine.Cleanup(ctx, id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	entries, _ := os.ReadDir(p.dir)
	for _, e := range entries {
		if !known[e.Name()] && strings.HasPrefix(e.Name(), "sb-") {
			p.log.Info("removing leftover sandbox dir", "sandbox_id", e.Name())
			p.engine.Cleanup(ctx, e.Name())
			if err := p.removeDir(e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, err := p.net.CleanupAll(ctx, eps); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func randomToken() string {
	var b [24]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
