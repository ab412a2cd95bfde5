// Package errdefs holds the error classes every layer of sandboxd shares.
//
// Code below the API wraps one of these with context ("create veth: %w"), and
// the server maps the class to an RPC code in one place. Anyone may import it.
package errdefs

import (
	"errors"
	"fmt"
)

// The error classes. Test with errors.Is.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrUnavailable        = errors.New("unavailable")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrExpired            = errors.New("expired")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
	ErrCanceled           = errors.New("canceled")
	ErrInternal           = errors.New("internal")
)

// classed is an error with a class and a message that does not repeat the
// class's own text.
type classed struct {
	class error
	msg   string
}

func (e *classed) Error() string { return e.msg }
func (e *classed) Unwrap() error { return e.class }

func newf(class error, format string, args ...any) error {
	return &classed{class: class, msg: fmt.Sprintf(format, args...)}
}

// NotFound returns an error of class ErrNotFound with the given message.
func NotFound(format string, args ...any) error { return newf(ErrNotFound, format, args...) }

// AlreadyExists returns an error of class ErrAlreadyExists.
func AlreadyExists(format string, args ...any) error { return newf(ErrAlreadyExists, format, args...) }

// Invalid returns an error of class ErrInvalidArgument.
func Invalid(format string, args ...any) error { return newf(ErrInvalidArgument, format, args...) }

// FailedPrecondition returns an error of class ErrFailedPrecondition.
func FailedPrecondition(format string, args ...any) error {
	return newf(ErrFailedPrecondition, format, args...)
}

// Unavailable returns an error of class ErrUnavailable.
func Unavailable(format string, args ...any) error { return newf(ErrUnavailable, format, args...) }

// Exhausted returns an error of class ErrResourceExhausted.
func Exhausted(format string, args ...any) error { return newf(ErrResourceExhausted, format, args...) }

// Expired returns an error of class ErrExpired.
func Expired(format string, args ...any) error { return newf(ErrExpired, format, args...) }

// Class returns the class of err (one of the Err* values), or ErrInternal.
func Class(err error) error {
	for _, c := range []error{ErrNotFound, ErrAlreadyExists, ErrInvalidArgument, ErrFailedPrecondition,
		ErrResourceExhausted, ErrUnavailable, ErrPermissionDenied, ErrExpired, ErrDeadlineExceeded, ErrCanceled} {
		if errors.Is(err, c) {
			return c
		}
	}
	return ErrInternal
}
