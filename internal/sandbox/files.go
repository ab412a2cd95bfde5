package sandbox

import (
	"context"

	"github.com/sandboxd/sandboxd/api/gen/agent/v1/agentv1connect"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// FileAgent is the optional ability of an AgentConn to serve the agent's
// file API (api/agent/v1/files.proto).
type FileAgent interface {
	// Files returns a client of the agent's FilesystemService. Its errors
	// are the agent's Connect errors, unwrapped.
	Files() agentv1connect.FilesystemServiceClient
}

// Files returns a client of the file API of a running sandbox's agent. The
// client is good for the calls of one request: make a new one per request
// (the agent's address changes after a restore). Paths resolve inside the
// sandbox's root; the agent validates them.
func (m *Manager) Files(ctx context.Context, sandboxID string) (agentv1connect.FilesystemServiceClient, error) {
	l, err := m.running(ctx, sandboxID)
	if err != nil {
		return nil, err
	}
	fa, ok := l.agent.(FileAgent)
	if !ok {
		return nil, errdefs.FailedPrecondition("sandbox %s: its agent connection has no file API", sandboxID)
	}
	return fa.Files(), nil
}
