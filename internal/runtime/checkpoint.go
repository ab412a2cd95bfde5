package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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

// Create makes container s.ID without starting it (runsc create): a restore
// target that RestoreInto fills later. Booting the sandbox process and the
// gofer is most of what a restore from nothing costs (600 ms against
// 130-150 ms into a created container, ENGINE-NOTES), so a target made ahead
// of time takes that off the restore. Errors as for Run; a failed Create
// may leave a half-made container: call Cleanup.
func (r *Runtime) Create(ctx context.Context, s Spec) error {
	return r.launch(ctx, &s, "create", "create", "--bundle", s.BundleDir)
}

// RestoreInto restores the image in imageDir into container s.ID, made by
// Create with the same s. The restored init's stdio goes to s.LogPath.
// Errors: ErrNotFound when there is no such container, else as for Restore;
// on error the container is left for Cleanup.
func (r *Runtime) RestoreInto(ctx context.Context, s Spec, imageDir string) error {
	if !filepath.IsAbs(imageDir) {
		return errdefs.Invalid("restore %s: image dir %q must be absolute", s.ID, imageDir)
	}
	return r.launchWith(ctx, &s, launchOpts{existing: true}, "restore into", "restore", "--detach", "--bundle", s.BundleDir, "--image-path", imageDir)
}

// GuestMemory returns the bytes of memory container id's sandbox holds for
// its guest: gVisor keeps guest memory in a memfd, which its memory cgroup
// counts as shmem. Errors: ErrNotFound when there is no such cgroup.
func (r *Runtime) GuestMemory(id string) (int64, error) {
	for _, dir := range r.cgroupDirs(r.CgroupsPath(id)) {
		b, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "shmem "); ok {
				return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	return 0, errdefs.NotFound("guest memory of %s: no memory cgroup", id)
}
