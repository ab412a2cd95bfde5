package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// SandboxPid returns the host pid of the sandbox process of container id, as
// runsc recorded it in its state file. It starts no process (State runs
// `runsc state`, which costs a whole runsc start). Errors: ErrNotFound for an
// unknown id.
func (r *Runtime) SandboxPid(id string) (int, error) {
	if err := r.mustExist(id); err != nil {
		return 0, fmt.Errorf("sandbox pid: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(r.cfg.RootDir, id+"_sandbox:"+id+".state"))
	if err != nil {
		return 0, fmt.Errorf("sandbox pid: %w", err)
	}
	var st struct {
		Sandbox struct {
			Pid int `json:"pid"`
		} `json:"sandbox"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, fmt.Errorf("sandbox pid: parse state file: %w", err)
	}
	if st.Sandbox.Pid <= 0 {
		return 0, fmt.Errorf("sandbox pid: none recorded for %s", id)
	}
	return st.Sandbox.Pid, nil
}
