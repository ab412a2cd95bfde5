package server

import (
	"context"
	"io"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// ReadFile: through the agent's raw read when it has one (the file's bytes
// as they are, no messages between the agent and the daemon), else through
// its ReadFile stream. The caller sees the same messages either way: the
// info in the first, then data.

// rawChunk is the most data bytes put in one message from a raw read.
const rawChunk = 512 << 10

func (h *fileService) ReadFile(ctx context.Context, req *connect.Request[pb.ReadFileRequest], stream *connect.ServerStream[pb.ReadFileResponse]) error {
	id := req.Msg.SandboxId
	areq := convert(&agentv1.ReadFileRequest{}, req.Msg)
	ra, ok, err := h.s.Sandboxes.RawReader(ctx, id)
	if err != nil {
		return toRPC(err)
	}
	if ok {
		info, body, err := ra.ReadRaw(ctx, areq)
		switch {
		case err == nil:
			defer body.Close()
			return h.relayRaw(ctx, id, info, body, stream)
		case !ra.NoRawRead(err):
			return h.fileErr(ctx, id, err)
		}
	}
	fc, err := h.s.Sandboxes.Files(ctx, id)
	if err != nil {
		return toRPC(err)
	}
	as, err := fc.ReadFile(ctx, connect.NewRequest(areq))
	if err != nil {
		return h.fileErr(ctx, id, err)
	}
	return relay(ctx, h, id, as, func(m *agentv1.ReadFileResponse) error {
		out := &pb.ReadFileResponse{Data: m.Data}
		if m.Info != nil {
			out.Info = convert(&pb.FileInfo{}, m.Info)
		}
		return stream.Send(out)
	})
}

// relayRaw sends info then body's bytes as ReadFile messages. Only io.EOF
// ends the body well: a raw read that breaks midway ends in another error.
func (h *fileService) relayRaw(ctx context.Context, id string, info *agentv1.FileInfo, body io.Reader, stream *connect.ServerStream[pb.ReadFileResponse]) error {
	buf := make([]byte, rawChunk) // Send marshals: buf is free again when it returns
	for first := true; ; first = false {
		n, err := fill(body, buf)
		if n > 0 || first {
			out := &pb.ReadFileResponse{Data: buf[:n]}
			if first {
				out.Info = convert(&pb.FileInfo{}, info)
			}
			if serr := stream.Send(out); serr != nil {
				return serr
			}
		}
		switch err {
		case nil:
		case io.EOF:
			return nil
		default:
			return h.fileErr(ctx, id, connect.NewError(connect.CodeUnavailable, err))
		}
	}
}

// fill reads from r until buf is full or r fails; at r's end it returns
// io.EOF (with what it read), whatever else r returns is its error.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
