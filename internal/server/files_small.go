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
	if len(req.Msg.Data) >= putStagedMin {
		if n, ok, err := h.putStaged(ctx, fc, hdr.SandboxId, ah, req.Msg.Data); ok {
			if err != nil {
				return nil, err
			}
			return connect.NewResponse(&pb.PutFileResponse{BytesWritten: n}), nil
		}
	}
	resp, err := fc.PutFile(ctx, connect.NewRequest(&agentv1.PutFileRequest{Header: ah, Data: req.Msg.Data}))
	if err != nil {
		return nil, h.fileErr(ctx, hdr.SandboxId, err)
	}
	return connect.NewResponse(&pb.PutFileResponse{BytesWritten: resp.Msg.BytesWritten}), nil
}

// putStagedMin is the least data a PutFile carries through the sandbox's
// staging dir (one step of WriteFile's staged path) instead of inline to the
// agent: inside gVisor, a large message over the agent's connection costs
// more, and varies more, than a host file the agent copies in.
const putStagedMin = 256 << 10

// putStaged writes data with header ah through the staging dir of sandbox
// id. ok is false when it could not be tried (a sandbox without a staging
// dir, an agent without WriteStaged) and nothing was written.
func (h *fileService) putStaged(ctx context.Context, fc fileClient, id string, ah *agentv1.WriteHeader, data []byte) (n int64, ok bool, err error) {
	st, err := h.s.Sandboxes.Staging(ctx, id)
	if err != nil {
		return 0, false, nil
	}
	f, err := st.Stage(ctx, [][]byte{data})
	if err != nil {
		return 0, true, toRPC(err)
	}
	w := &writeCall{h: h, id: id, fc: fc, hdr: ah}
	r, err := w.step(ctx, f, 0)
	switch {
	case connect.CodeOf(err) == connect.CodeUnimplemented:
		return 0, false, nil
	case err != nil:
		return 0, true, h.stepErr(ctx, id, err)
	}
	return r.BytesWritten, true, nil
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
