package sandboxd

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// Files is the file API of one sandbox: files inside it, read and written
// through its agent, so it works in any image. Paths are absolute and
// resolve inside the sandbox's own root ("..", and symlinks, cannot lead out
// of it). Filesystem errors are *PathError values: test them with errors.Is
// against ErrNotFound, ErrIsDirectory, ErrNotDirectory, ErrPermissionDenied,
// ErrDirectoryNotEmpty, ErrAlreadyExists, ErrFileTooLarge (or fs.ErrNotExist,
// fs.ErrExist, fs.ErrPermission). Safe for concurrent use.
type Files struct {
	sb *Sandbox
}

// Files returns the file API of the sandbox.
func (s *Sandbox) Files() *Files { return &Files{sb: s} }

// FileType is the type of a file.
type FileType string

const (
	TypeFile      FileType = "file"
	TypeDirectory FileType = "directory"
	TypeSymlink   FileType = "symlink"
	TypeOther     FileType = "other" // device, fifo, socket
)

// FileInfo describes a file inside a sandbox.
type FileInfo struct {
	Path string // absolute
	Type FileType
	Size int64
	// Mode holds the permission bits and fs.ModeSetuid, fs.ModeSetgid,
	// fs.ModeSticky (not the type bits: see Type).
	Mode          fs.FileMode
	ModTime       time.Time
	SymlinkTarget string // for symlinks
	UID, GID      int
}

// Name returns the last element of the path.
func (fi FileInfo) Name() string { return path.Base(fi.Path) }

// IsDir reports whether the file is a directory.
func (fi FileInfo) IsDir() bool { return fi.Type == TypeDirectory }

var fileTypes = map[pb.FileType]FileType{
	pb.FileType_FILE_TYPE_FILE:      TypeFile,
	pb.FileType_FILE_TYPE_DIRECTORY: TypeDirectory,
	pb.FileType_FILE_TYPE_SYMLINK:   TypeSymlink,
	pb.FileType_FILE_TYPE_OTHER:     TypeOther,
}

func fileInfoFromPB(i *pb.FileInfo) FileInfo {
	if i == nil {
		return FileInfo{}
	}
	return FileInfo{
		Path: i.Path, Type: fileTypes[i.Type], Size: i.Size, Mode: modeFromUnix(i.Mode),
		ModTime: time.Unix(0, i.MtimeUnixNano), SymlinkTarget: i.SymlinkTarget, UID: int(i.Uid), GID: int(i.Gid),
	}
}

// modeFromUnix turns unix mode bits (07777) into an fs.FileMode.
func modeFromUnix(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// modeToUnix is the inverse of modeFromUnix.
func modeToUnix(mode fs.FileMode) uint32 {
	m := uint32(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// Stat describes the file at p; a symlink is described, not followed.
func (f *Files) Stat(ctx context.Context, p string) (FileInfo, error) {
	return f.stat(ctx, p, false)
}

// StatFollow is Stat following a final symlink.
func (f *Files) StatFollow(ctx context.Context, p string) (FileInfo, error) {
	return f.stat(ctx, p, true)
}

func (f *Files) stat(ctx context.Context, p string, follow bool) (FileInfo, error) {
	resp, err := f.sb.c.files.Stat(ctx, connect.NewRequest(&pb.StatRequest{SandboxId: f.sb.ID, Path: p, FollowSymlinks: follow}))
	if err != nil {
		return FileInfo{}, wrapFile(err)
	}
	return fileInfoFromPB(resp.Msg.Info), nil
}

// Exists reports whether something (of any type, a dangling symlink
// included) exists at p.
func (f *Files) Exists(ctx context.Context, p string) (bool, error) {
	_, err := f.Stat(ctx, p)
	if errors.Is(err, ErrNotFound) {
		var pe *PathError
		if errors.As(err, &pe) { // not a missing sandbox
			return false, nil
		}
	}
	return err == nil, err
}

// ReadDir lists the directory p, sorted by path.
func (f *Files) ReadDir(ctx context.Context, p string) ([]FileInfo, error) {
	return f.List(ctx, p, false)
}

// List lists the directory p, with recursive its whole tree (symlinks are
// listed, not followed), sorted by path.
func (f *Files) List(ctx context.Context, p string, recursive bool) ([]FileInfo, error) {
	resp, err := f.sb.c.files.ListDir(ctx, connect.NewRequest(&pb.ListDirRequest{SandboxId: f.sb.ID, Path: p, Recursive: recursive}))
	if err != nil {
		return nil, wrapFile(err)
	}
	out := make([]FileInfo, 0, len(resp.Msg.Entries))
	for _, e := range resp.Msg.Entries {
		out = append(out, fileInfoFromPB(e))
	}
	return out, nil
}

// Mkdir makes the directory p with mode (0 means 0755); its parent must exist.
func (f *Files) Mkdir(ctx context.Context, p string, mode fs.FileMode) error {
	return f.mkdir(ctx, p, mode, false)
}

// MkdirAll makes the directory p and its missing parents (0755); it is no
// error if p is a directory already.
func (f *Files) MkdirAll(ctx context.Context, p string) error {
	return f.mkdir(ctx, p, 0, true)
}

func (f *Files) mkdir(ctx context.Context, p string, mode fs.FileMode, parents bool) error {
	_, err := f.sb.c.files.MakeDir(ctx, connect.NewRequest(&pb.MakeDirRequest{
		SandboxId: f.sb.ID, Path: p, Parents: parents, Mode: modeToUnix(mode)}))
	return wrapFile(err)
}

// Remove removes a file, a symlink or an empty directory.
func (f *Files) Remove(ctx context.Context, p string) error {
	_, err := f.sb.c.files.Remove(ctx, connect.NewRequest(&pb.RemoveRequest{SandboxId: f.sb.ID, Path: p}))
	return wrapFile(err)
}

// RemoveAll removes p and everything beneath it; a missing p is no error.
func (f *Files) RemoveAll(ctx context.Context, p string) error {
	_, err := f.sb.c.files.Remove(ctx, connect.NewRequest(&pb.RemoveRequest{SandboxId: f.sb.ID, Path: p, Recursive: true}))
	return wrapFile(err)
}

// Rename moves from to to, replacing a file there, as rename(2) does.
func (f *Files) Rename(ctx context.Context, from, to string) error {
	_, err := f.sb.c.files.Rename(ctx, connect.NewRequest(&pb.RenameRequest{SandboxId: f.sb.ID, From: from, To: to}))
	return wrapFile(err)
}
