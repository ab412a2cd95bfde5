package runtime

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fakeCPUHierarchy makes the root of a cgroup v1 cpu hierarchy under the
// runtime's CgroupRoot.
func fakeCPUHierarchy(t *testing.T, r *Runtime) {
	t.Helper()
	hier := filepath.Join(r.cfg.CgroupRoot, "cpu")
	if err := os.MkdirAll(hier, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(hier, "cpu.cfs_quota_us"), []byte("-1\n"), 0o644)
}

// readSpec reads the config.json Run wrote for s.
func readSpec(t *testing.T, s Spec) specs.Spec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.BundleDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got specs.Spec
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

// manyCPUs is a limit whose CPU count is the host's: the route applies.
func manyCPUs() float64 { return float64(max(2, goruntime.NumCPU())) }

func TestCPUAfterBootRoute(t *testing.T) {
	type testCase struct {
		name      string
		cpus      float64
		hierarchy bool
		want      bool
	}
	tests := []testCase{
		{"cpu limit, v1 hierarchy", manyCPUs(), true, true},
		{"no cpu limit", 0, true, false},
		{"no cpu hierarchy (v2)", manyCPUs(), false, false},
	}
	if goruntime.NumCPU() > 2 {
		tests = append(tests, testCase{"fewer cpus than the host: the sandbox would see more", 1, true, false})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newFake(t)
			if tc.hierarchy {
				fakeCPUHierarchy(t, r)
			}
			s := tempSpec(t, "sb-1")
			s.Resources.CPUs = tc.cpus
			dir, got := r.cpuAfterBoot(&s)
			if got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if want := filepath.Join(r.cfg.CgroupRoot, "cpu", "sandboxd", "sb-1"); got && dir != want {
				t.Errorf("got dir %s, want %s", dir, want)
			}
		})
	}
}

func TestRunPreparesCPUHook(t *testing.T) {
	r, f := newFake(t)
	fakeCPUHierarchy(t, r)
	s := tempSpec(t, "sb-1")
	s.Resources = Resources{CPUs: manyCPUs(), MemoryBytes: 64 << 20, Pids: 100}
	cpuDir := filepath.Join(r.cfg.CgroupRoot, "cpu", "sandboxd", "sb-1")
	// The fake runsc does not run hooks: play the hook's part beforehand.
	os.MkdirAll(cpuDir, 0o755)
	quota := int64(math.Round(s.Resources.CPUs * cfsPeriod))
	os.WriteFile(filepath.Join(cpuDir, "cpu.cfs_quota_us"), []byte(strconv.FormatInt(quota, 10)+"\n"), 0o644)
	if err := r.Run(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 1 {
		t.Fatalf("got %d runsc calls, want 1", len(f.calls))
	}
	got := readSpec(t, s)
	// Everything else as writeSpec writes it: limits included.
	want := s.toOCI(r.CgroupsPath(s.ID))
	hooks := got.Hooks
	got.Hooks = nil
	gb, _ := json.Marshal(&got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("got spec\n%s\nwant (hooks aside)\n%s", gb, wb)
	}
	if hooks == nil || len(hooks.CreateRuntime) != 1 {
		t.Fatalf("got hooks %+v, want one createRuntime hook", hooks)
	}
	h := hooks.CreateRuntime[0]
	wantArgs := []string{"sh", "-c", hookScript, "sh", "100000", filepath.Join(cpuDir, "cpu.cfs_period_us"),
		strconv.FormatInt(quota, 10), filepath.Join(cpuDir, "cpu.cfs_quota_us")}
	if h.Path != hookShell || strings.Join(h.Args, "|") != strings.Join(wantArgs, "|") {
		t.Errorf("got hook %s %q, want %s %q", h.Path, h.Args, hookShell, wantArgs)
	}
}

func TestRunFailsWhenHookDidNotSetQuota(t *testing.T) {
	r, _ := newFake(t)
	fakeCPUHierarchy(t, r)
	s := tempSpec(t, "sb-1")
	s.Resources.CPUs = manyCPUs()
	// Run makes the cpu cgroup; the fake runsc runs no hook, so no quota.
	err := r.Run(t.Context(), s)
	if err == nil || !strings.Contains(err.Error(), "check cpu limit") {
		t.Errorf("got %v, want a cpu limit check error", err)
	}
}

func TestRunWithoutCPULimitHasNoHook(t *testing.T) {
	r, _ := newFake(t)
	fakeCPUHierarchy(t, r)
	s := tempSpec(t, "sb-1")
	s.Resources.MemoryBytes = 64 << 20
	if err := r.Run(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if got := readSpec(t, s); got.Hooks != nil {
		t.Errorf("got hooks %+v, want none", got.Hooks)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.CgroupRoot, "cpu", "sandboxd")); err == nil {
		t.Errorf("got a cpu cgroup made without a cpu limit")
	}
}

// TestCPUHookScript runs the hook's command line against plain files.
func TestCPUHookScript(t *testing.T) {
	if _, err := os.Stat(hookShell); err != nil {
		t.Skipf("no %s", hookShell)
	}
	dir := t.TempDir()
	oci := (&Spec{ID: "sb-1", Resources: Resources{CPUs: 0.5}}).toOCI("/sandboxd/sb-1")
	addCPULimitHook(oci, dir)
	h := oci.Hooks.CreateRuntime[0]
	if out, err := exec.Command(h.Path, h.Args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("hook: %v: %s", err, out)
	}
	for file, want := range map[string]string{"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "50000\n"} {
		if b, _ := os.ReadFile(filepath.Join(dir, file)); string(b) != want {
			t.Errorf("got %s = %q, want %q", file, b, want)
		}
	}
}
