package sandboxd

import (
	"context"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// LiveMount is an image mounted into a running sandbox (MountImage).
type LiveMount struct {
	Path      string // absolute
	Image     string // the reference given
	ImageID   string // what it resolved to (im-...)
	MountedAt time.Time
}

func liveMountFromPB(m *pb.LiveMount) LiveMount {
	lm := LiveMount{Path: m.Path, Image: m.Image, ImageID: m.ImageId}
	if m.MountedAt != nil {
		lm.MountedAt = m.MountedAt.AsTime()
	}
	return lm
}

// MountImage mounts image (a name or an id: a directory snapshot, a
// filesystem snapshot or a base image) at path (absolute, not "/") in the
// running sandbox, replacing what path shows and creating it if missing.
// Nothing is copied; the sandbox's writes under path stay private to it
// (kept in its memory) and the stored image never changes. The image cannot
// be deleted while the sandbox runs. Errors: ErrInvalidArgument (bad path),
// ErrNotFound (unknown sandbox or image), ErrAlreadyExists (an image is
// mounted at path already), ErrFailedPrecondition (the sandbox is not
// running, or path lies within or above another live mount, or a file is in
// its way), ErrResourceExhausted (16 images mounted already).
func (s *Sandbox) MountImage(ctx context.Context, image, path string) (LiveMount, error) {
	resp, err := s.c.sandboxes.MountImage(ctx, connect.NewRequest(&pb.MountImageRequest{
		SandboxId: s.ID, Image: image, Path: path,
	}))
	if err != nil {
		return LiveMount{}, wrap(err)
	}
	return liveMountFromPB(resp.Msg.Mount), nil
}

// UnmountImage unmounts the image MountImage mounted at path: path shows
// again what it held before, and the sandbox's writes under the mount are
// gone. No such mount is ErrNotFound.
func (s *Sandbox) UnmountImage(ctx context.Context, path string) error {
	_, err := s.c.sandboxes.UnmountImage(ctx, connect.NewRequest(&pb.UnmountImageRequest{SandboxId: s.ID, Path: path}))
	return wrap(err)
}

// Mounts lists the images mounted into the running sandbox by MountImage,
// by path (not those given at create).
func (s *Sandbox) Mounts(ctx context.Context) ([]LiveMount, error) {
	resp, err := s.c.sandboxes.ListMounts(ctx, connect.NewRequest(&pb.ListMountsRequest{SandboxId: s.ID}))
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]LiveMount, 0, len(resp.Msg.Mounts))
	for _, m := range resp.Msg.Mounts {
		out = append(out, liveMountFromPB(m))
	}
	return out, nil
}
