package sandboxd

import (
	"errors"

	"connectrpc.com/connect"
)

// Error classes returned by the client. Test with errors.Is.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrUnavailable        = errors.New("unavailable")
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
	ErrCanceled           = errors.New("canceled")
	ErrOutOfRange         = errors.New("out of range")
	// ErrExpired: the object (a snapshot) has expired. The daemon sends it as
	// FAILED_PRECONDITION with the Sandboxd-Class: expired error metadata.
	ErrExpired  = errors.New("expired")
	ErrInternal = errors.New("internal error")
)

// Error is an error returned by the daemon: its class and its message.
type Error struct {
	Class   error
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the class, so errors.Is(err, ErrNotFound) works.
func (e *Error) Unwrap() error { return e.Class }

var codeClass = map[connect.Code]error{
	connect.CodeNotFound:           ErrNotFound,
	connect.CodeAlreadyExists:      ErrAlreadyExists,
	connect.CodeInvalidArgument:    ErrInvalidArgument,
	connect.CodeFailedPrecondition: ErrFailedPrecondition,
	connect.CodeResourceExhausted:  ErrResourceExhausted,
	connect.CodeUnavailable:        ErrUnavailable,
	connect.CodeUnauthenticated:    ErrUnauthenticated,
	connect.CodePermissionDenied:   ErrPermissionDenied,
	connect.CodeDeadlineExceeded:   ErrDeadlineExceeded,
	connect.CodeCanceled:           ErrCanceled,
	connect.CodeOutOfRange:         ErrOutOfRange,
}

// wrap turns an RPC error into an *Error of the matching class.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	class, ok := codeClass[ce.Code()]
	if !ok {
		class = ErrInternal
	}
	if ce.Meta().Get("Sandboxd-Class") == "expired" {
		class = ErrExpired
	}
	return &Error{Class: class, Message: ce.Message()}
}
