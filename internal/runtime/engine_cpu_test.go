package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEngineCPULimitAfterBoot checks that after Run the container's cpu
// cgroup holds its limit, set by the createRuntime hook when the sandbox
// booted without it (cpuboot.go). newEngine's cleanup checks that Cleanup
// removes that cgroup, which runsc does not own.
func TestEngineCPULimitAfterBoot(t *testing.T) {
	e := newEngine(t)
	s := e.spec(t, "/bin/sleep", "1000")
	s.Resources = Resources{CPUs: 0.5, MemoryBytes: 256 << 20, Pids: 64}
	if err := e.rt.Run(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, dir := range e.rt.cgroupDirs(e.rt.CgroupsPath(s.ID)) {
		q, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
		if err != nil {
			continue
		}
		p, _ := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
		found = true
		if got := strings.TrimSpace(string(q)) + "/" + strings.TrimSpace(string(p)); got != "50000/100000" {
			t.Errorf("got quota/period %s in %s, want 50000/100000", got, dir)
		}
	}
	if !found {
		t.Skip("no cgroup v1 cpu controller here")
	}
	st, err := e.rt.State(t.Context(), s.ID)
	if err != nil || st.Status != StatusRunning {
		t.Errorf("got state %+v, %v; want running", st, err)
	}
}
