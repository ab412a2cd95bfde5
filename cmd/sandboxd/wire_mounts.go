package main

import (
	"context"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// agentConn mounts staged images (live mounts).
var _ sandbox.MountAgent = agentConn{}

func (a agentConn) MountImage(ctx context.Context, stage, path string) error {
	return a.c.MountImage(ctx, stage, path)
}

func (a agentConn) UnmountImage(ctx context.Context, stage, path string) error {
	return a.c.UnmountImage(ctx, stage, path)
}
