package runtime

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Spec describes one container: what runs, on which root, with which limits.
// It is our input type; toOCI turns it into an OCI config.json.
type Spec struct {
	// ID is the container id (see the package doc: fixed length, no prefix
	// of another).
	ID string
	// BundleDir is where config.json is written. It must exist.
	BundleDir string
	// RootfsPath is the root filesystem: a real directory (not a symlink)
	// prepared by the caller, e.g. a host overlay mount. Mount points of
	// Mounts are created in it by runsc's gofer if missing, so it must be
	// writable on the host or hold them already.
	RootfsPath string
	// ScratchDir holds gVisor's overlay upper layer (--overlay2=all:dir=).
	// Writes made in the sandbox to the root and to writable bind mounts
	// land here, never in RootfsPath or mount sources. Must exist.
	ScratchDir string
	// LogPath receives the init's stdout and stderr (appended).
	LogPath string

	Args     []string // process argv; Args[0] is resolved in the sandbox
	Env      []string // KEY=VALUE; PATH is added if missing
	Cwd      string   // default "/"
	Hostname string   // default ID

	Mounts []Mount

	// NetNSPath is a network namespace to join (runsc --network=sandbox:
	// gVisor's netstack takes over its interfaces). Empty means a fresh
	// namespace with loopback only (--network=none).
	NetNSPath string

	Resources Resources

	// Capabilities are added to the init's default set, e.g.
	// "CAP_SYS_ADMIN". Capabilities apply inside gVisor, not on the host.
	Capabilities []string
	// InitCapabilities are meant for the init process alone, not for the
	// programs it runs. They go into its inheritable, permitted and effective
	// sets but not into the bounding set. gVisor applies execve's rules to
	// the init itself (permitted' = bounding | inheritable for root), so a
	// capability outside both sets would never reach it: the inheritable set
	// carries it through that first execve. The init must then clear them
	// from its inheritable set, on every thread, before it runs anything;
	// from then on a program it executes, even as root, gets only the
	// bounding set (verified with runsc: such a child cannot mount, ptrace
	// the init, or open its /proc/1/mem for writing).
	InitCapabilities []string
}

// Mount is a bind mount of a host path into the sandbox.
type Mount struct {
	Source      string // absolute host path
	Destination string // absolute path in the sandbox
	// ReadOnly makes writes fail. When false, gVisor's overlay gives the
	// sandbox a private copy-on-write view: the host source is unchanged.
	ReadOnly bool
}

// Resources are cgroup limits. Zero means no limit.
type Resources struct {
	CPUs        float64 // cores, e.g. 0.5; CFS quota over a 100ms period
	MemoryBytes int64
	Pids        int64
}

// cfsPeriod is the CFS period used for CPU limits, in microseconds.
const cfsPeriod = 100000

// defaultCaps is the init's capability set (Docker's default set).
var defaultCaps = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
	"CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// validate checks the fields that do not need the file system.
func (s *Spec) validate() error {
	if err := ValidateID(s.ID); err != nil {
		return err
	}
	for name, p := range map[string]string{"bundle dir": s.BundleDir, "rootfs": s.RootfsPath,
		"scratch dir": s.ScratchDir, "log path": s.LogPath} {
		if !filepath.IsAbs(p) {
			return errdefs.Invalid("spec %s: %s %q must be an absolute path", s.ID, name, p)
		}
	}
	if len(s.Args) == 0 {
		return errdefs.Invalid("spec %s: no args", s.ID)
	}
	if s.Cwd != "" && !filepath.IsAbs(s.Cwd) {
		return errdefs.Invalid("spec %s: cwd %q must be absolute", s.ID, s.Cwd)
	}
	if s.NetNSPath != "" && !filepath.IsAbs(s.NetNSPath) {
		return errdefs.Invalid("spec %s: netns %q must be absolute", s.ID, s.NetNSPath)
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Destination) {
			return errdefs.Invalid("spec %s: mount %s -> %s: paths must be absolute", s.ID, m.Source, m.Destination)
		}
	}
	for _, c := range append(slices.Clone(s.Capabilities), s.InitCapabilities...) {
		if !strings.HasPrefix(c, "CAP_") || strings.ToUpper(c) != c {
			return errdefs.Invalid("spec %s: capability %q: want CAP_NAME", s.ID, c)
		}
	}
	r := s.Resources
	if r.CPUs < 0 || math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) || r.MemoryBytes < 0 || r.Pids < 0 {
		return errdefs.Invalid("spec %s: negative or invalid resource limit %+v", s.ID, r)
	}
	return nil
}

// checkPaths checks that the directories of s exist; the rootfs must be a
// real directory (runsc's gofer refuses a symlink).
func (s *Spec) checkPaths() error {
	for name, p := range map[string]string{"bundle dir": s.BundleDir, "rootfs": s.RootfsPath, "scratch dir": s.ScratchDir} {
		fi, err := os.Lstat(p)
		if err != nil {
			return errdefs.Invalid("spec %s: %s: %v", s.ID, name, err)
		}
		if !fi.IsDir() {
			return errdefs.Invalid("spec %s: %s %s is not a directory (symlinks are refused)", s.ID, name, p)
		}
	}
	return nil
}

// toOCI returns the OCI spec for s. cgroupsPath is the container's cgroup.
func (s *Spec) toOCI(cgroupsPath string) *specs.Spec {
	env := append([]string(nil), s.Env...)
	hasPath := false
	for _, e := range env {
		hasPath = hasPath || strings.HasPrefix(e, "PATH=")
	}
	if !hasPath {
		env = append(env, defaultPath)
	}
	cwd := s.Cwd
	if cwd == "" {
		cwd = "/"
	}
	hostname := s.Hostname
	if hostname == "" {
		hostname = s.ID
	}
	caps := append(append([]string(nil), defaultCaps...), s.Capabilities...)
	caps = dedupe(caps)
	initCaps := dedupe(append(slices.Clone(caps), s.InitCapabilities...))
	var inheritable []string
	for _, c := range s.InitCapabilities {
		if !slices.Contains(caps, c) && !slices.Contains(inheritable, c) {
			inheritable = append(inheritable, c)
		}
	}

	ns := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
		{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: s.NetNSPath},
	}
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: append([]string(nil), s.Args...),
			Env:  env,
			Cwd:  cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: initCaps, Permitted: initCaps, Inheritable: inheritable,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 20, Soft: 1 << 20}},
			NoNewPrivileges: true,
		},
		// Writable, so that runsc puts its overlay (--overlay2) on top.
		Root:     &specs.Root{Path: s.RootfsPath, Readonly: false},
		Hostname: hostname,
		Mounts:   append(defaultMounts(), bindMounts(s.Mounts)...),
		Linux: &specs.Linux{
			CgroupsPath: cgroupsPath,
			Resources:   resources(s.Resources),
			Namespaces:  ns,
		},
	}
}

func defaultMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
}

func bindMounts(ms []Mount) []specs.Mount {
	var out []specs.Mount
	for _, m := range ms {
		opts := []string{"rbind"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		out = append(out, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: opts})
	}
	return out
}

// resources maps our limits to OCI cgroup values; nil when there are none.
func resources(r Resources) *specs.LinuxResources {
	if r == (Resources{}) {
		return nil
	}
	out := &specs.LinuxResources{}
	if r.CPUs > 0 {
		quota := int64(math.Round(r.CPUs * cfsPeriod))
		quota = max(quota, 1000) // the kernel's minimum quota is 1ms
		period := uint64(cfsPeriod)
		out.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if r.MemoryBytes > 0 {
		limit := r.MemoryBytes
		out.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	if r.Pids > 0 {
		out.Pids = &specs.LinuxPids{Limit: r.Pids}
	}
	return out
}

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// writeSpec writes config.json into s.BundleDir atomically: a temporary
// file in the same directory, fsync, rename, fsync of the directory. The
// file has mode 0600.
func writeSpec(s *Spec, cgroupsPath string) error {
	b, err := json.MarshalIndent(s.toOCI(cgroupsPath), "", "  ")
	if err != nil {
		return fmt.Errorf("write spec %s: %w", s.ID, err)
	}
	return writeBundleFile(s, b)
}

// writeBundleFile writes s's config.json. No fsync: the bundle lives only as
// long as its sandbox, which a host crash ends (the daemon then sweeps the
// sandbox's directory), so durability would buy nothing on the create path.
func writeBundleFile(s *Spec, b []byte) error {
	if err := os.WriteFile(filepath.Join(s.BundleDir, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("write spec %s: %w", s.ID, err)
	}
	return nil
}
