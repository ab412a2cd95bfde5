package server

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func (h *imageService) DeleteImage(ctx context.Context, req *connect.Request[pb.DeleteImageRequest]) (*connect.Response[pb.DeleteImageResponse], error) {
	if req.Msg.Ref == "" {
		return nil, toRPC(errdefs.Invalid("empty image reference"))
	}
	if err := h.s.Sandboxes.DeleteImage(ctx, req.Msg.Ref); err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.DeleteImageResponse{}), nil
}

func (h *imageService) CreateFilesystemSnapshot(ctx context.Context, req *connect.Request[pb.CreateFilesystemSnapshotRequest]) (*connect.Response[pb.CreateFilesystemSnapshotResponse], error) {
	o, err := snapshotOptions(req.Msg.Ttl)
	if err != nil {
		return nil, toRPC(err)
	}
	o.WaitDurable = req.Msg.WaitDurable
	img, err := h.s.Sandboxes.SnapshotFilesystem(ctx, req.Msg.SandboxId, o)
	if err != nil {
		return nil, toRPC(err)
	}
	v, err := h.s.Images.GetImage(ctx, img.ID)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.CreateFilesystemSnapshotResponse{Image: imageToPB(v)}), nil
}

func (h *imageService) CreateDirectorySnapshot(ctx context.Context, req *connect.Request[pb.CreateDirectorySnapshotRequest]) (*connect.Response[pb.CreateDirectorySnapshotResponse], error) {
	o, err := snapshotOptions(req.Msg.Ttl)
	if err != nil {
		return nil, toRPC(err)
	}
	o.WaitDurable = req.Msg.WaitDurable
	img, err := h.s.Sandboxes.SnapshotDirectory(ctx, req.Msg.SandboxId, req.Msg.Path, o)
	if err != nil {
		return nil, toRPC(err)
	}
	v, err := h.s.Images.GetImage(ctx, img.ID)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.CreateDirectorySnapshotResponse{Image: imageToPB(v)}), nil
}

// snapshotOptions decodes a snapshot's TTL: unset keeps the default.
func snapshotOptions(ttl *durationpb.Duration) (sandbox.SnapshotOptions, error) {
	if ttl == nil {
		return sandbox.SnapshotOptions{}, nil
	}
	if err := ttl.CheckValid(); err != nil {
		return sandbox.SnapshotOptions{}, errdefs.Invalid("ttl: %v", err)
	}
	d := ttl.AsDuration()
	if d < 0 {
		return sandbox.SnapshotOptions{}, errdefs.Invalid("ttl %v is negative", d)
	}
	if d > 0 && d < time.Second {
		return sandbox.SnapshotOptions{}, errdefs.Invalid("ttl %v is shorter than a second", d)
	}
	return sandbox.SnapshotOptions{TTL: &d}, nil
}

func mountsFromPB(ms []*pb.ImageMount) []sandbox.ImageMount {
	var out []sandbox.ImageMount
	for _, m := range ms {
		out = append(out, sandbox.ImageMount{Image: m.GetImage(), Path: m.GetPath()})
	}
	return out
}
