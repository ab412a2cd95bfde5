package agent

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Exec starts or attaches to an exec, then streams its output from the
// requested offsets and finally its exit.
func (s *service) Exec(ctx context.Context, req *connect.Request[agentv1.ExecRequest], stream *connect.ServerStream[agentv1.ExecEvent]) error {
	m := req.Msg
	if m.StdoutOffset < 0 || m.StderrOffset < 0 {
		return toConnect(errdefs.Invalid("offsets must not be negative"))
	}
	e, created, err := s.a.startOrAttach(ctx, m)
	if err != nil {
		return toConnect(err)
	}
	started := &agentv1.Started{Pid: int32(e.pid), Created: created}
	if err := stream.Send(&agentv1.ExecEvent{Event: &agentv1.ExecEvent_Started{Started: started}}); err != nil {
		return err
	}
	return toConnect(e.follow(ctx, [2]int64{m.StdoutOffset, m.StderrOffset}, stream.Send))
}
