package agent

import (
	"io/fs"
	"os"
	"sort"
	"sync"
	"syscall"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/api/gen/agent/v1/agentv1connect"
)

// fsService implements FilesystemService (api/agent/v1/files.proto) on the
// agent's own root, which is the sandbox's. Handlers validate paths, call
// the os package (the syscalls themselves where a small file's latency is
// at stake: fs_put.go, fs_get.go) and map errors with fsToConnect. It holds no state but reusable buffers: every
// call stands alone, and a checkpoint may happen between any two.
type fsService struct {
	// chunk is the most data bytes put in one message.
	chunk int
	// stageDir is where the daemon's staging dir appears (StageDir).
	stageDir string
	// copyBufs holds WriteStaged's copy buffers (*[]byte of stagedCopyBuf).
	copyBufs *sync.Pool
}

var _ agentv1connect.FilesystemServiceHandler = (*fsService)(nil)

// fsChunk is the size of the data messages the file service sends.
const fsChunk = 256 << 10

func newFSService() *fsService {
	return &fsService{chunk: fsChunk, stageDir: StageDir, copyBufs: &sync.Pool{New: func() any {
		b := make([]byte, stagedCopyBuf)
		return &b
	}}}
}

// infoOf describes the file at p from its Lstat info.
func infoOf(p string, fi fs.FileInfo) *agentv1.FileInfo {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return infoFromStat(p, st)
	}
	info := &agentv1.FileInfo{
		Path:          p,
		Size:          fi.Size(),
		Mode:          unixMode(fi.Mode()),
		MtimeUnixNano: fi.ModTime().UnixNano(),
	}
	switch m := fi.Mode(); {
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
	return info
}

// infoFromStat describes the file at p from its (l)stat.
func infoFromStat(p string, st *syscall.Stat_t) *agentv1.FileInfo {
	info := &agentv1.FileInfo{
		Path:          p,
		Size:          st.Size,
		Mode:          st.Mode & 0o7777,
		MtimeUnixNano: st.Mtim.Nano(),
		Uid:           st.Uid,
		Gid:           st.Gid,
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		info.Type = agentv1.FileType_FILE_TYPE_FILE
	case syscall.S_IFDIR:
		info.Type = agentv1.FileType_FILE_TYPE_DIRECTORY
	case syscall.S_IFLNK:
		info.Type = agentv1.FileType_FILE_TYPE_SYMLINK
		info.SymlinkTarget, _ = os.Readlink(p)
	default:
		info.Type = agentv1.FileType_FILE_TYPE_OTHER
	}
	return info
}

// unixMode turns an fs.FileMode's permission and special bits into unix
// mode bits (07777).
func unixMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func sortInfos(l []*agentv1.FileInfo) {
	sort.Slice(l, func(i, j int) bool { return l[i].Path < l[j].Path })
}
