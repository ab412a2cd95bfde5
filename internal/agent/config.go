package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

const (
	// DefaultPort is the TCP port the agent listens on inside the sandbox.
	DefaultPort = 7424
	// DefaultListen is the listen address used when Config.Listen is empty.
	DefaultListen = "0.0.0.0:7424"
	// DefaultOutputLimit is the per-stream output buffer limit used when
	// Config.OutputLimit is zero.
	DefaultOutputLimit = 4 << 20
	// DefaultWorkdir is the working directory used when Config.Workdir is empty.
	DefaultWorkdir = "/"
	// EntrypointExecID is the exec id of the sandbox's entrypoint, started at
	// boot when Config.Entrypoint is set.
	EntrypointExecID = "entrypoint"
	// DefaultPath is the PATH used to find argv[0] when the environment has none.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Config is the agent's configuration. The daemon writes it as JSON to a file
// and starts the agent as `sandbox-agent init --config PATH`.
//
// Example:
//
//	{
//	  "sandbox_id": "sb-0123",
//	  "token": "secret",
//	  "listen": "0.0.0.0:7424",
//	  "env": ["PATH=/usr/bin:/bin", "HOME=/root"],
//	  "workdir": "/root",
//	  "entrypoint": ["/usr/bin/python3", "-m", "http.server"],
//	  "output_limit": 4194304
//	}
type Config struct {
	// SandboxID is reported by Info; it is used in log lines.
	SandboxID string `json:"sandbox_id"`
	// Token is the bearer token every request must carry. Required.
	Token string `json:"token"`
	// Listen is the TCP address to serve on; empty means DefaultListen.
	Listen string `json:"listen,omitempty"`
	// Env is the base environment ("K=V") of every exec. The agent's own
	// environment is never passed on.
	Env []string `json:"env,omitempty"`
	// Workdir is the absolute default working directory; empty means "/".
	Workdir string `json:"workdir,omitempty"`
	// Entrypoint, if set, is started at boot as exec EntrypointExecID with
	// stdin open and output piped.
	Entrypoint []string `json:"entrypoint,omitempty"`
	// OutputLimit is the most bytes retained per output stream of an exec;
	// zero means DefaultOutputLimit.
	OutputLimit int64 `json:"output_limit,omitempty"`
	// Idle starts the agent for a sandbox of a warm pool: it serves, but the
	// sandbox's own settings (Env, Workdir, Entrypoint) come later, once, by
	// Configure. An idle config has no entrypoint.
	Idle bool `json:"idle,omitempty"`
}

// LoadConfig reads a Config from a JSON file, fills defaults and validates it.
func LoadConfig(file string) (Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, errdefs.Invalid("parse config %s: %v", file, err)
	}
	if err := c.normalize(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// normalize fills defaults and validates c.
func (c *Config) normalize() error {
	if c.Token == "" {
		return errdefs.Invalid("config: token is required")
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Workdir == "" {
		c.Workdir = DefaultWorkdir
	}
	if !path.IsAbs(c.Workdir) {
		return errdefs.Invalid("config: workdir %q is not absolute", c.Workdir)
	}
	if c.OutputLimit == 0 {
		c.OutputLimit = DefaultOutputLimit
	}
	if c.OutputLimit < 0 {
		return errdefs.Invalid("config: output_limit %d is negative", c.OutputLimit)
	}
	if c.Idle && len(c.Entrypoint) > 0 {
		return errdefs.Invalid("config: an idle agent has no entrypoint")
	}
	return checkEnv(c.Env)
}

// checkEnv checks that every entry of env is K=V.
func checkEnv(env []string) error {
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			// Never echo the value: it may be a secret.
			return errdefs.Invalid("config: env entry with key %q is not K=V", k)
		}
	}
	return nil
}
