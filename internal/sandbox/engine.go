package sandbox

import (
	"context"
	"encoding/json"
	"syscall"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// ImageInfo is what the manager needs to know of an image.
type ImageInfo struct {
	ID      string
	Layers  []string
	Env     []string
	Workdir string
}

// Images resolves an image reference (a name or an id) to an image.
// An unknown reference is errdefs.ErrNotFound.
type Images interface {
	ResolveImage(ctx context.Context, ref string) (ImageInfo, error)
}

// Secrets gives the values of named secrets (later names win); an unknown
// name is errdefs.ErrNotFound.
type Secrets interface {
	Values(ctx context.Context, names []string) (map[string]string, error)
}

// ProvisionRequest is everything the engine needs to bring a sandbox up.
type ProvisionRequest struct {
	ID        string
	Image     ImageInfo
	Resources Resources
	// The agent's configuration: the environment (image env, spec env and
	// secret values), default workdir and entrypoint. It holds secret values.
	Env        []string
	Workdir    string
	Entrypoint []string
	// Mounts are images to mount (see ImageMount), in the order given.
	Mounts []MountRequest
	// Staged are images to stage before the engine starts, as ImageStager
	// does for a running sandbox: the live mounts of a restored snapshot.
	Staged []StagedImage
	// Idle brings the sandbox up for a warm pool (pool.go): its agent waits
	// for its settings (Configurer) and there is no entrypoint.
	Idle bool
}

// Handle is what the engine needs to find a sandbox again and take it down.
// It is stored with the sandbox's record (it holds no secret values; the agent
// token it holds gives no more than access to that one sandbox).
type Handle struct {
	ID         string `json:"id"`
	AgentAddr  string `json:"agent_addr"`
	AgentToken string `json:"agent_token"`
	// The host process that holds the sandbox, and its start time in clock
	// ticks since boot (field 22 of /proc/PID/stat), to tell it from a reused pid.
	Pid      int             `json:"pid"`
	PidStart uint64          `json:"pid_start"`
	Engine   json.RawMessage `json:"engine,omitempty"`
}

// Provisioner brings the machinery of one sandbox (root filesystem, network,
// engine container, agent) up and down.
type Provisioner interface {
	// Provision brings a sandbox up, with its agent started. On error nothing
	// of it is left behind.
	Provision(ctx context.Context, req ProvisionRequest) (Handle, error)
	// Adopt takes back a sandbox found in the metadata after a daemon restart:
	// it re-reserves what the sandbox holds and reports whether it still runs.
	Adopt(ctx context.Context, h Handle) (alive bool, err error)
	// Destroy takes a sandbox down and removes all it held. Idempotent.
	Destroy(ctx context.Context, h Handle) error
	// Sweep removes everything of sandboxes the engine holds that is not in
	// keep (leftovers of a crash).
	Sweep(ctx context.Context, keep []Handle) error
}

// ExecStream is a stream of events of one exec. Recv returns io.EOF after
// the Exited event; any other error means the stream broke (the exec goes on).
type ExecStream interface {
	Recv() (*agentv1.ExecEvent, error)
	Close() error
}

// AgentConn is a connection to the agent inside one sandbox. Safe for
// concurrent use.
type AgentConn interface {
	WaitReady(ctx context.Context) error
	Exec(ctx context.Context, req *agentv1.ExecRequest) (ExecStream, error)
	// WriteStdin writes data at offset and returns the next offset.
	WriteStdin(ctx context.Context, execID string, offset int64, data []byte, close bool) (int64, error)
	Signal(ctx context.Context, execID string, sig syscall.Signal) error
	Close()
}

// AgentDialer makes AgentConns.
type AgentDialer interface {
	Dial(addr, token string) (AgentConn, error)
}
