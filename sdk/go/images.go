package sandboxd

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// Image is a stored image: base images (busybox, debian-slim) and the
// filesystem and directory snapshots of sandboxes.
type Image struct {
	ID        string // im-...
	Names     []string
	Layers    []string // digests, lowest first
	Size      int64    // bytes (sum of the layers' tar sizes)
	Source    string   // e.g. base:busybox, snapshot-fs:sb-..., snapshot-dir:sb-...:/path
	CreatedAt time.Time
	LastUsed  time.Time     // zero: not used since created
	IdleTTL   time.Duration // life after last use; zero: no expiry
	ExpiresAt time.Time     // zero: never
	// Durable: all its layers are on disk. A snapshot's new layer reaches
	// the disk after the snapshot call returns (unless it set
	// SnapshotOptions.WaitDurable); a machine crash before that loses the
	// image.
	Durable bool
}

func imageFromPB(m *pb.Image) Image {
	im := Image{ID: m.Id, Names: m.Names, Layers: m.Layers, Size: m.SizeBytes, Source: m.Source, Durable: m.Durable}
	if m.CreatedAt != nil {
		im.CreatedAt = m.CreatedAt.AsTime()
	}
	if m.LastUsed != nil {
		im.LastUsed = m.LastUsed.AsTime()
	}
	if m.ExpiresAt != nil {
		im.ExpiresAt = m.ExpiresAt.AsTime()
	}
	if m.IdleTtl != nil {
		im.IdleTTL = m.IdleTtl.AsDuration()
	}
	return im
}

// ListImages lists the images, oldest first.
func (c *Client) ListImages(ctx context.Context) ([]Image, error) {
	resp, err := c.images.ListImages(ctx, connect.NewRequest(&pb.ListImagesRequest{}))
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]Image, 0, len(resp.Msg.Images))
	for _, m := range resp.Msg.Images {
		out = append(out, imageFromPB(m))
	}
	return out, nil
}

// GetImage returns the image ref names (a name or an id).
func (c *Client) GetImage(ctx context.Context, ref string) (Image, error) {
	resp, err := c.images.GetImage(ctx, connect.NewRequest(&pb.GetImageRequest{Ref: ref}))
	if err != nil {
		return Image{}, wrap(err)
	}
	return imageFromPB(resp.Msg.Image), nil
}

// DeleteImage deletes an image. An image that running sandboxes use is not
// deleted: ErrFailedPrecondition, with a message naming them.
func (c *Client) DeleteImage(ctx context.Context, ref string) error {
	_, err := c.images.DeleteImage(ctx, connect.NewRequest(&pb.DeleteImageRequest{Ref: ref}))
	return wrap(err)
}

// SnapshotOptions tune a filesystem or directory snapshot.
type SnapshotOptions struct {
	// TTL is the image's life after its last use (creating or mounting from
	// it counts as use). Nil keeps the default: no expiry for filesystem
	// snapshots, 30 days for directory snapshots. A zero TTL means no expiry.
	TTL *time.Duration
	// WaitDurable makes the call return only once the image is on disk and
	// survives a machine crash. Without it, the call returns as soon as the
	// image is recorded (usable at once) and its new layer is written to
	// disk in the background (see Image.Durable).
	WaitDurable bool
}

func (o SnapshotOptions) ttlPB() *durationpb.Duration {
	if o.TTL == nil {
		return nil
	}
	return durationpb.New(*o.TTL)
}

// SnapshotFilesystem records the sandbox's whole root filesystem as a new
// image (its image's layers plus one layer of its changes) that new sandboxes
// can start from. The sandbox keeps running. Files in /tmp (a tmpfs) and in
// mounted images are not part of it.
func (s *Sandbox) SnapshotFilesystem(ctx context.Context, o SnapshotOptions) (Image, error) {
	resp, err := s.c.images.CreateFilesystemSnapshot(ctx, connect.NewRequest(&pb.CreateFilesystemSnapshotRequest{
		SandboxId: s.ID, Ttl: o.ttlPB(), WaitDurable: o.WaitDurable,
	}))
	if err != nil {
		return Image{}, wrap(err)
	}
	return imageFromPB(resp.Msg.Image), nil
}

// SnapshotDirectory records the tree at path (absolute, not "/") in the
// sandbox as a new one-layer image holding it at its root, to mount into
// other sandboxes.
func (s *Sandbox) SnapshotDirectory(ctx context.Context, path string, o SnapshotOptions) (Image, error) {
	resp, err := s.c.images.CreateDirectorySnapshot(ctx, connect.NewRequest(&pb.CreateDirectorySnapshotRequest{
		SandboxId: s.ID, Path: path, Ttl: o.ttlPB(), WaitDurable: o.WaitDurable,
	}))
	if err != nil {
		return Image{}, wrap(err)
	}
	return imageFromPB(resp.Msg.Image), nil
}

// Mount is an image mounted at an absolute path (not "/") of a new sandbox.
// It replaces what the path held and creates it if missing; the sandbox's
// writes under it stay private to it (copy-on-write).
type Mount struct {
	Image string // name or id (im-...)
	Path  string
}

func mountsToPB(ms []Mount) []*pb.ImageMount {
	out := make([]*pb.ImageMount, 0, len(ms))
	for _, m := range ms {
		out = append(out, &pb.ImageMount{Image: m.Image, Path: m.Path})
	}
	return out
}
