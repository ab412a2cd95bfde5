package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// MountRootfs mounts a kernel overlayfs on target: the given layers (lowest
// first, as in Image.Layers) are its read-only lower directories, upper and
// work (same filesystem, one pair per sandbox) receive every change. upper,
// work and target are created if missing. The layer directories are never
// written to. The mount is nodev: device nodes in a layer cannot be opened
// through it on the host.
//
// Lower directories go in one at a time through the new mount API
// (fsconfig "lowerdir+", Linux 6.8 and later), so there is no limit from the
// one-page size of mount(2)'s option string. On older kernels mount(2) is
// used; if its option string would pass a page, each layer is named by a
// short /proc/self/fd/N path of a descriptor held during the call instead of
// by its full path (no chdir, which would race with the rest of the process).
func (s *Store) MountRootfs(ctx context.Context, layers []Digest, upper, work, target string) error {
	if len(layers) == 0 {
		return errdefs.Invalid("mount rootfs: no layers")
	}
	if upper == "" || work == "" {
		return errdefs.Invalid("mount rootfs: upper and work directories are required")
	}
	lowers := make([]string, 0, len(layers)) // highest first
	for i := len(layers) - 1; i >= 0; i-- {
		d := layers[i]
		if err := d.Validate(); err != nil {
			return err
		}
		p := s.LayerPath(d)
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			return errdefs.NotFound("mount rootfs: layer %s not found", d)
		}
		lowers = append(lowers, p)
	}
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("mount rootfs: %w", err)
		}
	}
	err := mountNewAPI(lowers, upper, work, target)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, errOldKernel) {
		err = mountLegacy(lowers, upper, work, target)
	}
	if err != nil {
		return fmt.Errorf("mount rootfs on %s: %w", target, err)
	}
	return nil
}

var errOldKernel = errors.New("overlayfs without lowerdir+")

// mountNewAPI mounts with fsopen/fsconfig/fsmount/move_mount.
func mountNewAPI(lowers []string, upper, work, target string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	for i, l := range lowers {
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", l); err != nil {
			if i == 0 && errors.Is(err, unix.EINVAL) {
				return errOldKernel
			}
			return fmt.Errorf("lowerdir+ %s: %w", l, err)
		}
	}
	for _, kv := range [][2]string{{"upperdir", upper}, {"workdir", work}} {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			return fmt.Errorf("%s %s: %w", kv[0], kv[1], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// mountLegacy mounts with mount(2), shortening the lower paths to
// /proc/self/fd/N when the option string would not fit in a page.
func mountLegacy(lowers []string, upper, work, target string) error {
	for _, p := range append([]string{upper, work}, lowers...) {
		if strings.ContainsAny(p, ",:") {
			return errdefs.Invalid("path %q holds ',' or ':', which overlay options cannot carry", p)
		}
	}
	opts := legacyOptions(lowers, upper, work)
	if len(opts) >= os.Getpagesize() {
		short := make([]string, len(lowers))
		for i, l := range lowers {
			fd, err := unix.Open(l, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return &os.PathError{Op: "open", Path: l, Err: err}
			}
			defer unix.Close(fd)
			short[i] = "/proc/self/fd/" + strconv.Itoa(fd)
		}
		opts = legacyOptions(short, upper, work)
		if len(opts) >= os.Getpagesize() {
			return errdefs.Invalid("%d layers do not fit in one overlay mount", len(lowers))
		}
	}
	if err := unix.Mount("overlay", target, "overlay", unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return nil
}

func legacyOptions(lowers []string, upper, work string) string {
	return "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
}

// UnmountRootfs unmounts what MountRootfs mounted on target. It is
// idempotent: a target that is not mounted (or does not exist) is fine. A
// busy mount is detached lazily and goes once its last user leaves.
func UnmountRootfs(target string) error {
	err := unix.Unmount(target, 0)
	switch {
	case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EBUSY):
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount rootfs %s: %w", target, err)
		}
		return nil
	}
	return fmt.Errorf("unmount rootfs %s: %w", target, err)
}

// MountPointsUnder lists the mount points at or below dir, deepest first
// (the order to unmount them in), from /proc/self/mountinfo. A path mounted
// several times is listed as often.
func MountPointsUnder(dir string) ([]string, error) {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
