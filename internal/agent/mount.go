package agent

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Images mounted into the running sandbox. The daemon binds each image's
// directory under StageDir (a host directory shared into the sandbox
// read-only before it started, so host mounts made later show up inside);
// the agent then mounts, on the target path, an overlay whose lower layer is
// that staged directory and whose upper and work directories live on a tmpfs
// of their own under UpperDir. Writes stay in that tmpfs (the sandbox's
// memory): private to the sandbox, saved by memory snapshots, never reaching
// the stored image. Unmounting the overlay brings back what the path held.
const (
	// StageDir is where the daemon's staging directory appears inside.
	StageDir = "/.sandboxd/stage"
	// UpperDir holds one tmpfs per mounted image, named like its stage.
	UpperDir = "/.sandboxd/upper"
)

var stageNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// reservedMountRoots are the engine's own mounts: nothing is mounted on or
// under them.
var reservedMountRoots = []string{"/.sandboxd", "/proc", "/sys", "/dev"}

// mounter is mount(2) and umount2(2); tests pass a fake.
type mounter interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string, flags int) error
}

type sysMounter struct{}

func (sysMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	return syscall.Mount(source, target, fstype, flags, data)
}

func (sysMounter) Unmount(target string, flags int) error { return syscall.Unmount(target, flags) }

// imageMounts mounts and unmounts staged images. It remembers where each
// stage is mounted (the agent lives as long as the sandbox, and a memory
// snapshot keeps this map), so an unmount touches only what it mounted.
// Safe for concurrent use; operations are serialised.
type imageMounts struct {
	sys              mounter
	stageDir, upperD string

	mu      sync.Mutex
	targets map[string]string // stage name -> mount point
}

func newImageMounts(sys mounter) *imageMounts {
	return &imageMounts{sys: sys, stageDir: StageDir, upperD: UpperDir, targets: map[string]string{}}
}

// checkMountRequest validates a stage name and a target path.
func checkMountRequest(stage, p string) error {
	if !stageNameRE.MatchString(stage) {
		return errdefs.Invalid("bad stage name %q", stage)
	}
	switch {
	case !path.IsAbs(p):
		return errdefs.Invalid("path %q is not absolute", p)
	case path.Clean(p) != p:
		return errdefs.Invalid("path %q is not clean", p)
	case p == "/":
		return errdefs.Invalid("cannot mount on /")
	}
	for _, r := range reservedMountRoots {
		if p == r || len(p) > len(r) && p[:len(r)+1] == r+"/" {
			return errdefs.Invalid("path %q lies in %s, which the engine owns", p, r)
		}
	}
	return nil
}

// mount mounts stage on p (see the package's MountImage RPC). Mounting a
// stage already mounted on p again succeeds and does nothing. On error
// nothing of it is left.
func (m *imageMounts) mount(stage, p string) (err error) {
	if err := checkMountRequest(stage, p); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.targets[stage]; ok {
		if t == p {
			return nil
		}
		return errdefs.AlreadyExists("stage %s is mounted on %s already", stage, t)
	}
	lower := filepath.Join(m.stageDir, stage)
	fi, err := os.Stat(lower)
	if err != nil || !fi.IsDir() {
		return errdefs.FailedPrecondition("staged image %s not found in %s (a sandbox started by an older daemon cannot mount images while it runs)", stage, m.stageDir)
	}
	if err := makeDirs(p); err != nil {
		return err
	}
	upper := filepath.Join(m.upperD, stage)
	if err := os.MkdirAll(upper, 0o700); err != nil {
		return fmt.Errorf("mount %s: upper dir: %w", p, err)
	}
	if err := m.sys.Mount("tmpfs", upper, "tmpfs", syscall.MS_NODEV|syscall.MS_NOSUID, "mode=0700"); err != nil {
		os.Remove(upper)
		return mountErr(p, "tmpfs", err)
	}
	defer func() {
		if err != nil {
			m.sys.Unmount(upper, syscall.MNT_DETACH)
			os.Remove(upper)
		}
	}()
	if err := prepareUpper(upper, fi); err != nil {
		return fmt.Errorf("mount %s: %w", p, err)
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + "/u,workdir=" + upper + "/w"
	if err := m.sys.Mount("overlay", p, "overlay", 0, opts); err != nil {
		return mountErr(p, "overlay", err)
	}
	m.targets[stage] = p
	return nil
}

// unmount undoes mount. A stage that is not mounted is no error.
func (m *imageMounts) unmount(stage, p string) error {
	if err := checkMountRequest(stage, p); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.targets[stage]
	if !ok {
		return nil
	}
	if err := unmountBusy(m.sys, t); err != nil {
		return fmt.Errorf("unmount %s: %w", t, err)
	}
	delete(m.targets, stage)
	upper := filepath.Join(m.upperD, stage)
	if err := unmountBusy(m.sys, upper); err != nil {
		return fmt.Errorf("unmount %s: upper layer: %w", t, err)
	}
	os.Remove(upper)
	return nil
}

// unmountBusy unmounts target, lazily when it is busy (a process has a file
// open or its working directory in it: it keeps its view, new lookups see
// what lies beneath). Not mounted is no error.
func unmountBusy(sys mounter, target string) error {
	err := sys.Unmount(target, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = sys.Unmount(target, syscall.MNT_DETACH)
	}
	if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// makeDirs makes p and its parents as directories. A file (or anything but
// a directory, or a symlink to one) on the way is ErrFailedPrecondition:
// mounting must not destroy what the sandbox holds, since unmounting brings
// it back.
func makeDirs(p string) error {
	err := os.MkdirAll(p, 0o755)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, os.ErrExist) {
		return errdefs.FailedPrecondition("cannot mount on %s: it or a parent is not a directory", p)
	}
	return fmt.Errorf("mount %s: make the mount point: %w", p, err)
}

// prepareUpper makes the overlay's upper and work dirs in the tmpfs. The
// upper dir takes the owner and mode of the staged directory: an overlay's
// root shows the upper dir's attributes.
func prepareUpper(upper string, lower os.FileInfo) error {
	u := filepath.Join(upper, "u")
	for _, d := range []string{u, filepath.Join(upper, "w")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	if st, ok := lower.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(u, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	if err := os.Chmod(u, lower.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return err
	}
	return os.Chtimes(u, lower.ModTime(), lower.ModTime())
}

// mountErr classifies a failed mount(2): without CAP_SYS_ADMIN it is EPERM.
func mountErr(p, what string, err error) error {
	if errors.Is(err, syscall.EPERM) {
		return errdefs.FailedPrecondition("mount %s on %s: the agent may not mount (a sandbox started by an older daemon cannot mount images while it runs): %v", what, p, err)
	}
	return fmt.Errorf("mount %s on %s: %w", what, p, err)
}
