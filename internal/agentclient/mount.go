package agentclient

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// MountImage asks the agent to mount the image staged as stage on path (a
// copy-on-write view; see api/agent/v1). Idempotent for the same stage and
// path. A sandbox whose agent cannot mount answers class
// errdefs.ErrFailedPrecondition.
func (c *Client) MountImage(ctx context.Context, stage, path string) error {
	_, err := c.client().MountImage(ctx, connect.NewRequest(&agentv1.MountImageRequest{Stage: stage, Path: path}))
	return fromConnect(err, "mount image on "+path)
}

// UnmountImage undoes MountImage. Idempotent.
func (c *Client) UnmountImage(ctx context.Context, stage, path string) error {
	_, err := c.client().UnmountImage(ctx, connect.NewRequest(&agentv1.UnmountImageRequest{Stage: stage, Path: path}))
	return fromConnect(err, "unmount image from "+path)
}
