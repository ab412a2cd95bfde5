package agent

import (
	"context"
	"syscall"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Signal signals an exec's process group.
func (s *service) Signal(ctx context.Context, req *connect.Request[agentv1.SignalRequest]) (*connect.Response[agentv1.SignalResponse], error) {
	sig := req.Msg.Signal
	if sig <= 0 || sig > 64 {
		return nil, toConnect(errdefs.Invalid("signal %d is out of range 1-64", sig))
	}
	e, err := s.a.lookup(req.Msg.ExecId)
	if err != nil {
		return nil, toConnect(err)
	}
	if err := e.signal(syscall.Signal(sig)); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&agentv1.SignalResponse{}), nil
}

// Info reports the agent's state.
func (s *service) Info(ctx context.Context, req *connect.Request[agentv1.InfoRequest]) (*connect.Response[agentv1.InfoResponse], error) {
	return connect.NewResponse(s.a.info()), nil
}

// ListExecs lists the execs the agent remembers.
func (s *service) ListExecs(ctx context.Context, req *connect.Request[agentv1.ListExecsRequest]) (*connect.Response[agentv1.ListExecsResponse], error) {
	return connect.NewResponse(&agentv1.ListExecsResponse{Execs: s.a.list()}), nil
}

// Configure completes an agent started idle (Agent.Configure).
func (s *service) Configure(ctx context.Context, req *connect.Request[agentv1.ConfigureRequest]) (*connect.Response[agentv1.ConfigureResponse], error) {
	if err := s.a.Configure(req.Msg.Env, req.Msg.Workdir, req.Msg.Entrypoint); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&agentv1.ConfigureResponse{}), nil
}
