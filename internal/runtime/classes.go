package runtime

import "github.com/sandboxd/sandboxd/internal/errdefs"

var (
	errdefsCanceled = errdefs.ErrCanceled
	errdefsDeadline = errdefs.ErrDeadlineExceeded
)

// textClasses maps fragments of runsc's error text (lowercased) to classes.
// Checked in order; the first match wins. Unmatched errors stay unclassed
// (errdefs.Class reports them as ErrInternal).
var textClasses = []struct {
	text  string
	class error
}{
	{"loading container: file does not exist", errdefs.ErrNotFound},
	{"container does not exist", errdefs.ErrNotFound},
	{"already exists", errdefs.ErrAlreadyExists},
	{"cannot allocate memory", errdefs.ErrResourceExhausted},
	{"resource temporarily unavailable", errdefs.ErrResourceExhausted},
	{"permission denied", errdefs.ErrPermissionDenied},
	{"operation not permitted", errdefs.ErrPermissionDenied},
	{"not stopped without --force", errdefs.ErrFailedPrecondition},
	{"not running", errdefs.ErrFailedPrecondition},
	{"invalid state", errdefs.ErrFailedPrecondition},
	{"creating process: failed to load", errdefs.ErrInvalidArgument},
}
