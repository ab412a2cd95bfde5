package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Large writes go through the staging dir (see sandbox.TransferStager): the
// daemon writes a step's bytes into a hidden file of it, ".xfer-" and hex,
// which the agent copies into the sandbox. Such names never collide with
// staged images (stageNameRE) and SyncStage leaves them alone; the daemon
// removes each file after its step, and a daemon that crashed midway leaves
// files that RemoveTransfers (on adoption) or Destroy removes.

var _ sandbox.TransferStager = (*Provisioner)(nil)

// TransferDir returns the host directory shown to sandbox h at
// agent.StageDir, or ErrFailedPrecondition if h has none (a sandbox started
// by an older daemon).
func (p *Provisioner) TransferDir(ctx context.Context, h sandbox.Handle) (string, string, error) {
	st := stageDir(p.sandboxDir(h.ID))
	if ok, err := isMountPoint(st); err != nil || !ok {
		return "", "", errdefs.FailedPrecondition("sandbox %s has no staging dir", h.ID)
	}
	return st, agent.StageDir, nil
}

// RemoveTransfers removes every transfer file left in sandbox h's staging
// dir. Idempotent; a sandbox without a staging dir has none.
func (p *Provisioner) RemoveTransfers(ctx context.Context, h sandbox.Handle) error {
	return removeTransfers(stageDir(p.sandboxDir(h.ID)))
}

func removeTransfers(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove transfers: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), sandbox.TransferPrefix) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
