package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Images mounted into a running sandbox. Before the engine starts, the
// sandbox's staging dir DATA/sandboxes/ID/stage is made a mount point of its
// own in a peer group of its own (bind onto itself, private, then shared) and
// bind mounted read-only at agent.StageDir. runsc's gofer makes its copy a
// slave, so a host mount made under the staging dir later shows up inside
// the sandbox: StageImage mounts an image's tree at stage/NAME (a one-layer
// image's stored layer directory, bound read-only; several layers merged by
// a read-only overlayfs), and the agent mounts its copy-on-write view of it.
// Nothing is copied, and the sandbox sees no other part of the store.
//
// Every mount under the staging dir, and the staging dir itself, is undone
// by Destroy (and so by Sweep after a crash), found from the host's mount
// table rather than from any record.

var _ sandbox.ImageStager = (*Provisioner)(nil)

var stageNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

func stageDir(dir string) string { return filepath.Join(dir, "stage") }

// makeStage makes the staging dir of sandbox dir a shared mount point and
// returns the spec mount showing it to the agent. On error the caller's
// unmountStage undoes it.
func makeStage(dir string) (runtime.Mount, error) {
	st := stageDir(dir)
	if err := os.Mkdir(st, 0o755); err != nil {
		return runtime.Mount{}, fmt.Errorf("staging dir: %w", err)
	}
	for _, step := range []struct {
		src   string
		flags uintptr
	}{{st, unix.MS_BIND}, {"", unix.MS_PRIVATE}, {"", unix.MS_SHARED}} {
		if err := unix.Mount(step.src, st, "", step.flags, ""); err != nil {
			return runtime.Mount{}, fmt.Errorf("staging dir: mount (flags %#x): %w", step.flags, err)
		}
	}
	return runtime.Mount{Source: st, Destination: agent.StageDir, ReadOnly: true}, nil
}

// prepareStage makes the staging dir of sandbox dir with staged in it (a
// restore's live mounts) and returns the spec mount showing it to the
// agent. On error the caller's unmountStage undoes it.
func (p *Provisioner) prepareStage(ctx context.Context, dir string, staged []sandbox.StagedImage) (runtime.Mount, error) {
	m, err := makeStage(dir)
	if err != nil {
		return m, err
	}
	for _, s := range staged {
		if err := p.stageInto(ctx, dir, s.Stage, s.Image); err != nil {
			return m, err
		}
	}
	return m, nil
}

// unmountStage unmounts every mount under the staging dir of sandbox dir,
// then the staging dir itself. Idempotent.
func unmountStage(dir string) error {
	st := stageDir(dir)
	mps, err := image.MountPointsUnder(st)
	if err != nil {
		return fmt.Errorf("unmount staging dir: %w", err)
	}
	var errs []error
	for _, mp := range mps { // deepest first; the staging dir itself last
		if err := image.UnmountRootfs(mp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stageInto mounts img's tree at the staging dir's entry name. Idempotent: an
// entry that is a mount point already is left as it is.
func (p *Provisioner) stageInto(ctx context.Context, dir, name string, img sandbox.ImageInfo) (err error) {
	if !stageNameRE.MatchString(name) {
		return errdefs.Invalid("bad stage name %q", name)
	}
	st := stageDir(dir)
	if ok, err := isMountPoint(st); err != nil || !ok {
		return errdefs.FailedPrecondition("the sandbox has no staging dir (started by an older daemon): it cannot mount images while it runs")
	}
	target := filepath.Join(st, name)
	if ok, _ := isMountPoint(target); ok {
		return nil
	}
	dirs, ok := p.layers.(ImageDirs)
	if !ok {
		return errdefs.FailedPrecondition("the layer store cannot mount images")
	}
	layers := make([]image.Digest, len(img.Layers))
	for i, l := range img.Layers {
		layers[i] = image.Digest(l)
	}
	if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("stage %s: %w", img.ID, err)
	}
	defer func() {
		if err != nil {
			image.UnmountRootfs(target)
			os.Remove(target)
		}
	}()
	// Several layers: a read-only overlay mounted right on target.
	src, err := dirs.ImageDir(ctx, layers, target)
	if err != nil {
		return fmt.Errorf("stage %s: %w", img.ID, err)
	}
	if src != target {
		if err := bindReadOnly(src, target); err != nil {
			return fmt.Errorf("stage %s: %w", img.ID, err)
		}
	}
	return nil
}

// bindReadOnly bind mounts directory src on target, read-only from the
// start (open_tree, mount_setattr, move_mount): the copies propagated into
// sandboxes are read-only too, and nothing on the host can write into the
// stored layer through target. Kernels without the new mount API get a bind
// remounted read-only (its propagated copies are read-only inside the
// sandbox anyway: the staging dir is mounted there read-only).
func bindReadOnly(src, target string) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		return unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, "")
	}
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", src, err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("mount_setattr %s: %w", src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount %s: %w", target, err)
	}
	return nil
}

// StageImage shows img to running sandbox h as agent.StageDir/name.
func (p *Provisioner) StageImage(ctx context.Context, h sandbox.Handle, name string, img sandbox.ImageInfo) error {
	return p.stageInto(ctx, p.sandboxDir(h.ID), name, img)
}

// UnstageImage unmounts what StageImage mounted (lazily if the sandbox still
// holds files of it open) and removes the entry. Idempotent.
func (p *Provisioner) UnstageImage(ctx context.Context, h sandbox.Handle, name string) error {
	if !stageNameRE.MatchString(name) {
		return errdefs.Invalid("bad stage name %q", name)
	}
	target := filepath.Join(stageDir(p.sandboxDir(h.ID)), name)
	if err := image.UnmountRootfs(target); err != nil {
		return fmt.Errorf("unstage %s: %w", name, err)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unstage %s: %w", name, err)
	}
	return nil
}

// SyncStage makes the staging dir of h hold exactly staged: other entries
// are unstaged, missing ones staged.
func (p *Provisioner) SyncStage(ctx context.Context, h sandbox.Handle, staged []sandbox.StagedImage) error {
	want := map[string]bool{}
	var errs []error
	for _, s := range staged {
		want[s.Stage] = true
		if err := p.StageImage(ctx, h, s.Stage, s.Image); err != nil {
			errs = append(errs, err)
		}
	}
	entries, err := os.ReadDir(stageDir(p.sandboxDir(h.ID)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if !want[e.Name()] && stageNameRE.MatchString(e.Name()) {
			if err := p.UnstageImage(ctx, h, e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// isMountPoint reports whether path is a mount point of this mount namespace.
func isMountPoint(path string) (bool, error) {
	mps, err := image.MountPointsUnder(path)
	if err != nil {
		return false, err
	}
	for _, mp := range mps {
		if mp == path {
			return true, nil
		}
	}
	return false, nil
}
