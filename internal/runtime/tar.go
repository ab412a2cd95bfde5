package runtime

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// TarRootfsUpper writes the upper layer of the container's root overlay (the
// changes made in the sandbox since it started) as a tar to file, which is
// created or truncated (runsc tar rootfs-upper). The sandbox keeps running;
// the tar is a point-in-time copy taken by the sentry.
//
// The tar is in overlayfs form, not OCI form: a deleted file is a character
// device 0/0 and a directory that hides the lower one carries the xattr
// trusted.overlay.opaque=y (image.ConvertUpperTar turns it into a layer).
// Names start with "./"; the first entry is the root itself. Mounts other than
// the root (bind mounts, the /tmp tmpfs gVisor adds when the image's /tmp is
// empty) are not part of it.
//
// Errors: ErrNotFound for an unknown id, ErrInvalidArgument for a relative
// file.
func (r *Runtime) TarRootfsUpper(ctx context.Context, id, file string) error {
	if err := r.mustExist(id); err != nil {
		return fmt.Errorf("tar rootfs-upper: %w", err)
	}
	if !filepath.IsAbs(file) {
		return errdefs.Invalid("tar rootfs-upper %s: file %q must be absolute", id, file)
	}
	args := append(r.globalArgs(id), "tar", "rootfs-upper", "--file", file, id)
	_, err := r.cmd.run(ctx, invocation{args: args})
	return classify(err, "tar rootfs-upper "+id)
}
