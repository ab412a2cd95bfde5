package server

import (
	"context"
	"io"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

type execService struct{ s *Server }

func (h *execService) Exec(ctx context.Context, req *connect.Request[pb.ExecRequest], stream *connect.ServerStream[pb.ExecEvent]) error {
	r := req.Msg
	as, execID, err := h.s.Sandboxes.Exec(ctx, r.SandboxId, sandbox.ExecRequest{
		ExecID: r.ExecId, Argv: r.Argv, Workdir: r.Workdir, Env: r.Env, Secrets: r.Secrets, Stdin: r.Stdin,
		TimeoutMs: r.TimeoutMs, Stdout: agentv1.OutputMode(r.Stdout), Stderr: agentv1.OutputMode(r.Stderr),
		StdoutOffset: r.StdoutOffset, StderrOffset: r.StderrOffset, AttachOnly: r.AttachOnly,
		TTY: r.Tty, Rows: r.Rows, Cols: r.Cols,
	})
	if err != nil {
		return toRPC(err)
	}
	defer as.Close()
	for {
		msg, err := as.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return toRPC(h.s.Sandboxes.ExplainAgentError(ctx, r.SandboxId, err))
		}
		var ev *pb.ExecEvent
		switch e := msg.Event.(type) {
		case *agentv1.ExecEvent_Started:
			ev = &pb.ExecEvent{Event: &pb.ExecEvent_Started{Started: &pb.Started{
				ExecId: execID, Pid: e.Started.Pid, Created: e.Started.Created}}}
		case *agentv1.ExecEvent_Stdout:
			ev = &pb.ExecEvent{Event: &pb.ExecEvent_Stdout{Stdout: &pb.Output{Offset: e.Stdout.Offset, Data: e.Stdout.Data}}}
		case *agentv1.ExecEvent_Stderr:
			ev = &pb.ExecEvent{Event: &pb.ExecEvent_Stderr{Stderr: &pb.Output{Offset: e.Stderr.Offset, Data: e.Stderr.Data}}}
		case *agentv1.ExecEvent_Exited:
			ev = &pb.ExecEvent{Event: &pb.ExecEvent_Exited{Exited: &pb.Exited{
				ExitCode: e.Exited.ExitCode, TimedOut: e.Exited.TimedOut, Signal: e.Exited.Signal}}}
		default:
			continue
		}
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
}

func (h *execService) WriteStdin(ctx context.Context, req *connect.Request[pb.WriteStdinRequest]) (*connect.Response[pb.WriteStdinResponse], error) {
	r := req.Msg
	next, err := h.s.Sandboxes.WriteStdin(ctx, r.SandboxId, r.ExecId, r.Offset, r.Data, r.Close)
	if err != nil {
		return nil, toRPC(h.s.Sandboxes.ExplainAgentError(ctx, r.SandboxId, err))
	}
	return connect.NewResponse(&pb.WriteStdinResponse{NextOffset: next}), nil
}

func (h *execService) SignalExec(ctx context.Context, req *connect.Request[pb.SignalExecRequest]) (*connect.Response[pb.SignalExecResponse], error) {
	r := req.Msg
	if err := h.s.Sandboxes.Signal(ctx, r.SandboxId, r.ExecId, r.Signal); err != nil {
		return nil, toRPC(h.s.Sandboxes.ExplainAgentError(ctx, r.SandboxId, err))
	}
	return connect.NewResponse(&pb.SignalExecResponse{}), nil
}
