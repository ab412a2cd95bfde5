package provision

import (
	"context"
	"fmt"
	"os"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// UpperTarrer is the engine ability filesystem snapshots need (runsc tar
// rootfs-upper; see runtime.TarRootfsUpper).
type UpperTarrer interface {
	TarRootfsUpper(ctx context.Context, id, file string) error
}

var _ sandbox.RootfsDiffer = (*Provisioner)(nil)

// RootfsDiff writes the upper layer of sandbox h's root overlay to an
// unlinked file in the sandbox's directory and returns it open at its start.
// The agent's mount points are listed for exclusion.
func (p *Provisioner) RootfsDiff(ctx context.Context, h sandbox.Handle) (sandbox.RootfsDiff, error) {
	t, ok := p.engine.(UpperTarrer)
	if !ok {
		return sandbox.RootfsDiff{}, errdefs.FailedPrecondition("the engine cannot read root filesystem changes")
	}
	f, err := os.CreateTemp(p.sandboxDir(h.ID), "rootfs-upper-*.tar")
	if err != nil {
		return sandbox.RootfsDiff{}, fmt.Errorf("rootfs diff: %w", err)
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name) // the open file stays readable once unlinked
	if err := t.TarRootfsUpper(ctx, h.ID, name); err != nil {
		return sandbox.RootfsDiff{}, err
	}
	g, err := os.Open(name)
	if err != nil {
		return sandbox.RootfsDiff{}, fmt.Errorf("rootfs diff: %w", err)
	}
	return sandbox.RootfsDiff{Tar: g, Exclude: []string{"/.sandboxd"}}, nil
}
