package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A container's CPU limit is a CFS quota per period on its cgroup, which runsc
// joins before it starts the gofer and the sandbox process. Booting a sandbox
// is a burst of CPU on every core (runsc, the gofer and the sentry each start
// the 100 MB runsc binary; the sentry compiles its seccomp filters): under a
// 1-CPU quota it is throttled, and `runsc run` took about 80-90 ms longer
// here (2 cores, medians of 15-20 interleaved runs of our configuration:
// 357-365 ms with the quota set by runsc, 271-282 ms booting without it).
//
// So Run lets the boot run unthrottled and puts the limit in place before
// the init starts: it creates the container's cpu cgroup itself, without a
// quota (runsc then leaves that controller alone: it sets limits only in
// cgroups it created), and adds an OCI createRuntime hook that writes the
// period and quota. runsc runs that hook at the end of creating the
// container, after the sandbox has booted and before it starts the init, and
// fails the run if the hook fails; Run checks the quota afterwards. Nothing
// of the container's own code runs without the limit.
//
// Why not a longer CFS period for the boot, set back to 100 ms afterwards?
// The kernel keeps the period timer armed with the old period: for up to a
// second after the change the group had one 100 ms quota, and the first
// exec stalled for about 0.7 s (measured). A cgroup that never had a quota
// gets a fresh timer.
//
// The quota is also what runsc derives the sandbox's CPU count from
// (max(2, ceil(quota/period)), at most the host's). Run takes this route only
// when that count is the host's anyway (any limit on a 2-core host), so
// the sandbox sees the same CPUs; elsewhere the limit is set at boot, as
// before. (What differs: gVisor's own cgroupfs, which only a process with
// CAP_SYS_ADMIN can mount inside, shows no quota.) It needs cgroup v1 (on v2 a pre-made cgroup would keep runsc from
// setting the memory and pids limits too). Restore keeps the limit from the
// start: a restored sandbox runs the user's processes at once.
//
// The pre-made cgroup is not runsc's: runsc delete leaves it, so Delete
// removes it (and Cleanup, with the others).

// hookShell runs the createRuntime hook.
const hookShell = "/bin/sh"

// hookScript writes $1 to the file $2, then $3 to the file $4.
const hookScript = `echo "$1" > "$2" && echo "$3" > "$4"`

// cpuAfterBoot returns the cpu cgroup directory that Run makes for s, and
// whether s takes that route (see above).
func (r *Runtime) cpuAfterBoot(s *Spec) (string, bool) {
	if s.Resources.CPUs <= 0 {
		return "", false
	}
	if max(2, int(math.Ceil(s.Resources.CPUs))) < goruntime.NumCPU() {
		return "", false
	}
	hier := filepath.Join(r.cfg.CgroupRoot, "cpu")
	if _, err := os.Stat(filepath.Join(hier, "cpu.cfs_quota_us")); err != nil {
		return "", false
	}
	return filepath.Join(hier, strings.TrimPrefix(r.CgroupsPath(s.ID), "/")), true
}

// writeSpecCPUHook writes s's config.json as writeSpec does, plus the hook
// that sets the CPU limit in cpuDir.
func writeSpecCPUHook(s *Spec, cgroupsPath, cpuDir string) error {
	oci := s.toOCI(cgroupsPath)
	addCPULimitHook(oci, cpuDir)
	b, err := json.MarshalIndent(oci, "", "  ")
	if err != nil {
		return fmt.Errorf("write spec %s: %w", s.ID, err)
	}
	return writeBundleFile(s, b)
}

// addCPULimitHook adds a createRuntime hook to oci that writes its CPU
// period, then its quota, into cpuDir (a cgroup v1 cpu directory). A spec
// without a CPU quota is left alone.
func addCPULimitHook(oci *specs.Spec, cpuDir string) {
	quota, period, ok := cpuLimit(oci)
	if !ok {
		return
	}
	if oci.Hooks == nil {
		oci.Hooks = &specs.Hooks{}
	}
	timeout := 10
	oci.Hooks.CreateRuntime = append(oci.Hooks.CreateRuntime, specs.Hook{
		Path: hookShell,
		Args: []string{"sh", "-c", hookScript, "sh",
			strconv.FormatUint(period, 10), filepath.Join(cpuDir, "cpu.cfs_period_us"),
			strconv.FormatInt(quota, 10), filepath.Join(cpuDir, "cpu.cfs_quota_us")},
		Timeout: &timeout,
	})
}

func cpuLimit(oci *specs.Spec) (quota int64, period uint64, ok bool) {
	if oci.Linux == nil || oci.Linux.Resources == nil || oci.Linux.Resources.CPU == nil {
		return 0, 0, false
	}
	c := oci.Linux.Resources.CPU
	if c.Quota == nil || *c.Quota <= 0 || c.Period == nil || *c.Period == 0 {
		return 0, 0, false
	}
	return *c.Quota, *c.Period, true
}

// checkCPULimit returns an error unless cpuDir holds s's CPU quota.
func checkCPULimit(s *Spec, cpuDir string) error {
	quota, _, ok := cpuLimit(&specs.Spec{Linux: &specs.Linux{Resources: resources(s.Resources)}})
	if !ok {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(cpuDir, "cpu.cfs_quota_us"))
	if err != nil {
		return fmt.Errorf("check cpu limit of %s: %w", s.ID, err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.FormatInt(quota, 10) {
		return fmt.Errorf("check cpu limit of %s: got quota %s, want %d", s.ID, got, quota)
	}
	return nil
}

// removeCPUCgroup removes the cpu cgroup Run may have made for container id
// (see above), once runsc has deleted the container. A failure is logged:
// Cleanup removes what is left.
func (r *Runtime) removeCPUCgroup(id string) {
	dir := filepath.Join(r.cfg.CgroupRoot, "cpu", strings.TrimPrefix(r.CgroupsPath(id), "/"))
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Warn("remove cpu cgroup", "container_id", id, "err", err)
	}
}
