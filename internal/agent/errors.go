package agent

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// outOfRangeError is an invalid-argument error about an offset: a gap in
// stdin writes or output that was dropped or never written. It maps to
// CodeOutOfRange.
type outOfRangeError struct{ msg string }

func (e *outOfRangeError) Error() string        { return e.msg }
func (e *outOfRangeError) Is(target error) bool { return target == errdefs.ErrInvalidArgument }

func outOfRange(format string, args ...any) error {
	return &outOfRangeError{msg: fmt.Sprintf(format, args...)}
}

// errPermission returns an error of class ErrPermissionDenied.
func errPermission(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errdefs.ErrPermissionDenied, fmt.Sprintf(format, args...))
}

// toConnect maps a domain error to a Connect error. It is the only place the
// agent chooses RPC codes.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	var oor *outOfRangeError
	if errors.As(err, &oor) {
		return connect.NewError(connect.CodeOutOfRange, err)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	code := connect.CodeInternal
	switch errdefs.Class(err) {
	case errdefs.ErrNotFound:
		code = connect.CodeNotFound
	case errdefs.ErrAlreadyExists:
		code = connect.CodeAlreadyExists
	case errdefs.ErrInvalidArgument:
		code = connect.CodeInvalidArgument
	case errdefs.ErrFailedPrecondition:
		code = connect.CodeFailedPrecondition
	case errdefs.ErrResourceExhausted:
		code = connect.CodeResourceExhausted
	case errdefs.ErrUnavailable:
		code = connect.CodeUnavailable
	case errdefs.ErrPermissionDenied:
		code = connect.CodePermissionDenied
	case errdefs.ErrExpired, errdefs.ErrDeadlineExceeded:
		code = connect.CodeDeadlineExceeded
	case errdefs.ErrCanceled:
		code = connect.CodeCanceled
	}
	return connect.NewError(code, err)
}
