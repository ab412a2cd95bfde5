package agent

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// WriteStdin writes to an exec's stdin at an offset (idempotently).
func (s *service) WriteStdin(ctx context.Context, req *connect.Request[agentv1.WriteStdinRequest]) (*connect.Response[agentv1.WriteStdinResponse], error) {
	e, err := s.a.lookup(req.Msg.ExecId)
	if err != nil {
		return nil, toConnect(err)
	}
	if e.stdin == nil {
		return nil, toConnect(errdefs.FailedPrecondition("exec %q was started without stdin", e.id))
	}
	next, err := e.stdin.write(ctx, req.Msg.Offset, req.Msg.Data, req.Msg.Close)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&agentv1.WriteStdinResponse{NextOffset: next}), nil
}
