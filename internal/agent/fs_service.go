package agent

import (
	"io/fs"
	"os"
	"sort"
	"syscall"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/api/gen/agent/v1/agentv1connect"
)

// fsService implements FilesystemService (api/agent/v1/files.proto) on the
// agent's own root, which is the sandbox's. Handlers validate paths, call
// the os package and map errors with fsToConnect. It holds no state: every
// call stands alone, and a checkpoint may happen between any two.
type fsService struct {
	// chunk is the most data bytes put in one message.
	chunk int
}

var _ agentv1connect.FilesystemServiceHandler = (*fsService)(nil)

// fsChunk is the size of the data messages the file service sends.
const fsChunk = 256 << 10

func newFSService() *fsService { return &fsService{chunk: fsChunk} }

// infoOf describes the file at p from its Lstat info.
func infoOf(p string, fi fs.FileInfo) *agentv1.FileInfo {
	info := &agentv1.FileInfo{
		Path:          p,
		Size:          fi.Size(),
		Mode:          uint32(fi.Mode().Perm()),
		MtimeUnixNano: fi.ModTime().UnixNano(),
	}
	m := fi.Mode()
	if m&fs.ModeSetuid != 0 {
		info.Mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		info.Mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		info.Mode |= 0o1000
	}
	switch {
	case m.IsRegular():
		info.Type = agentv1.FileType_FILE_TYPE_FILE
	case m.IsDir():
		info.Type = agentv1.FileType_FILE_TYPE_DIRECTORY
	case m&fs.ModeSymlink != 0:
		info.Type = agentv1.FileType_FILE_TYPE_SYMLINK
		info.SymlinkTarget, _ = os.Readlink(p)
	default:
		info.Type = agentv1.FileType_FILE_TYPE_OTHER
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		info.Uid, info.Gid = st.Uid, st.Gid
	}
	return info
}

func sortInfos(l []*agentv1.FileInfo) {
	sort.Slice(l, func(i, j int) bool { return l[i].Path < l[j].Path })
}
