package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// CheckpointOpts are the choices of a Checkpoint.
type CheckpointOpts struct {
	// LeaveRunning resumes the container after the save; without it, it
	// stops.
	LeaveRunning bool
	// Direct writes pages.img with O_DIRECT (runsc checkpoint --direct)
	// when imageDir's filesystem supports it, and is ignored otherwise.
	//
	// The sandbox is frozen until every page is written. Through the page
	// cache each page costs a new cache page and a copy, both inside the
	// frozen sentry and under its CPU quota: at 256 MiB the page writes ran
	// at 215-350 MB/s, to tmpfs as slowly as to ext4, and were most of the
	// frozen time. With O_DIRECT the disk reads the sandbox's own pages
	// (677-810 MB/s here, a fifth of the CPU) and nothing is left dirty.
	// The image is then not in the page cache: whoever reads it next
	// (a checksum, a restore) reads the disk.
	Direct bool
}

// Checkpoint saves the container's memory and state into imageDir
// (checkpoint.img, pages.img, pages_meta.img). The sandbox is paused for
// the whole save; see CheckpointOpts for what follows. Errors: ErrNotFound
// for an unknown id.
func (r *Runtime) Checkpoint(ctx context.Context, id, imageDir string, o CheckpointOpts) error {
	if err := r.mustExist(id); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if !filepath.IsAbs(imageDir) {
		return errdefs.Invalid("checkpoint %s: image dir %q must be absolute", id, imageDir)
	}
	args := append(r.globalArgs(id), "checkpoint", "--image-path", imageDir)
	if o.LeaveRunning {
		args = append(args, "--leave-running")
	}
	if o.Direct && directIOSupported(imageDir) {
		args = append(args, "--direct")
	}
	_, err := r.cmd.run(ctx, invocation{args: append(args, id)})
	return classify(err, "checkpoint "+id)
}

// directIOSupported reports whether files in dir can be opened with
// O_DIRECT, as runsc opens pages.img with --direct: a filesystem without it
// refuses the open (EINVAL), which would fail the checkpoint. It creates
// and removes a temporary file in dir.
func directIOSupported(dir string) bool {
	f, err := os.CreateTemp(dir, ".direct-probe-")
	if err != nil {
		return false
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
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
	args := append([]string{"restore", "--detach", "--bundle", s.BundleDir, "--image-path", imageDir}, restoreDirect(imageDir)...)
	return r.launch(ctx, &s, "restore", args...)
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
	args := append([]string{"restore", "--detach", "--bundle", s.BundleDir, "--image-path", imageDir}, restoreDirect(imageDir)...)
	return r.launchWith(ctx, &s, launchOpts{existing: true}, "restore into", args...)
}

// restoreDirect returns the flag that makes runsc read imageDir's pages.img
// with O_DIRECT (into the sandbox's memory, without the page cache), when
// there is one and its filesystem allows it. A checkpoint written with
// Direct is not in the page cache: read through it, each page would cost a
// new cache page and one more copy. The probe only opens the file.
func restoreDirect(imageDir string) []string {
	fd, err := unix.Open(filepath.Join(imageDir, "pages.img"), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	unix.Close(fd)
	return []string{"--direct"}
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
