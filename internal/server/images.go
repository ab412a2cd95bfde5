package server

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// ImageView is an image as the API shows it.
type ImageView struct {
	ID        string
	Names     []string
	Layers    []string
	Size      int64
	CreatedAt time.Time
	Source    string
	LastUsed  time.Time     // zero: never
	IdleTTL   time.Duration // zero: no expiry
	ExpiresAt time.Time     // zero: never
	Durable   bool          // all its layers are on disk
}

type imageService struct{ s *Server }

func imageToPB(v ImageView) *pb.Image {
	im := &pb.Image{Id: v.ID, Names: v.Names, Layers: v.Layers, SizeBytes: v.Size, CreatedAt: ts(v.CreatedAt), Source: v.Source,
		LastUsed: ts(v.LastUsed), ExpiresAt: ts(v.ExpiresAt), Durable: v.Durable}
	if v.IdleTTL > 0 {
		im.IdleTtl = durationpb.New(v.IdleTTL)
	}
	return im
}

func (h *imageService) ListImages(ctx context.Context, req *connect.Request[pb.ListImagesRequest]) (*connect.Response[pb.ListImagesResponse], error) {
	list, err := h.s.Images.ListImages(ctx)
	if err != nil {
		return nil, toRPC(err)
	}
	out := &pb.ListImagesResponse{}
	for _, v := range list {
		out.Images = append(out.Images, imageToPB(v))
	}
	return connect.NewResponse(out), nil
}

func (h *imageService) GetImage(ctx context.Context, req *connect.Request[pb.GetImageRequest]) (*connect.Response[pb.GetImageResponse], error) {
	v, err := h.s.Images.GetImage(ctx, req.Msg.Ref)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.GetImageResponse{Image: imageToPB(v)}), nil
}
