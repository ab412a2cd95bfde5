package image

import (
	"context"
	"errors"
	"fmt"
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
	return s.lowersLack(lowers, rel)
}

// lowersLack reports whether no layer of lowers has anything at rel; when
// unsure (a path through a symlink) it says no.
func (s *Store) lowersLack(lowers []Digest, rel string) bool {
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

// adoptDiffDir makes the tree at rel in the extracted upper layer diff (which
// the caller gives up) a layer: the overlay markers x made, meaningless once
// the tree stands alone, are taken out (opaque xattrs; whiteouts, with their
// parents' mtimes kept), then it is stored as AddLayerFromTar does. x may
// have recorded paths outside rel, or paths a later entry replaced: those
// are left alone.
func (s *Store) adoptDiffDir(ctx context.Context, diff, rel string, x *extractor, st *stages) (Digest, error) {
	dir := filepath.Join(diff, rel)
	for _, o := range x.opaques {
		if !within(o, rel) {
			continue
		}
		if err := unix.Lremovexattr(filepath.Join(diff, o), opaqueXattr); err != nil && !errors.Is(err, unix.ENODATA) && !errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("directory layer: %w", err)
		}
	}
	for _, w := range x.whiteouts {
		if !within(w, rel) || w == rel {
			continue
		}
		if err := removeWhiteout(filepath.Join(diff, w)); err != nil {
			return "", fmt.Errorf("directory layer: %w", err)
		}
	}
	// The root as AddLayerFromTar makes it (it is no entry of the tar).
	if err := os.Lchown(dir, 0, 0); err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	st.mark("adopt")
	d, err := s.storeTree(ctx, dir, x.plan(rel).below(rel), x.canonOptions(), x.sd, st)
	if err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	return d, nil
}

// removeWhiteout removes p if it is still an overlay whiteout, keeping its
// parent's times.
func removeWhiteout(p string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		return nil
	}
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

// within reports whether the clean relative path p is dir or lies below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}
