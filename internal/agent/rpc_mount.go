package agent

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// MountImage mounts a staged image on a path (see mount.go).
func (s *service) MountImage(ctx context.Context, req *connect.Request[agentv1.MountImageRequest]) (*connect.Response[agentv1.MountImageResponse], error) {
	if err := s.mounts.mount(req.Msg.Stage, req.Msg.Path); err != nil {
		s.a.log.Warn("mount image", "stage", req.Msg.Stage, "path", req.Msg.Path, "err", err)
		return nil, toConnect(err)
	}
	s.a.log.Info("image mounted", "stage", req.Msg.Stage, "path", req.Msg.Path)
	return connect.NewResponse(&agentv1.MountImageResponse{}), nil
}

// UnmountImage undoes MountImage; idempotent.
func (s *service) UnmountImage(ctx context.Context, req *connect.Request[agentv1.UnmountImageRequest]) (*connect.Response[agentv1.UnmountImageResponse], error) {
	if err := s.mounts.unmount(req.Msg.Stage, req.Msg.Path); err != nil {
		s.a.log.Warn("unmount image", "stage", req.Msg.Stage, "path", req.Msg.Path, "err", err)
		return nil, toConnect(err)
	}
	s.a.log.Info("image unmounted", "stage", req.Msg.Stage, "path", req.Msg.Path)
	return connect.NewResponse(&agentv1.UnmountImageResponse{}), nil
}
