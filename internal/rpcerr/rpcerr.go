// Package rpcerr maps the error classes of internal/errdefs to Connect codes
// and back: the one place where sandboxd chooses RPC codes, used by the API
// server, the agent and the agent's client. (The public SDK keeps its own
// copy of the reverse mapping, since users import it alone.)
package rpcerr

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

var classCodes = []struct {
	class error
	code  connect.Code
}{
	{errdefs.ErrNotFound, connect.CodeNotFound},
	{errdefs.ErrAlreadyExists, connect.CodeAlreadyExists},
	{errdefs.ErrInvalidArgument, connect.CodeInvalidArgument},
	{errdefs.ErrFailedPrecondition, connect.CodeFailedPrecondition},
	{errdefs.ErrResourceExhausted, connect.CodeResourceExhausted},
	{errdefs.ErrUnavailable, connect.CodeUnavailable},
	{errdefs.ErrPermissionDenied, connect.CodePermissionDenied},
	// An expired object is a precondition that no longer holds; the API
	// server adds metadata so clients can tell it apart.
	{errdefs.ErrExpired, connect.CodeFailedPrecondition},
	{errdefs.ErrDeadlineExceeded, connect.CodeDeadlineExceeded},
	{errdefs.ErrCanceled, connect.CodeCanceled},
}

// Code returns the Connect code of a domain error: that of a Connect error it
// wraps, of a context error, or of its errdefs class (CodeInternal if none).
func Code(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code()
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	}
	class := errdefs.Class(err)
	for _, cc := range classCodes {
		if cc.class == class {
			return cc.code
		}
	}
	return connect.CodeInternal
}

// ToConnect turns a domain error into a Connect error, keeping its message.
// A Connect error (for example relayed from the agent) is returned as is.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(Code(err), err)
}

// Class returns the errdefs class of an RPC error's code (OutOfRange counts
// as invalid argument, Unauthenticated as permission denied).
func Class(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return errdefs.ErrCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return errdefs.ErrDeadlineExceeded
	}
	switch code := connect.CodeOf(err); code {
	case connect.CodeOutOfRange:
		return errdefs.ErrInvalidArgument
	case connect.CodeUnauthenticated:
		return errdefs.ErrPermissionDenied
	case connect.CodeFailedPrecondition:
		return errdefs.ErrFailedPrecondition
	default:
		for _, cc := range classCodes {
			if cc.code == code {
				return cc.class
			}
		}
	}
	return errdefs.ErrInternal
}

// Detail returns the first detail of type T (a protobuf message) of the
// Connect error err is or wraps, and whether there was one.
func Detail[T proto.Message](err error) (T, bool) {
	var zero T
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return zero, false
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if t, ok := v.(T); ok {
				return t, true
			}
		}
	}
	return zero, false
}
