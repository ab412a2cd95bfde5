package server

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/api/gen/sandboxd/v1/sandboxdv1connect"
)

// fileService serves FileService by forwarding each call to the agent of
// the sandbox it names. The agent validates paths and reports filesystem
// errors; large reads and writes stream through without being buffered,
// small ones go in one message each way (files_small.go).
type fileService struct{ s *Server }

var _ sandboxdv1connect.FileServiceHandler = (*fileService)(nil)

func (h *fileService) Stat(ctx context.Context, req *connect.Request[pb.StatRequest]) (*connect.Response[pb.StatResponse], error) {
	fc, err := h.s.Sandboxes.Files(ctx, req.Msg.SandboxId)
	if err != nil {
		return nil, toRPC(err)
	}
	resp, err := fc.Stat(ctx, connect.NewRequest(convert(&agentv1.StatRequest{}, req.Msg)))
	if err != nil {
		return nil, h.fileErr(ctx, req.Msg.SandboxId, err)
	}
	return connect.NewResponse(convert(&pb.StatResponse{}, resp.Msg)), nil
}

func (h *fileService) ListDir(ctx context.Context, req *connect.Request[pb.ListDirRequest]) (*connect.Response[pb.ListDirResponse], error) {
	fc, err := h.s.Sandboxes.Files(ctx, req.Msg.SandboxId)
	if err != nil {
		return nil, toRPC(err)
	}
	resp, err := fc.ListDir(ctx, connect.NewRequest(convert(&agentv1.ListDirRequest{}, req.Msg)))
	if err != nil {
		return nil, h.fileErr(ctx, req.Msg.SandboxId, err)
	}
	return connect.NewResponse(convert(&pb.ListDirResponse{}, resp.Msg)), nil
}

func (h *fileService) MakeDir(ctx context.Context, req *connect.Request[pb.MakeDirRequest]) (*connect.Response[pb.MakeDirResponse], error) {
	fc, err := h.s.Sandboxes.Files(ctx, req.Msg.SandboxId)
	if err != nil {
		return nil, toRPC(err)
	}
	if _, err := fc.MakeDir(ctx, connect.NewRequest(convert(&agentv1.MakeDirRequest{}, req.Msg))); err != nil {
		return nil, h.fileErr(ctx, req.Msg.SandboxId, err)
	}
	return connect.NewResponse(&pb.MakeDirResponse{}), nil
}

func (h *fileService) Remove(ctx context.Context, req *connect.Request[pb.RemoveRequest]) (*connect.Response[pb.RemoveResponse], error) {
	fc, err := h.s.Sandboxes.Files(ctx, req.Msg.SandboxId)
	if err != nil {
		return nil, toRPC(err)
	}
	if _, err := fc.Remove(ctx, connect.NewRequest(convert(&agentv1.RemoveRequest{}, req.Msg))); err != nil {
		return nil, h.fileErr(ctx, req.Msg.SandboxId, err)
	}
	return connect.NewResponse(&pb.RemoveResponse{}), nil
}

func (h *fileService) Rename(ctx context.Context, req *connect.Request[pb.RenameRequest]) (*connect.Response[pb.RenameResponse], error) {
	fc, err := h.s.Sandboxes.Files(ctx, req.Msg.SandboxId)
	if err != nil {
		return nil, toRPC(err)
	}
	if _, err := fc.Rename(ctx, connect.NewRequest(convert(&agentv1.RenameRequest{}, req.Msg))); err != nil {
		return nil, h.fileErr(ctx, req.Msg.SandboxId, err)
	}
	return connect.NewResponse(&pb.RenameResponse{}), nil
}
