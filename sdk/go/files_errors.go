package sandboxd

import (
	"errors"
	"io/fs"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// Kinds of filesystem errors of the file API, besides ErrNotFound,
// ErrAlreadyExists and ErrPermissionDenied. Test with errors.Is; a
// *PathError matches both its kind and its class (ErrFailedPrecondition for
// the first three, ErrResourceExhausted for the next two).
var (
	ErrIsDirectory       = errors.New("is a directory")
	ErrNotDirectory      = errors.New("not a directory")
	ErrDirectoryNotEmpty = errors.New("directory not empty")
	ErrFileTooLarge      = errors.New("file too large")
	ErrNoSpace           = errors.New("no space left on device")
	ErrInvalidPath       = errors.New("invalid path")
)

// fileKinds maps the FileError detail of the API to the kinds above.
var fileKinds = map[pb.FileErrorKind]error{
	pb.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND:           ErrNotFound,
	pb.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY:        ErrIsDirectory,
	pb.FileErrorKind_FILE_ERROR_KIND_NOT_DIRECTORY:       ErrNotDirectory,
	pb.FileErrorKind_FILE_ERROR_KIND_PERMISSION_DENIED:   ErrPermissionDenied,
	pb.FileErrorKind_FILE_ERROR_KIND_DIRECTORY_NOT_EMPTY: ErrDirectoryNotEmpty,
	pb.FileErrorKind_FILE_ERROR_KIND_ALREADY_EXISTS:      ErrAlreadyExists,
	pb.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE:      ErrFileTooLarge,
	pb.FileErrorKind_FILE_ERROR_KIND_NO_SPACE:            ErrNoSpace,
	pb.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH:        ErrInvalidPath,
}

// PathError is a filesystem error of the file API: the operation, the path
// inside the sandbox, its kind (one of the Err values above, or nil) and the
// daemon's *Error. errors.Is also matches fs.ErrNotExist, fs.ErrExist and
// fs.ErrPermission, as for local files.
type PathError struct {
	Op   string
	Path string
	Kind error
	Err  error
}

func (e *PathError) Error() string { return e.Err.Error() }

func (e *PathError) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}

// Is matches the io/fs error of the same meaning.
func (e *PathError) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return errors.Is(e.Err, ErrNotFound)
	case fs.ErrExist:
		return errors.Is(e.Err, ErrAlreadyExists)
	case fs.ErrPermission:
		return errors.Is(e.Err, ErrPermissionDenied)
	}
	return false
}

// wrapFile turns an error of the file API into a *PathError when it carries
// a FileError detail, else as wrap does.
func wrapFile(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		fe, ok := v.(*pb.FileError)
		if derr == nil && ok {
			return &PathError{Op: fe.Op, Path: fe.Path, Kind: fileKinds[fe.Kind], Err: wrap(ce)}
		}
	}
	return wrap(ce)
}
