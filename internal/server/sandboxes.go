package server

import (
	"context"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

type sandboxService struct{ s *Server }

func (h *sandboxService) CreateSandbox(ctx context.Context, req *connect.Request[pb.CreateSandboxRequest]) (*connect.Response[pb.CreateSandboxResponse], error) {
	r := req.Msg
	spec := sandbox.Spec{
		App: r.App, Name: r.Name, Image: r.Image, Entrypoint: r.Entrypoint, Env: r.Env, Secrets: r.Secrets,
		Workdir: r.Workdir, Timeout: time.Duration(r.TimeoutMs) * time.Millisecond, Tags: r.Tags,
	}
	if r.TimeoutMs < 0 {
		return nil, toRPC(errdefs.Invalid("negative timeout"))
	}
	if res := r.Resources; res != nil {
		spec.Resources = sandbox.Resources{CPU: res.Cpu, MemoryMiB: res.MemoryMib, Pids: res.Pids}
	}
	spec.Mounts = mountsFromPB(r.Mounts)
	sb, err := h.s.Sandboxes.Create(ctx, spec)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.CreateSandboxResponse{Sandbox: sandboxToPB(sb)}), nil
}

func (h *sandboxService) GetSandbox(ctx context.Context, req *connect.Request[pb.GetSandboxRequest]) (*connect.Response[pb.GetSandboxResponse], error) {
	r := req.Msg
	var sb *sandbox.Sandbox
	var err error
	switch {
	case r.Id != "":
		sb, err = h.s.Sandboxes.Get(ctx, r.Id)
	case r.Name != "":
		sb, err = h.s.Sandboxes.GetByName(ctx, r.App, r.Name)
	default:
		err = errdefs.Invalid("give a sandbox id, or an app and a name")
	}
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.GetSandboxResponse{Sandbox: sandboxToPB(sb)}), nil
}

func (h *sandboxService) ListSandboxes(ctx context.Context, req *connect.Request[pb.ListSandboxesRequest]) (*connect.Response[pb.ListSandboxesResponse], error) {
	sbs, err := h.s.Sandboxes.List(ctx, req.Msg.App, req.Msg.Tags, req.Msg.All)
	if err != nil {
		return nil, toRPC(err)
	}
	out := &pb.ListSandboxesResponse{}
	for _, sb := range sbs {
		out.Sandboxes = append(out.Sandboxes, sandboxToPB(sb))
	}
	return connect.NewResponse(out), nil
}

func (h *sandboxService) SetTags(ctx context.Context, req *connect.Request[pb.SetTagsRequest]) (*connect.Response[pb.SetTagsResponse], error) {
	sb, err := h.s.Sandboxes.SetTags(ctx, req.Msg.Id, req.Msg.Tags)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.SetTagsResponse{Sandbox: sandboxToPB(sb)}), nil
}

func (h *sandboxService) TerminateSandbox(ctx context.Context, req *connect.Request[pb.TerminateSandboxRequest]) (*connect.Response[pb.TerminateSandboxResponse], error) {
	sb, err := h.s.Sandboxes.Terminate(ctx, req.Msg.Id)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.TerminateSandboxResponse{Sandbox: sandboxToPB(sb)}), nil
}

func (h *sandboxService) WaitSandbox(ctx context.Context, req *connect.Request[pb.WaitSandboxRequest]) (*connect.Response[pb.WaitSandboxResponse], error) {
	timeout := time.Duration(req.Msg.TimeoutMs) * time.Millisecond
	if req.Msg.TimeoutMs < 0 {
		timeout = -1
	}
	sb, done, err := h.s.Sandboxes.Wait(ctx, req.Msg.Id, timeout)
	if err != nil {
		return nil, toRPC(err)
	}
	out := &pb.WaitSandboxResponse{Finished: done, Sandbox: sandboxToPB(sb)}
	if done {
		out.ExitCode = int32(sb.ExitCode)
	}
	return connect.NewResponse(out), nil
}

func (h *sandboxService) SandboxLogs(ctx context.Context, req *connect.Request[pb.SandboxLogsRequest], stream *connect.ServerStream[pb.SandboxLogsResponse]) error {
	r := req.Msg
	err := h.s.Sandboxes.Logs(ctx, r.Id, r.StdoutOffset, r.StderrOffset, r.Follow, func(c sandbox.LogChunk) error {
		out := &pb.Output{Offset: c.Offset, Data: c.Data}
		if c.Stderr {
			return stream.Send(&pb.SandboxLogsResponse{Stderr: out})
		}
		return stream.Send(&pb.SandboxLogsResponse{Stdout: out})
	})
	return toRPC(err)
}

func (h *sandboxService) WriteSandboxStdin(ctx context.Context, req *connect.Request[pb.WriteStdinRequest]) (*connect.Response[pb.WriteStdinResponse], error) {
	r := req.Msg
	next, err := h.s.Sandboxes.WriteStdin(ctx, r.SandboxId, "", r.Offset, r.Data, r.Close)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.WriteStdinResponse{NextOffset: next}), nil
}
