package server

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// The streaming calls of FileService: each message is forwarded as it
// comes, so memory stays at a few messages whatever the file's size, and
// HTTP/2 flow control carries back-pressure from end to end.

func (h *fileService) TarOut(ctx context.Context, req *connect.Request[pb.TarOutRequest], stream *connect.ServerStream[pb.DataChunk]) error {
	fc, err := h.s.Sandboxes.Files(ctx, req.Msg.SandboxId)
	if err != nil {
		return toRPC(err)
	}
	as, err := fc.TarOut(ctx, connect.NewRequest(convert(&agentv1.TarOutRequest{}, req.Msg)))
	if err != nil {
		return h.fileErr(ctx, req.Msg.SandboxId, err)
	}
	return relay(ctx, h, req.Msg.SandboxId, as, func(m *agentv1.DataChunk) error {
		return stream.Send(&pb.DataChunk{Data: m.Data})
	})
}

func (h *fileService) Watch(ctx context.Context, req *connect.Request[pb.WatchRequest], stream *connect.ServerStream[pb.WatchEvent]) error {
	fc, err := h.s.Sandboxes.Files(ctx, req.Msg.SandboxId)
	if err != nil {
		return toRPC(err)
	}
	as, err := fc.Watch(ctx, connect.NewRequest(convert(&agentv1.WatchRequest{}, req.Msg)))
	if err != nil {
		return h.fileErr(ctx, req.Msg.SandboxId, err)
	}
	return relay(ctx, h, req.Msg.SandboxId, as, func(m *agentv1.WatchEvent) error {
		return stream.Send(&pb.WatchEvent{Type: pb.WatchEventType(m.Type), Path: m.Path, IsDir: m.IsDir})
	})
}

func (h *fileService) TarIn(ctx context.Context, stream *connect.ClientStream[pb.TarInRequest]) (*connect.Response[pb.TarInResponse], error) {
	hdr, err := streamHeader(stream, (*pb.TarInRequest).GetHeader)
	if err != nil {
		return nil, err
	}
	id := hdr.SandboxId
	fc, err := h.s.Sandboxes.Files(ctx, id)
	if err != nil {
		return nil, toRPC(err)
	}
	// Cancelling actx breaks the agent's stream, so a caller's broken stream
	// does not look like a finished one to the agent.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	as := fc.TarIn(actx)
	err = as.Send(&agentv1.TarInRequest{Msg: &agentv1.TarInRequest_Header{Header: convert(&agentv1.TarInHeader{}, hdr)}})
	for err == nil && stream.Receive() {
		err = as.Send(&agentv1.TarInRequest{Msg: &agentv1.TarInRequest_Data{Data: stream.Msg().GetData()}})
	}
	if err == nil {
		if err = stream.Err(); err != nil {
			cancel()
			as.CloseAndReceive()
			return nil, err
		}
	}
	resp, rerr := as.CloseAndReceive()
	if rerr != nil {
		return nil, h.fileErr(ctx, id, rerr)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.fileErr(ctx, id, err)
	}
	return connect.NewResponse(convert(&pb.TarInResponse{}, resp.Msg)), nil
}

// relay forwards the messages of an agent stream through send until the
// stream ends, then closes it; an error of the agent's stream is explained
// (the sandbox may have finished meanwhile).
func relay[T any](ctx context.Context, h *fileService, sandboxID string, as *connect.ServerStreamForClient[T], send func(*T) error) error {
	defer as.Close()
	for as.Receive() {
		if err := send(as.Msg()); err != nil {
			return err
		}
	}
	if err := as.Err(); err != nil {
		return h.fileErr(ctx, sandboxID, err)
	}
	return nil
}

// streamHeader receives the first message of a client stream and returns
// its header (get's result): the stream's error if it ended first, or
// errNoHeader, as RPC errors.
func streamHeader[M, H any](stream *connect.ClientStream[M], get func(*M) *H) (*H, error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, toRPC(err)
		}
		return nil, toRPC(errNoHeader)
	}
	hdr := get(stream.Msg())
	if hdr == nil {
		return nil, toRPC(errNoHeader)
	}
	return hdr, nil
}
