package agent

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// fileKinds maps errnos to the kind of filesystem error they are.
var fileKinds = map[syscall.Errno]agentv1.FileErrorKind{
	syscall.ENOENT:       agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND,
	syscall.EISDIR:       agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY,
	syscall.ENOTDIR:      agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_DIRECTORY,
	syscall.EACCES:       agentv1.FileErrorKind_FILE_ERROR_KIND_PERMISSION_DENIED,
	syscall.EPERM:        agentv1.FileErrorKind_FILE_ERROR_KIND_PERMISSION_DENIED,
	syscall.EROFS:        agentv1.FileErrorKind_FILE_ERROR_KIND_PERMISSION_DENIED,
	syscall.ENOTEMPTY:    agentv1.FileErrorKind_FILE_ERROR_KIND_DIRECTORY_NOT_EMPTY,
	syscall.EEXIST:       agentv1.FileErrorKind_FILE_ERROR_KIND_ALREADY_EXISTS,
	syscall.EFBIG:        agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE,
	syscall.ENOSPC:       agentv1.FileErrorKind_FILE_ERROR_KIND_NO_SPACE,
	syscall.EDQUOT:       agentv1.FileErrorKind_FILE_ERROR_KIND_NO_SPACE,
	syscall.ENAMETOOLONG: agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH,
	syscall.ELOOP:        agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH,
}

// kindCodes is the RPC code of each kind of filesystem error.
var kindCodes = map[agentv1.FileErrorKind]connect.Code{
	agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND:           connect.CodeNotFound,
	agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY:        connect.CodeFailedPrecondition,
	agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_DIRECTORY:       connect.CodeFailedPrecondition,
	agentv1.FileErrorKind_FILE_ERROR_KIND_PERMISSION_DENIED:   connect.CodePermissionDenied,
	agentv1.FileErrorKind_FILE_ERROR_KIND_DIRECTORY_NOT_EMPTY: connect.CodeFailedPrecondition,
	agentv1.FileErrorKind_FILE_ERROR_KIND_ALREADY_EXISTS:      connect.CodeAlreadyExists,
	agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE:      connect.CodeResourceExhausted,
	agentv1.FileErrorKind_FILE_ERROR_KIND_NO_SPACE:            connect.CodeResourceExhausted,
	agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH:        connect.CodeInvalidArgument,
}

// fileError is a filesystem error of a known kind.
type fileError struct {
	kind agentv1.FileErrorKind
	op   string
	path string
	msg  string
}

func (e *fileError) Error() string { return e.op + " " + e.path + ": " + e.msg }

func newFileError(kind agentv1.FileErrorKind, op, p, msg string) error {
	return &fileError{kind: kind, op: op, path: p, msg: msg}
}

// fsToConnect maps an error of a filesystem call on path p to a Connect
// error: errnos of a known kind get their code and a FileError detail;
// anything else goes through toConnect. It is where the file service
// chooses RPC codes.
func fsToConnect(op, p string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return toConnect(err)
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	var fe *fileError
	if !errors.As(err, &fe) {
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			return toConnect(err)
		}
		kind, ok := fileKinds[errno]
		if !ok {
			return toConnect(err)
		}
		fe = &fileError{kind: kind, op: op, path: p, msg: errno.Error()}
		var pe *fs.PathError
		if errors.As(err, &pe) && strings.HasPrefix(pe.Path, "/") {
			fe.path = pe.Path
		}
	}
	out := connect.NewError(kindCodes[fe.kind], errors.New(fe.Error()))
	if d, derr := connect.NewErrorDetail(&agentv1.FileError{Kind: fe.kind, Path: fe.path, Op: fe.op}); derr == nil {
		out.AddDetail(d)
	}
	return out
}

// cleanPath validates a path of a request: absolute, without NUL bytes.
// It returns it cleaned ("/a/../b" is "/b").
func cleanPath(field, p string) (string, error) {
	switch {
	case p == "":
		return "", newFileError(agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH, field, p, "a path is required")
	case strings.IndexByte(p, 0) >= 0:
		return "", newFileError(agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH, field, p, "path contains a NUL byte")
	case !path.IsAbs(p):
		return "", newFileError(agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH, field, p, "path is not absolute")
	}
	return path.Clean(p), nil
}

// errInvalid is an invalid-argument error of a file call.
func errInvalid(format string, args ...any) error { return errdefs.Invalid(format, args...) }
