package agentclient

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// Configure completes an agent started idle (a sandbox of a warm pool): the
// base environment and default workdir of every exec, and the entrypoint to
// start now, if any. An agent not started idle, or configured already,
// answers class errdefs.ErrFailedPrecondition.
func (c *Client) Configure(ctx context.Context, env []string, workdir string, entrypoint []string) error {
	_, err := c.client().Configure(ctx, connect.NewRequest(&agentv1.ConfigureRequest{Env: env, Workdir: workdir, Entrypoint: entrypoint}))
	return fromConnect(err, "configure the agent")
}
