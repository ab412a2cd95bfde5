package agentclient

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/api/gen/agent/v1/agentv1connect"
)

// Files returns a client of the agent's FilesystemService at the current
// address, with the token. Its errors are raw Connect errors (with the
// agent's FileError details), not wrapped: the caller forwards them. A
// client made before a Reconnect keeps the old address; make one per call.
func (c *Client) Files() agentv1connect.FilesystemServiceClient {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return agentv1connect.NewFilesystemServiceClient(
		&http.Client{Transport: c.tr},
		"http://"+c.addr,
		connect.WithInterceptors(bearer(c.token)),
		connect.WithAcceptCompression("gzip", nil, nil),
	)
}

// Resize changes the terminal size of a tty exec. It fails with class
// errdefs.ErrFailedPrecondition when the exec has no terminal or has exited.
func (c *Client) Resize(ctx context.Context, id string, rows, cols uint32) error {
	_, err := c.client().Resize(ctx, connect.NewRequest(&agentv1.ResizeRequest{ExecId: id, Rows: rows, Cols: cols}))
	if err != nil {
		return fromConnect(err, "resize exec "+id)
	}
	return nil
}
