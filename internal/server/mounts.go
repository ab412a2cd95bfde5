package server

import (
	"context"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Images mounted into running sandboxes (api/sandboxd/v1/mounts.proto).

func (h *sandboxService) MountImage(ctx context.Context, req *connect.Request[pb.MountImageRequest]) (*connect.Response[pb.MountImageResponse], error) {
	r := req.Msg
	if r.SandboxId == "" {
		return nil, toRPC(errdefs.Invalid("no sandbox id"))
	}
	lm, err := h.s.Sandboxes.MountImage(ctx, r.SandboxId, r.Image, r.Path)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.MountImageResponse{Mount: liveMountToPB(lm)}), nil
}

func (h *sandboxService) UnmountImage(ctx context.Context, req *connect.Request[pb.UnmountImageRequest]) (*connect.Response[pb.UnmountImageResponse], error) {
	if req.Msg.SandboxId == "" {
		return nil, toRPC(errdefs.Invalid("no sandbox id"))
	}
	if err := h.s.Sandboxes.UnmountImage(ctx, req.Msg.SandboxId, req.Msg.Path); err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.UnmountImageResponse{}), nil
}

func (h *sandboxService) ListMounts(ctx context.Context, req *connect.Request[pb.ListMountsRequest]) (*connect.Response[pb.ListMountsResponse], error) {
	if req.Msg.SandboxId == "" {
		return nil, toRPC(errdefs.Invalid("no sandbox id"))
	}
	lms, err := h.s.Sandboxes.LiveMounts(ctx, req.Msg.SandboxId)
	if err != nil {
		return nil, toRPC(err)
	}
	out := &pb.ListMountsResponse{}
	for _, lm := range lms {
		out.Mounts = append(out.Mounts, liveMountToPB(lm))
	}
	return connect.NewResponse(out), nil
}

func liveMountToPB(lm sandbox.LiveMount) *pb.LiveMount {
	return &pb.LiveMount{Path: lm.Path, Image: lm.Image, ImageId: lm.ImageID, MountedAt: ts(lm.At)}
}
