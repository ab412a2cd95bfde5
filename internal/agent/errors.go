package agent

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/rpcerr"
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

// toConnect maps a domain error to a Connect error: offsets out of range
// get CodeOutOfRange, everything else the shared mapping of internal/rpcerr.
func toConnect(err error) error {
	var oor *outOfRangeError
	if errors.As(err, &oor) {
		return connect.NewError(connect.CodeOutOfRange, err)
	}
	return rpcerr.ToConnect(err)
}
