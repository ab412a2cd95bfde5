package server

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// The one-message calls of FileService for small files: each is one unary
// call to the agent, where a stream would cost more round trips than the
// data. The data is passed along as it is, never re-encoded.

// putMax is the most data PutFile takes inline (the agent's limit too).
const putMax = 4 << 20

func (h *fileService) PutFile(ctx context.Context, req *connect.Request[pb.PutFileRequest]) (*connect.Response[pb.PutFileResponse], error) {
	hdr := req.Msg.GetHeader()
	if hdr == nil {
		return nil, toRPC(errNoPutHeader)
	}
	if len(req.Msg.Data) > putMax {
		return nil, toRPC(errPutTooLarge)
	}
	fc, err := h.s.Sandboxes.Files(ctx, hdr.SandboxId)
	if err != nil {
		return nil, toRPC(err)
	}
	ah := convert(&agentv1.WriteHeader{}, hdr)
	ah.SizeLimit = h.sizeLimit(hdr.SizeLimit)
	resp, err := fc.PutFile(ctx, connect.NewRequest(&agentv1.PutFileRequest{Header: ah, Data: req.Msg.Data}))
	if err != nil {
		return nil, h.fileErr(ctx, hdr.SandboxId, err)
	}
	return connect.NewResponse(&pb.PutFileResponse{BytesWritten: resp.Msg.BytesWritten}), nil
}

func (h *fileService) GetFile(ctx context.Context, req *connect.Request[pb.GetFileRequest]) (*connect.Response[pb.GetFileResponse], error) {
	fc, err := h.s.Sandboxes.Files(ctx, req.Msg.SandboxId)
	if err != nil {
		return nil, toRPC(err)
	}
	resp, err := fc.GetFile(ctx, connect.NewRequest(&agentv1.GetFileRequest{Path: req.Msg.Path, MaxSize: req.Msg.MaxSize}))
	if err != nil {
		return nil, h.fileErr(ctx, req.Msg.SandboxId, err)
	}
	m := resp.Msg
	out := &pb.GetFileResponse{Data: m.Data, Complete: m.Complete}
	if m.Info != nil {
		out.Info = convert(&pb.FileInfo{}, m.Info)
	}
	return connect.NewResponse(out), nil
}

var (
	errNoPutHeader = errdefs.Invalid("put: a header is required")
	errPutTooLarge = errdefs.Invalid("put: more than 4 MiB inline: stream the file with WriteFile")
)
