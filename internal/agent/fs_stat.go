package agent

import (
	"context"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
)

// Stat describes one path.
func (s *fsService) Stat(ctx context.Context, req *connect.Request[agentv1.StatRequest]) (*connect.Response[agentv1.StatResponse], error) {
	p, err := cleanPath("stat", req.Msg.Path)
	if err != nil {
		return nil, fsToConnect("stat", req.Msg.Path, err)
	}
	stat := os.Lstat
	if req.Msg.FollowSymlinks {
		stat = os.Stat
	}
	fi, err := stat(p)
	if err != nil {
		return nil, fsToConnect("stat", p, err)
	}
	info := infoOf(p, fi)
	if req.Msg.FollowSymlinks && info.Type != agentv1.FileType_FILE_TYPE_SYMLINK {
		info.SymlinkTarget = ""
	}
	return connect.NewResponse(&agentv1.StatResponse{Info: info}), nil
}

// ListDir lists a directory, recursively if asked, without following
// symlinks.
func (s *fsService) ListDir(ctx context.Context, req *connect.Request[agentv1.ListDirRequest]) (*connect.Response[agentv1.ListDirResponse], error) {
	p, err := cleanPath("list", req.Msg.Path)
	if err != nil {
		return nil, fsToConnect("list", req.Msg.Path, err)
	}
	var out []*agentv1.FileInfo
	if !req.Msg.Recursive {
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, fsToConnect("list", p, err)
		}
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			out = append(out, infoOf(path.Join(p, e.Name()), fi))
		}
	} else {
		// Refuse a file at once, as ReadDir does.
		if fi, err := os.Lstat(p); err != nil {
			return nil, fsToConnect("list", p, err)
		} else if !fi.IsDir() {
			return nil, fsToConnect("list", p, &fs.PathError{Op: "list", Path: p, Err: errNotDir})
		}
		err := filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if q == p {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil // removed meanwhile
			}
			out = append(out, infoOf(q, fi))
			return nil
		})
		if err != nil {
			return nil, fsToConnect("list", p, err)
		}
	}
	sortInfos(out)
	return connect.NewResponse(&agentv1.ListDirResponse{Entries: out}), nil
}
