package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Image mounts at create time. Each image becomes a read-only host directory
// (a one-layer image is its stored layer directory itself; several layers are
// merged by a read-only overlayfs under DATA/sandboxes/ID/mounts/N), bind
// mounted into the sandbox without "ro": under --overlay2=all:dir= gVisor
// gives every bind mount a private copy-on-write layer kept in the sandbox's
// scratch dir, so the sandbox may change the files while the stored layers
// stay untouched. Nothing is copied.

// ImageDirs is the layer store ability image mounts need (image.Store).
type ImageDirs interface {
	ImageDir(ctx context.Context, layers []image.Digest, target string) (string, error)
}

// prepareMounts readies the mounts of req in the sandbox dir and the root:
// it returns the bind mounts for the spec. On error what it mounted is left
// for unmountImages (called by the caller's undo and by removeDir).
func (p *Provisioner) prepareMounts(ctx context.Context, dir, root string, ms []sandbox.MountRequest) ([]runtime.Mount, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	dirs, ok := p.layers.(ImageDirs)
	if !ok {
		return nil, errdefs.FailedPrecondition("the layer store cannot mount images")
	}
	var out []runtime.Mount
	for i, mt := range ms {
		layers := make([]image.Digest, len(mt.Image.Layers))
		for j, l := range mt.Image.Layers {
			layers[j] = image.Digest(l)
		}
		src, err := dirs.ImageDir(ctx, layers, filepath.Join(dir, "mounts", strconv.Itoa(i)))
		if err != nil {
			return nil, fmt.Errorf("mount %s at %s: %w", mt.Image.ID, mt.Path, err)
		}
		if err := makeMountPoint(root, mt.Path); err != nil {
			return nil, fmt.Errorf("mount %s at %s: %w", mt.Image.ID, mt.Path, err)
		}
		out = append(out, runtime.Mount{Source: src, Destination: mt.Path})
	}
	return out, nil
}

// makeMountPoint makes sure the absolute path p is a directory in root,
// replacing whatever is on the way that is not a directory (a file, or a
// symlink that could lead the mount out of the root). root is the sandbox's
// own host overlay, which nothing else uses before the sandbox starts.
func makeMountPoint(root, p string) error {
	cur := root
	for _, comp := range strings.Split(strings.Trim(filepath.Clean(p), "/"), "/") {
		if comp == "" || comp == "." || comp == ".." {
			return errdefs.Invalid("bad mount path %q", p)
		}
		cur = filepath.Join(cur, comp)
		fi, err := os.Lstat(cur)
		switch {
		case err == nil && fi.IsDir():
			continue
		case err == nil:
			if err := os.Remove(cur); err != nil {
				return err
			}
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
		if err := os.Mkdir(cur, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// unmountImages unmounts the merged image dirs of the sandbox dir (mounts/N).
// Idempotent.
func unmountImages(dir string) error {
	entries, err := os.ReadDir(filepath.Join(dir, "mounts"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, image.UnmountRootfs(filepath.Join(dir, "mounts", e.Name())))
	}
	return errors.Join(errs...)
}
