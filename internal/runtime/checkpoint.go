package runtime

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Checkpoint saves the container's memory and state into imageDir
// (checkpoint.img, pages.img, pages_meta.img). The sandbox is paused for
// the whole save. With leaveRunning it resumes afterwards; without, it
// stops. Errors: ErrNotFound for an unknown id.
func (r *Runtime) Checkpoint(ctx context.Context, id, imageDir string, leaveRunning bool) error {
	if err := r.mustExist(id); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if !filepath.IsAbs(imageDir) {
		return errdefs.Invalid("checkpoint %s: image dir %q must be absolute", id, imageDir)
	}
	args := append(r.globalArgs(id), "checkpoint", "--image-path", imageDir)
	if leaveRunning {
		args = append(args, "--leave-running")
	}
	_, err := r.cmd.run(ctx, invocation{args: append(args, id)})
	return classify(err, "checkpoint "+id)
}

// Restore starts a new container s.ID from the image in imageDir (runsc
// restore --detach). It writes s's bundle first, so the restored sandbox
// may join another network namespace and use another scratch dir and log
// than the one checkpointed; its rootfs must hold what the checkpointed one
// held. The restored init's stdio goes to s.LogPath. Errors as for Run.
func (r *Runtime) Restore(ctx context.Context, s Spec, imageDir string) error {
	if !filepath.IsAbs(imageDir) {
		return errdefs.Invalid("restore %s: image dir %q must be absolute", s.ID, imageDir)
	}
	return r.launch(ctx, &s, "restore", "restore", "--detach", "--bundle", s.BundleDir, "--image-path", imageDir)
}
