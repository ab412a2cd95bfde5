package agentclient

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// rpcError is an error of an agent call: it matches both its errdefs class
// and the underlying error (so connect.CodeOf still works).
type rpcError struct {
	op    string
	class error
	err   error
}

func (e *rpcError) Error() string   { return e.op + ": " + e.err.Error() }
func (e *rpcError) Unwrap() []error { return []error{e.class, e.err} }

// fromConnect wraps err with op and the errdefs class of its Connect code.
func fromConnect(err error, op string) error {
	if err == nil {
		return nil
	}
	return &rpcError{op: op, class: classOf(err), err: err}
}

func classOf(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return errdefs.ErrCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return errdefs.ErrDeadlineExceeded
	}
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return errdefs.ErrNotFound
	case connect.CodeAlreadyExists:
		return errdefs.ErrAlreadyExists
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		return errdefs.ErrInvalidArgument
	case connect.CodeFailedPrecondition:
		return errdefs.ErrFailedPrecondition
	case connect.CodeResourceExhausted:
		return errdefs.ErrResourceExhausted
	case connect.CodeUnavailable:
		return errdefs.ErrUnavailable
	case connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return errdefs.ErrPermissionDenied
	case connect.CodeDeadlineExceeded:
		return errdefs.ErrDeadlineExceeded
	case connect.CodeCanceled:
		return errdefs.ErrCanceled
	}
	return errdefs.ErrInternal
}
