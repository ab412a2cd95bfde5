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

// UpperStreamer is the faster form of UpperTarrer, used when the engine has
// it: the tar goes to a file the daemon reads while the sentry writes it (see
// runtime.TarRootfsUpperTo and upperStream).
type UpperStreamer interface {
	TarRootfsUpperTo(ctx context.Context, id string, w *os.File) error
}

var _ sandbox.RootfsDiffer = (*Provisioner)(nil)

// agentExclude lists the agent's mount points, which are no part of a diff.
func agentExclude() []string { return []string{"/.sandboxd"} }

// RootfsDiff returns the upper layer of sandbox h's root overlay as a tar.
// With an UpperStreamer engine the tar streams in while the caller reads it
// (see upperStream); otherwise it is written whole to an unlinked file in
// the sandbox's directory first. The agent's mount points are listed for
// exclusion. The caller closes the Tar; ctx must stay live until then.
func (p *Provisioner) RootfsDiff(ctx context.Context, h sandbox.Handle) (sandbox.RootfsDiff, error) {
	if s, ok := p.engine.(UpperStreamer); ok {
		st, err := streamUpper(ctx, s, h.ID, p.sandboxDir(h.ID), p.log)
		if err != nil {
			return sandbox.RootfsDiff{}, err
		}
		return sandbox.RootfsDiff{Tar: st, Exclude: agentExclude()}, nil
	}
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
	return sandbox.RootfsDiff{Tar: g, Exclude: agentExclude()}, nil
}
