package server

import (
	"context"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// ResizeExec changes the terminal size of a tty exec.
func (h *execService) ResizeExec(ctx context.Context, req *connect.Request[pb.ResizeExecRequest]) (*connect.Response[pb.ResizeExecResponse], error) {
	r := req.Msg
	if err := h.s.Sandboxes.Resize(ctx, r.SandboxId, r.ExecId, r.Rows, r.Cols); err != nil {
		return nil, toRPC(h.s.Sandboxes.ExplainAgentError(ctx, r.SandboxId, err))
	}
	return connect.NewResponse(&pb.ResizeExecResponse{}), nil
}
