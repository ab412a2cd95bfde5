package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// AddDirLayer stores, as a layer holding it at its root, the tree at dir (an
// absolute path) of the filesystem made of lowers (an image's layers, lowest
// first) with the overlay upper tar read from upper (see ConvertUpperTar) on
// top: a directory snapshot of a sandbox, taken on the host.
//
// Only the part of upper on the way to dir or below it is extracted. The
// kernel's overlayfs merges it with the layers (read-only, in a mount of its
// own under tmp/), so whiteouts and opaque directories mean what they meant
// in the sandbox. Symlinks on the way to dir resolve inside that filesystem,
// never on the host. Errors: ErrNotFound when dir does not exist there,
// ErrInvalidArgument when it is not a directory.
func (s *Store) AddDirLayer(ctx context.Context, lowers []Digest, upper io.Reader, dir string) (Digest, error) {
	rel := strings.TrimPrefix(path.Clean("/"+dir), "/")
	if rel == "" {
		return "", errdefs.Invalid("directory layer: want a directory other than /")
	}
	tmp, err := os.MkdirTemp(s.tmpDir(), "dirsnap-")
	if err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	// What is left in tmp once the layer is stored (the parents of the
	// directory; all of it when the store held the layer already) goes to
	// the trash.
	defer s.trash.add(tmp)
	// First only the entries on the way to dir; if dir turns out to be
	// reached through a symlink, everything (the symlink may lead anywhere).
	st := s.newStages()
	if s.images {
		return s.addDirLayerImage(ctx, tmp, lowers, upper, rel, st)
	}
	src, done, x, err := s.mergeAt(ctx, tmp, "1", lowers, upper, rel, onPathTo(rel))
	st.mark("extract_mount")
	if err != nil {
		return "", err
	}
	defer x.sd.stop() // unless adopted, the tree is walked anyway
	if src == filepath.Join(tmp, "1", "merged", rel) && s.diffCovers(filepath.Join(tmp, "1", "diff"), lowers, rel) {
		// The directory is the sandbox's own (made or replaced whole by it):
		// the extracted diff is the whole tree, no second copy needed.
		done()
		st.mark("covers_unmount")
		d, err := s.adoptDiffDir(ctx, filepath.Join(tmp, "1", "diff"), rel, x, st)
		if err == nil {
			st.log(ctx, s.log, "directory layer", "layer", d, "route", "adopt")
		}
		return d, err
	}
	if src != filepath.Join(tmp, "1", "merged", rel) {
		done()
		if err := rewindUpper(upper, rel); err != nil {
			return "", err
		}
		if src, done, _, err = s.mergeAt(ctx, tmp, "2", lowers, upper, rel, nil); err != nil {
			return "", err
		}
	}
	defer done()
	return s.AddLayerFromDir(ctx, src)
}

// rewindUpper starts the diff upper again from its beginning (see
// provision's upperStream: a new tar from the engine), for a directory rel
// reached through a symlink, which may lead anywhere in the diff.
func rewindUpper(upper io.Reader, rel string) error {
	seeker, ok := upper.(io.Seeker)
	if !ok {
		return errdefs.Invalid("directory layer: /%s is reached through a symlink", rel)
	}
	if _, err := seeker.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("directory layer: %w", err)
	}
	return nil
}

// mergeAt extracts the entries of upper that keep accepts into tmp/name/diff,
// mounts them over lowers at tmp/name/merged and resolves rel there. done
// unmounts. x is the (closed) extractor, for what it recorded.
func (s *Store) mergeAt(ctx context.Context, tmp, name string, lowers []Digest, upper io.Reader, rel string, keep func(string) bool) (src string, done func(), x *extractor, err error) {
	diff, merged := filepath.Join(tmp, name, "diff"), filepath.Join(tmp, name, "merged")
	for _, d := range []string{diff, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", nil, nil, fmt.Errorf("directory layer: %w", err)
		}
	}
	if x, err = newExtractor(diff); err != nil {
		return "", nil, nil, fmt.Errorf("directory layer: %w", err)
	}
	if keep != nil {
		// rel's tree may turn out to be the layer as extracted (see
		// adoptDiffDir): digest it on the way.
		x.sd = newStreamDigest(rel)
	}
	err = convertUpper(ctx, upper, keep, x.add)
	if err == nil {
		err = x.finishDirs()
	}
	x.close()
	if err != nil {
		x.sd.stop()
		return "", nil, nil, fmt.Errorf("directory layer: %w", err)
	}
	src, done, err = s.mountMerged(diff, merged, lowers, rel)
	if err != nil {
		x.sd.stop()
		return "", nil, nil, err
	}
	return src, done, x, nil
}

// mountMerged mounts the tree diff over lowers at merged (read-only) and
// resolves rel there. done unmounts.
func (s *Store) mountMerged(diff, merged string, lowers []Digest, rel string) (src string, done func(), err error) {
	dirs := []string{diff} // highest first
	for i := len(lowers) - 1; i >= 0; i-- {
		if err := lowers[i].Validate(); err != nil {
			return "", nil, err
		}
		dirs = append(dirs, s.LayerPath(lowers[i]))
	}
	if err := mountLowerOnly(dirs, merged); err != nil {
		return "", nil, fmt.Errorf("directory layer: %w", err)
	}
	src, closeSrc, err := openBeneath(merged, rel)
	if err != nil {
		unix.Unmount(merged, unix.MNT_DETACH)
		return "", nil, fmt.Errorf("directory layer: /%s: %w", rel, err)
	}
	return src, func() {
		closeSrc()
		unix.Unmount(merged, unix.MNT_DETACH)
	}, nil
}

// onPathTo returns a ConvertUpperTar keep function that keeps the entries on
// the way to rel (its parent directories) and rel with everything below it.
func onPathTo(rel string) func(string) bool {
	return func(p string) bool {
		return p == rel || strings.HasPrefix(p, rel+"/") || strings.HasPrefix(rel, p+"/")
	}
}

// mountLowerOnly mounts a read-only overlayfs of dirs (highest first) on
// target.
func mountLowerOnly(dirs []string, target string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err == nil {
		defer unix.Close(fsfd)
		for _, d := range dirs {
			if err = unix.FsconfigSetString(fsfd, "lowerdir+", d); err != nil {
				break
			}
		}
		if err == nil {
			if err = unix.FsconfigCreate(fsfd); err != nil {
				return fmt.Errorf("create overlay: %w", err)
			}
			mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NODEV)
			if err != nil {
				return fmt.Errorf("fsmount: %w", err)
			}
			defer unix.Close(mfd)
			return unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("overlay lowerdir+: %w", err)
		}
	}
	// Older kernels: mount(2), layers named by short /proc/self/fd paths.
	short := make([]string, len(dirs))
	for i, d := range dirs {
		fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: d, Err: err}
		}
		defer unix.Close(fd)
		short[i] = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	opts := "lowerdir=" + strings.Join(short, ":")
	if len(opts) >= os.Getpagesize() {
		return errdefs.Invalid("%d layers do not fit in one overlay mount", len(dirs))
	}
	return unix.Mount("overlay", target, "overlay", unix.MS_RDONLY|unix.MS_NODEV, opts)
}

// openBeneath resolves rel inside root as if root were "/" (symlinks
// included) and returns a path naming the directory it found, valid until
// closeFn is called.
func openBeneath(root, rel string) (string, func(), error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return "", nil, errdefs.NotFound("no such directory in the sandbox")
	case errors.Is(err, unix.ENOTDIR):
		return "", nil, errdefs.Invalid("a parent is not a directory")
	case err != nil:
		return "", nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return "", nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(fd)
		return "", nil, errdefs.Invalid("not a directory")
	}
	// The path the kernel resolved to; root is a read-only mount only we use,
	// so the name stays bound to that directory.
	resolved, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !(resolved == root || strings.HasPrefix(resolved, root+"/")) {
		unix.Close(fd)
		return "", nil, errdefs.Invalid("resolves outside the sandbox's filesystem")
	}
	return resolved, func() { unix.Close(fd) }, nil
}
