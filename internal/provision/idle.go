package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/fsutil"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Idle sandboxes (sandbox.ProvisionRequest.Idle) are those of a warm pool:
// brought up like any other, their agent started with Config.Idle and no
// entrypoint. When one is taken, the manager hands its agent the sandbox's
// settings over the wire; ClaimIdle writes the same settings into the agent
// config file, which a memory snapshot saves and a restore starts from.

var _ sandbox.IdleClaimer = (*Provisioner)(nil)

// ClaimIdle records req's agent settings (Env, Workdir, Entrypoint) as those
// of the idle sandbox h.
func (p *Provisioner) ClaimIdle(ctx context.Context, h sandbox.Handle, req sandbox.ProvisionRequest) error {
	dir := p.sandboxDir(h.ID)
	b, err := os.ReadFile(agentConfigPath(dir))
	if err != nil {
		return fmt.Errorf("claim idle sandbox: %w", err)
	}
	var cfg agent.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("claim idle sandbox: agent config: %w", err)
	}
	if !cfg.Idle {
		return fmt.Errorf("claim idle sandbox: %s was not brought up idle", h.ID)
	}
	cfg.Idle = false
	cfg.Env, cfg.Workdir, cfg.Entrypoint = req.Env, req.Workdir, req.Entrypoint
	return writeAgentConfig(dir, cfg)
}

func agentConfigPath(sandboxDir string) string {
	return filepath.Join(sandboxDir, "agent", "agent.json")
}

// writeAgentConfig writes the agent config of the sandbox in dir. It holds
// env values (secrets among them): mode 0600. Not synced: the file lives
// only as long as the sandbox, which a host crash ends (Sweep then removes
// the sandbox's directory); it is replaced whole, so a reader (Checkpoint)
// never sees half of it (fsutil.ReplaceFile).
func writeAgentConfig(dir string, cfg agent.Config) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	if err := fsutil.ReplaceFile(agentConfigPath(dir), b, 0o600); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	return nil
}
