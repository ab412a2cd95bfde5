package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Cleanup makes sure nothing of container id is left: it force-deletes the
// container if runsc knows it, then removes its cgroup directories
// (<CgroupRoot>/<controller>/<CgroupParent>/<id> and below, deepest first).
// It is idempotent and returns nil when nothing was left. It does not touch
// the bundle, rootfs, scratch dir or logs, which the caller owns.
//
// A cgroup directory that still holds processes makes it fail with
// ErrUnavailable.
func (r *Runtime) Cleanup(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	var errs []error
	// Go on to the cgroups even when delete fails: leave as little as we can.
	if err := r.Delete(ctx, id, true); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		errs = append(errs, err)
	}
	for _, dir := range r.cgroupDirs(r.CgroupsPath(id)) {
		if err := removeCgroupTree(dir); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup %s: %w", id, errors.Join(errs...))
	}
	return nil
}

// LeftoverCgroups returns the cgroup directories found directly under
// CgroupParent in every hierarchy, one per container and controller, e.g.
// /sys/fs/cgroup/memory/sandboxd/sb-0123456789abcdef. Tests use it as a
// leak check; the daemon can compare it with the containers it knows.
func (r *Runtime) LeftoverCgroups() ([]string, error) {
	var out []string
	for _, parent := range r.cgroupDirs(r.cfg.CgroupParent) {
		entries, err := os.ReadDir(parent)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("leftover cgroups: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, filepath.Join(parent, e.Name()))
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// cgroupDirs returns <CgroupRoot>/<hierarchy>/<rel> for each mounted
// hierarchy where it exists. On cgroup v2 (CgroupRoot itself is the
// hierarchy) that is <CgroupRoot>/<rel>.
func (r *Runtime) cgroupDirs(rel string) []string {
	rel = strings.TrimPrefix(rel, "/")
	candidates := []string{filepath.Join(r.cfg.CgroupRoot, rel)}
	if entries, err := os.ReadDir(r.cfg.CgroupRoot); err == nil {
		for _, e := range entries {
			// Symlinks such as cpu,cpuacct -> cpu name a hierarchy twice.
			if e.IsDir() {
				candidates = append(candidates, filepath.Join(r.cfg.CgroupRoot, e.Name(), rel))
			}
		}
	}
	var out []string
	for _, c := range candidates {
		if fi, err := os.Lstat(c); err == nil && fi.IsDir() {
			out = append(out, c)
		}
	}
	return out
}

// removeCgroupTree removes dir and the cgroup directories below it,
// deepest first. Cgroup control files cannot (and need not) be removed:
// rmdir of a cgroup without children or processes succeeds.
func removeCgroupTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", dir, err)
	}
	// Deeper paths are longer; remove them first.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rmdir %s: %w", d, err)
		}
	}
	return nil
}
