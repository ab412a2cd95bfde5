package provision

import (
	"context"
	"fmt"

	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Restore targets. Restoring a checkpoint into a container that `runsc
// create` made beforehand skips booting the sandbox process and the gofer,
// most of what a restore from nothing costs (ENGINE-NOTES: about 600 ms
// against 130-150 ms for runsc alone). PrepareRestore does every step of a
// restore but the last for a sandbox id chosen in advance: sandbox dir,
// network namespace and address, root overlay, image mounts, staged images,
// agent config, bundle, `runsc create`. Restore of that id then only runs
// `runsc restore` into it.
//
// A target is a sandbox in all but its record: a daemon that dies leaves
// its targets to Sweep at the next start (they are in no record), and
// Destroy removes one like any sandbox. The caller (sandbox.Snapshots)
// decides which snapshots get targets and discards them.

// target is a created container waiting for a restore.
type target struct {
	handle sandbox.Handle // no pid yet
	spec   runtime.Spec   // what the container was created with
}

// PrepareRestore makes a restore target for sandbox req.ID from the
// checkpoint in dir; a later Restore of req.ID from the same checkpoint
// uses it. req is what that Restore will get. On error nothing is left.
func (p *Provisioner) PrepareRestore(ctx context.Context, req sandbox.ProvisionRequest, dir string) error {
	from, err := p.restoreFrom(req, dir)
	if err != nil {
		return err
	}
	from.createOnly = true
	h, err := p.bringUp(ctx, req, from)
	if err != nil {
		return fmt.Errorf("prepare restore target: %w", err)
	}
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if p.targets == nil {
		p.targets = map[string]*target{}
	}
	p.targets[req.ID] = &target{handle: h, spec: from.spec}
	return nil
}

// DiscardRestoreTarget removes the target made for sandbox id, if it has
// not been used. Idempotent.
func (p *Provisioner) DiscardRestoreTarget(ctx context.Context, id string) error {
	t, ok := p.takeTarget(id)
	if !ok {
		return nil
	}
	return p.Destroy(ctx, t.handle)
}

// takeTarget removes the target of sandbox id from the ready ones and
// returns it.
func (p *Provisioner) takeTarget(id string) (*target, bool) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	t, ok := p.targets[id]
	delete(p.targets, id)
	return t, ok
}

// restoreInto restores from's checkpoint into target t. On error t is left
// for the caller to Destroy.
func (p *Provisioner) restoreInto(ctx context.Context, t *target, from *restoreFrom) (sandbox.Handle, error) {
	if err := from.engine.RestoreInto(ctx, t.spec, from.imageDir); err != nil {
		return sandbox.Handle{}, fmt.Errorf("start engine: %w", err)
	}
	return p.withPid(t.handle)
}
