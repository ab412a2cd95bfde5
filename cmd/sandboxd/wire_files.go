package main

import (
	"context"

	"github.com/sandboxd/sandboxd/api/gen/agent/v1/agentv1connect"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The optional abilities of agentConn: the file API and terminal resizes.
var (
	_ sandbox.FileAgent = agentConn{}
	_ sandbox.TTYAgent  = agentConn{}
)

func (a agentConn) Files() agentv1connect.FilesystemServiceClient { return a.c.Files() }

func (a agentConn) Resize(ctx context.Context, id string, rows, cols uint32) error {
	return a.c.Resize(ctx, id, rows, cols)
}
