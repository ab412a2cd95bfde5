package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Config configures a Runtime. Zero values take the documented defaults.
type Config struct {
	// RunscPath is the runsc binary. Default "runsc" looked up in PATH.
	RunscPath string
	// RootDir is runsc's --root: where runsc keeps container state. One per
	// data dir. Required.
	RootDir string
	// Platform is runsc's --platform. Default "systrap".
	Platform string
	// LogDir, when set, receives runsc's own log for each container
	// (<id>.runsc.log) and, with Debug, per-command debug logs under <id>/.
	// When empty, runsc's log goes to a temporary file read for error text.
	LogDir string
	// Debug turns on runsc --debug logging into LogDir.
	Debug bool
	// CgroupParent is the cgroup path under which each container gets
	// CgroupParent/<id>. Default "/sandboxd".
	CgroupParent string
	// CgroupRoot is where the cgroup hierarchies are mounted. Default
	// "/sys/fs/cgroup".
	CgroupRoot string
}

// Runtime is the runsc driver. Create it with New.
type Runtime struct {
	cfg Config
	log *slog.Logger
	cmd commander
	// sockets keeps each sandbox's control socket path (see control), by
	// id, until Delete.
	sockets sync.Map
}

// New returns a Runtime using the real runsc binary. It creates RootDir (and
// LogDir) if needed.
func New(cfg Config, log *slog.Logger) (*Runtime, error) {
	if cfg.RunscPath == "" {
		cfg.RunscPath = "runsc"
	}
	return newRuntime(cfg, log, execCommander{path: cfg.RunscPath})
}

func newRuntime(cfg Config, log *slog.Logger, cmd commander) (*Runtime, error) {
	if cfg.RootDir == "" || !filepath.IsAbs(cfg.RootDir) {
		return nil, errdefs.Invalid("runtime config: root dir %q must be an absolute path", cfg.RootDir)
	}
	if cfg.Platform == "" {
		cfg.Platform = "systrap"
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "/sandboxd"
	}
	if !strings.HasPrefix(cfg.CgroupParent, "/") {
		return nil, errdefs.Invalid("runtime config: cgroup parent %q must start with /", cfg.CgroupParent)
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/sys/fs/cgroup"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{cfg.RootDir, cfg.LogDir} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("runtime config: %w", err)
		}
	}
	return &Runtime{cfg: cfg, log: log, cmd: cmd}, nil
}

// CgroupsPath returns the cgroup path given to runsc for container id.
func (r *Runtime) CgroupsPath(id string) string {
	return filepath.Join(r.cfg.CgroupParent, id)
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidateID reports whether id is acceptable as a container id: letters,
// digits, '_', '.', '-', at most 128 characters, not starting with a
// separator. It does not check prefix collisions (see Run).
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return errdefs.Invalid("container id %q: want [A-Za-z0-9][A-Za-z0-9_.-]{0,127}", id)
	}
	return nil
}

// checkNoPrefixCollision refuses id when it is a prefix of a container in
// the root dir, or one of them is a prefix of it, or it exists already.
func (r *Runtime) checkNoPrefixCollision(id string) error {
	ids, err := r.List()
	if err != nil {
		return err
	}
	for _, other := range ids {
		switch {
		case other == id:
			return errdefs.AlreadyExists("container %s", id)
		case strings.HasPrefix(other, id) || strings.HasPrefix(id, other):
			return errdefs.AlreadyExists("container id %s collides by prefix with %s (runsc matches ids by prefix)", id, other)
		}
	}
	return nil
}

// mustExist returns ErrNotFound unless exactly id is in the root dir. It
// guards runsc's prefix matching: without it, Delete("sb-") would delete
// some "sb-..." container.
func (r *Runtime) mustExist(id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	ids, err := r.List()
	if err != nil {
		return err
	}
	for _, other := range ids {
		if other == id {
			return nil
		}
	}
	return errdefs.NotFound("container %s", id)
}

// List returns the ids of the containers in the root dir, in directory
// order, whatever their status. It reads runsc's state files and starts no
// process.
func (r *Runtime) List() ([]string, error) {
	entries, err := os.ReadDir(r.cfg.RootDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var ids []string
	for _, e := range entries {
		// runsc names them "<container id>_sandbox:<sandbox id>.state".
		name, ok := strings.CutSuffix(e.Name(), ".state")
		if !ok {
			continue
		}
		if cid, _, ok := strings.Cut(name, "_sandbox:"); ok {
			ids = append(ids, cid)
		}
	}
	return ids, nil
}

// Close releases what runsc keeps in the root dir for all its containers:
// the bind mount of an empty network namespace (null-netns) that it makes
// for --network=none sandboxes. It fails with ErrFailedPrecondition while
// containers remain, and is idempotent. runsc makes the mount again when
// needed, so the Runtime stays usable after Close.
func (r *Runtime) Close() error {
	ids, err := r.List()
	if err != nil {
		return err
	}
	if len(ids) > 0 {
		return errdefs.FailedPrecondition("close runtime: %d containers left in %s", len(ids), r.cfg.RootDir)
	}
	p := filepath.Join(r.cfg.RootDir, "null-netns")
	// Unmounted until nothing is mounted there: runsc processes started
	// together may each have mounted it (stacked mounts).
	for i := 0; ; i++ {
		err := unix.Unmount(p, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("close runtime: unmount %s: %w", p, err)
		}
		if i == 64 {
			return fmt.Errorf("close runtime: %s still mounted after %d unmounts", p, i+1)
		}
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("close runtime: %w", err)
	}
	// The parent cgroups (e.g. /sys/fs/cgroup/memory/sandboxd) go too when
	// empty; one still in use by another daemon's containers stays (rmdir
	// fails on a cgroup with children).
	for _, dir := range r.cgroupDirs(r.cfg.CgroupParent) {
		os.Remove(dir)
	}
	return nil
}
