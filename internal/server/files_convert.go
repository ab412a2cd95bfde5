package server

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/rpcerr"
)

// The messages of api/sandboxd/v1/files.proto are wire-compatible with those
// of api/agent/v1/files.proto (same field numbers; requests add sandbox_id
// as field 15): convert re-reads one as the other, dropping sandbox_id.
// Data messages, the hot path, are built field by field instead.
func convert[T proto.Message](dst T, src proto.Message) T {
	b, err := proto.Marshal(src)
	if err == nil {
		err = proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, dst)
	}
	if err != nil { // both sides are our own valid messages
		panic(fmt.Sprintf("server: convert %T to %T: %v", src, dst, err))
	}
	return dst
}

// fileErr turns an error of the agent's file API into the public one: the
// same code and message, with the agent's FileError detail re-issued as
// sandboxd.v1.FileError. A broken connection is explained (the sandbox may
// have finished meanwhile).
func (h *fileService) fileErr(ctx context.Context, sandboxID string, err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) || !connect.IsWireError(ce) || ce.Code() == connect.CodeUnavailable {
		if ce == nil || ce.Code() != connect.CodeCanceled {
			err = h.s.Sandboxes.ExplainAgentError(ctx, sandboxID, err)
		}
		if !errors.As(err, &ce) {
			return toRPC(err)
		}
	}
	out := connect.NewError(ce.Code(), errors.New(ce.Message()))
	if fe, ok := rpcerr.Detail[*agentv1.FileError](ce); ok {
		if pd, err := connect.NewErrorDetail(convert(&pb.FileError{}, fe)); err == nil {
			out.AddDetail(pd)
		}
	}
	return out
}

// sizeLimit combines a write's own limit with the server's.
func (h *fileService) sizeLimit(req int64) int64 {
	lim := h.s.FileSizeLimit
	if req > 0 && (lim == 0 || req < lim) {
		lim = req
	}
	return lim
}

// errNoHeader is the error of a client stream whose first message is not a header.
var errNoHeader = errdefs.Invalid("the first message must be the header")
