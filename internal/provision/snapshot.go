package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// A checkpoint directory written by Checkpoint holds:
//
//	runsc/              runsc's image (checkpoint.img, pages.img, pages_meta.img)
//	agent.json          the agent's config as the sandbox was started with it
//	staging             present when the sandbox had a staging dir (stage.go);
//	                    older snapshots restore without one, as runsc
//	                    refuses a spec whose mounts differ from the saved one
//
// Restore needs nothing else from the source sandbox: the root is rebuilt
// from the same image layers (gVisor's own overlay, with the sandbox's
// writes, is part of runsc's image) and the agent dirs are mounted at the
// same places.

// CheckpointEngine is the engine's optional ability to save a running
// container and to start a new one from the saved image.
type CheckpointEngine interface {
	// Checkpoint saves container id into imageDir.
	Checkpoint(ctx context.Context, id, imageDir string, o runtime.CheckpointOpts) error
	// Restore starts container s.ID from the image in imageDir.
	Restore(ctx context.Context, s runtime.Spec, imageDir string) error
	// Create makes container s.ID without starting it: a restore target.
	Create(ctx context.Context, s runtime.Spec) error
	// RestoreInto restores the image in imageDir into the container s.ID
	// that Create made with s.
	RestoreInto(ctx context.Context, s runtime.Spec, imageDir string) error
}

// guestMemoryEngine is the engine's optional ability to tell how much
// memory a container's guest holds.
type guestMemoryEngine interface {
	GuestMemory(id string) (int64, error)
}

var _ CheckpointEngine = (*runtime.Runtime)(nil)
var _ guestMemoryEngine = (*runtime.Runtime)(nil)
var _ sandbox.SnapshotEngine = (*Provisioner)(nil)
var _ sandbox.MemoryMeter = (*Provisioner)(nil)

// restoreFrom turns bringUp into a restore.
type restoreFrom struct {
	engine   CheckpointEngine
	imageDir string
	agent    agent.Config
	noStage  bool // a snapshot of a sandbox without a staging dir
	// createOnly makes bringUp stop at a created container (a restore
	// target, targets.go), and set spec to what it was created with.
	createOnly bool
	spec       runtime.Spec
}

const stagingMarker = "staging"

func (p *Provisioner) checkpointEngine() (CheckpointEngine, error) {
	ce, ok := p.engine.(CheckpointEngine)
	if !ok {
		return nil, errdefs.FailedPrecondition("this engine cannot checkpoint sandboxes")
	}
	return ce, nil
}

// Checkpoint saves the running sandbox h into dir (which must exist and be
// empty); the sandbox is paused during the save and keeps running after it.
func (p *Provisioner) Checkpoint(ctx context.Context, h sandbox.Handle, dir string) error {
	ce, err := p.checkpointEngine()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(p.sandboxDir(h.ID), "agent", "agent.json"))
	if err != nil {
		return fmt.Errorf("checkpoint: agent config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agent.json"), b, 0o600); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if ok, _ := isMountPoint(stageDir(p.sandboxDir(h.ID))); ok {
		if err := os.WriteFile(filepath.Join(dir, stagingMarker), nil, 0o600); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
	}
	img := filepath.Join(dir, "runsc")
	if err := os.Mkdir(img, 0o700); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	// Direct: the frozen time is mostly page writes, which O_DIRECT makes
	// several times faster (runtime.CheckpointOpts). The pages then stay
	// out of the page cache all along: the store sums them with O_DIRECT
	// reads and runtime.Restore reads them so too.
	return ce.Checkpoint(ctx, h.ID, img, runtime.CheckpointOpts{LeaveRunning: true, Direct: true})
}

// GuestMemory returns the bytes of memory the guest of sandbox h holds.
// ErrFailedPrecondition when the engine cannot tell.
func (p *Provisioner) GuestMemory(ctx context.Context, h sandbox.Handle) (int64, error) {
	ge, ok := p.engine.(guestMemoryEngine)
	if !ok {
		return 0, errdefs.FailedPrecondition("this engine cannot tell a sandbox's memory")
	}
	return ge.GuestMemory(h.ID)
}

// Restore brings up a new sandbox req.ID from the checkpoint in dir: a new
// network namespace and address, a fresh root overlay of req.Image's layers,
// the same mounts, then runsc restore. req's agent fields (Env, Workdir,
// Entrypoint) are ignored: the restored agent keeps the config it had, and
// the returned Handle carries its token. On error nothing is left behind.
//
// When a restore target for req.ID is ready (PrepareRestore), the
// checkpoint is restored into it, which skips everything but runsc restore;
// should that fail, the target is removed and the restore starts afresh.
func (p *Provisioner) Restore(ctx context.Context, req sandbox.ProvisionRequest, dir string) (sandbox.Handle, error) {
	from, err := p.restoreFrom(req, dir)
	if err != nil {
		return sandbox.Handle{}, err
	}
	if t, ok := p.takeTarget(req.ID); ok {
		h, err := p.restoreInto(ctx, t, from)
		if err == nil {
			return h, nil
		}
		p.log.Warn("restore into a prepared target failed; restoring afresh", "sandbox_id", req.ID, "err", err)
		if derr := p.Destroy(context.WithoutCancel(ctx), t.handle); derr != nil {
			return sandbox.Handle{}, fmt.Errorf("restore: %w (and removing the target: %v)", err, derr)
		}
	}
	return p.bringUp(ctx, req, from)
}

// restoreFrom reads what restoring the checkpoint in dir needs.
func (p *Provisioner) restoreFrom(req sandbox.ProvisionRequest, dir string) (*restoreFrom, error) {
	ce, err := p.checkpointEngine()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "agent.json"))
	if err != nil {
		return nil, fmt.Errorf("restore: agent config: %w", err)
	}
	var cfg agent.Config
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Token == "" {
		return nil, errdefs.FailedPrecondition("restore: snapshot's agent config is unreadable: %v", err)
	}
	_, err = os.Stat(filepath.Join(dir, stagingMarker))
	noStage := errors.Is(err, os.ErrNotExist)
	if noStage && len(req.Staged) > 0 {
		return nil, errdefs.FailedPrecondition("restore: the snapshot has live mounts but no staging dir")
	}
	return &restoreFrom{engine: ce, imageDir: filepath.Join(dir, "runsc"), agent: cfg, noStage: noStage}, nil
}
