package agent

import (
	"context"
	"io/fs"
	"os"
	"syscall"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

var errNotDir = syscall.ENOTDIR

// MakeDir makes a directory, with its parents if asked. The mode is applied
// as given (not masked by the umask).
func (s *fsService) MakeDir(ctx context.Context, req *connect.Request[agentv1.MakeDirRequest]) (*connect.Response[agentv1.MakeDirResponse], error) {
	p, err := cleanPath("mkdir", req.Msg.Path)
	if err != nil {
		return nil, fsToConnect("mkdir", req.Msg.Path, err)
	}
	mode := fs.FileMode(req.Msg.Mode & 0o7777)
	if mode == 0 {
		mode = 0o755
	}
	if req.Msg.Parents {
		if fi, err := os.Stat(p); err == nil {
			if !fi.IsDir() {
				return nil, fsToConnect("mkdir", p, syscall.EEXIST)
			}
			return connect.NewResponse(&agentv1.MakeDirResponse{}), nil
		}
		err = os.MkdirAll(p, 0o755)
	} else {
		err = os.Mkdir(p, mode)
	}
	if err != nil {
		return nil, fsToConnect("mkdir", p, err)
	}
	if err := os.Chmod(p, goMode(uint32(mode))); err != nil {
		return nil, fsToConnect("mkdir", p, err)
	}
	return connect.NewResponse(&agentv1.MakeDirResponse{}), nil
}

// Remove removes a file or an empty directory; with recursive, a whole tree
// (a missing path is then no error).
func (s *fsService) Remove(ctx context.Context, req *connect.Request[agentv1.RemoveRequest]) (*connect.Response[agentv1.RemoveResponse], error) {
	p, err := cleanPath("remove", req.Msg.Path)
	if err != nil {
		return nil, fsToConnect("remove", req.Msg.Path, err)
	}
	if p == "/" {
		return nil, fsToConnect("remove", p, errInvalid("refusing to remove /"))
	}
	if req.Msg.Recursive {
		err = os.RemoveAll(p)
	} else {
		err = os.Remove(p)
	}
	if err != nil {
		return nil, fsToConnect("remove", p, err)
	}
	return connect.NewResponse(&agentv1.RemoveResponse{}), nil
}

// Rename moves from to to, replacing a file (or empty directory) at to, as
// rename(2) does.
func (s *fsService) Rename(ctx context.Context, req *connect.Request[agentv1.RenameRequest]) (*connect.Response[agentv1.RenameResponse], error) {
	from, err := cleanPath("rename", req.Msg.From)
	if err != nil {
		return nil, fsToConnect("rename", req.Msg.From, err)
	}
	to, err := cleanPath("rename", req.Msg.To)
	if err != nil {
		return nil, fsToConnect("rename", req.Msg.To, err)
	}
	if from == "/" || to == "/" {
		return nil, fsToConnect("rename", "/", errInvalid("refusing to rename /"))
	}
	if err := os.Rename(from, to); err != nil {
		// LinkError carries no single path: name the source.
		return nil, fsToConnect("rename", from, err)
	}
	return connect.NewResponse(&agentv1.RenameResponse{}), nil
}

// goMode turns unix mode bits (07777) into an fs.FileMode.
func goMode(m uint32) fs.FileMode {
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
