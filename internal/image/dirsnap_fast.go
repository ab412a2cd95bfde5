package image

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// diffCovers reports whether the tree at rel in the extracted upper layer
// diff is all there is at rel in the merged filesystem: rel or one of its
// parents is an opaque directory of diff, or no lower layer has anything at
// rel. When unsure (a lower path through a symlink) it says no.
func (s *Store) diffCovers(diff string, lowers []Digest, rel string) bool {
	cur := diff
	for _, comp := range strings.Split(rel, "/") {
		cur = filepath.Join(cur, comp)
		var st unix.Stat_t
		if err := unix.Lstat(cur, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return false
		}
		buf := make([]byte, 4)
		if n, err := unix.Lgetxattr(cur, opaqueXattr, buf); err == nil && string(buf[:n]) == "y" {
			return true
		}
	}
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV}
	for _, l := range lowers {
		root, err := unix.Open(s.LayerPath(l), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return false
		}
		fd, err := unix.Openat2(root, rel, how)
		unix.Close(root)
		if err == nil {
			unix.Close(fd)
			return false
		}
		if !errors.Is(err, unix.ENOENT) {
			return false
		}
	}
	return true
}

// adoptDiffDir makes the extracted tree at dir (which the caller gives up) a
// layer: overlay markers, meaningless once the tree stands alone, are taken
// out (opaque xattrs, whiteouts; the parents' mtimes kept), then it is
// digested and renamed into place as AddLayerFromTar does.
func (s *Store) adoptDiffDir(ctx context.Context, dir string) (Digest, error) {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if err := unix.Lremovexattr(p, opaqueXattr); err != nil && !errors.Is(err, unix.ENODATA) {
				return err
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
			var pst unix.Stat_t
			parent := filepath.Dir(p)
			if err := unix.Lstat(parent, &pst); err != nil {
				return err
			}
			if err := os.Remove(p); err != nil {
				return err
			}
			return unix.UtimesNanoAt(unix.AT_FDCWD, parent, []unix.Timespec{pst.Atim, pst.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	// The root as AddLayerFromTar makes it (it is no entry of the tar).
	if err := os.Lchown(dir, 0, 0); err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	h := sha256.New()
	size, err := writeCanonicalTar(ctx, dir, h)
	if err != nil {
		return "", fmt.Errorf("directory layer: digest: %w", err)
	}
	d := digestFromSum(h.Sum(nil))
	if err := syncfs(dir); err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	if err := s.commitLayer(ctx, dir, d, size); err != nil {
		return "", fmt.Errorf("directory layer %s: %w", d, err)
	}
	return d, nil
}
