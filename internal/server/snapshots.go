package server

import (
	"context"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

type snapshotService struct{ s *Server }

func snapshotToPB(v sandbox.SnapshotInfo) *pb.Snapshot {
	return &pb.Snapshot{
		Id: v.ID, SourceSandboxId: v.SourceSandboxID, ParentSnapshotId: v.ParentID, App: v.App, Name: v.Name,
		ImageId: v.ImageID, SizeBytes: v.Size, CreatedAt: ts(v.CreatedAt), ExpiresAt: ts(v.ExpiresAt), Checksum: v.Checksum,
	}
}

var nameModes = map[pb.NameMode]sandbox.NameMode{
	pb.NameMode_NAME_MODE_UNSPECIFIED: sandbox.NameKeep,
	pb.NameMode_NAME_MODE_KEEP:        sandbox.NameKeep,
	pb.NameMode_NAME_MODE_CLEAR:       sandbox.NameClear,
	pb.NameMode_NAME_MODE_REPLACE:     sandbox.NameReplace,
}

func (h *snapshotService) CreateSnapshot(ctx context.Context, req *connect.Request[pb.CreateSnapshotRequest]) (*connect.Response[pb.CreateSnapshotResponse], error) {
	if req.Msg.TtlMs < 0 {
		return nil, toRPC(errdefs.Invalid("negative ttl"))
	}
	v, err := h.s.Snapshots.Snapshot(ctx, req.Msg.SandboxId, time.Duration(req.Msg.TtlMs)*time.Millisecond)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.CreateSnapshotResponse{Snapshot: snapshotToPB(v)}), nil
}

func (h *snapshotService) RestoreSnapshot(ctx context.Context, req *connect.Request[pb.RestoreSnapshotRequest]) (*connect.Response[pb.RestoreSnapshotResponse], error) {
	mode, ok := nameModes[req.Msg.NameMode]
	if !ok {
		return nil, toRPC(errdefs.Invalid("unknown name mode %v", req.Msg.NameMode))
	}
	if mode != sandbox.NameReplace && req.Msg.Name != "" {
		return nil, toRPC(errdefs.Invalid("a name is given only with NAME_MODE_REPLACE"))
	}
	sb, err := h.s.Snapshots.Restore(ctx, req.Msg.SnapshotId, mode, req.Msg.Name)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.RestoreSnapshotResponse{Sandbox: sandboxToPB(sb)}), nil
}

func (h *snapshotService) ListSnapshots(ctx context.Context, req *connect.Request[pb.ListSnapshotsRequest]) (*connect.Response[pb.ListSnapshotsResponse], error) {
	list, err := h.s.Snapshots.List(ctx)
	if err != nil {
		return nil, toRPC(err)
	}
	out := &pb.ListSnapshotsResponse{}
	for _, v := range list {
		out.Snapshots = append(out.Snapshots, snapshotToPB(v))
	}
	return connect.NewResponse(out), nil
}

func (h *snapshotService) GetSnapshot(ctx context.Context, req *connect.Request[pb.GetSnapshotRequest]) (*connect.Response[pb.GetSnapshotResponse], error) {
	v, err := h.s.Snapshots.Get(ctx, req.Msg.Id)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.GetSnapshotResponse{Snapshot: snapshotToPB(v)}), nil
}

func (h *snapshotService) DeleteSnapshot(ctx context.Context, req *connect.Request[pb.DeleteSnapshotRequest]) (*connect.Response[pb.DeleteSnapshotResponse], error) {
	if err := h.s.Snapshots.Delete(ctx, req.Msg.Id); err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.DeleteSnapshotResponse{}), nil
}
