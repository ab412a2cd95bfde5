package main

import (
	"context"
	"errors"
	"io"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agentclient"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// The raw read of large files (sandbox.RawFileAgent).
var _ sandbox.RawFileAgent = agentConn{}

func (a agentConn) ReadRaw(ctx context.Context, req *agentv1.ReadFileRequest) (*agentv1.FileInfo, io.ReadCloser, error) {
	return a.c.ReadRaw(ctx, req)
}

func (agentConn) NoRawRead(err error) bool { return errors.Is(err, agentclient.ErrNoRawRead) }
