package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/api/gen/agent/v1/agentv1connect"
)

// A write through the stream (WriteFile) or in one call (PutFile): the same
// header means the same file, mode and errors.
type writeCall func(ctx context.Context, fc agentv1connect.FilesystemServiceClient, h *agentv1.WriteHeader, data []byte) error

var writeCalls = []struct {
	name string
	call writeCall
}{
	{"WriteFile", func(ctx context.Context, fc agentv1connect.FilesystemServiceClient, h *agentv1.WriteHeader, data []byte) error {
		_, err := writeFile(ctx, fc, h, data)
		return err
	}},
	{"PutFile", func(ctx context.Context, fc agentv1connect.FilesystemServiceClient, h *agentv1.WriteHeader, data []byte) error {
		resp, err := fc.PutFile(ctx, connect.NewRequest(&agentv1.PutFileRequest{Header: h, Data: data}))
		if err == nil && resp.Msg.BytesWritten != int64(len(data)) {
			return connect.NewError(connect.CodeInternal, nil)
		}
		return err
	}},
}

func TestFSWriteModes(t *testing.T) {
	fc := startFS(t)
	ctx := context.Background()
	const (
		truncate  = agentv1.WriteMode_WRITE_MODE_TRUNCATE
		appendTo  = agentv1.WriteMode_WRITE_MODE_APPEND
		exclusive = agentv1.WriteMode_WRITE_MODE_EXCLUSIVE
	)
	tests := []struct {
		name     string
		setup    func(dir string) // may leave "f" in dir
		path     string           // under dir; "f" if empty
		mode     agentv1.WriteMode
		perm     uint32
		parents  bool
		limit    int64
		wantData string
		wantPerm os.FileMode
		wantKind agentv1.FileErrorKind
	}{
		{name: "new file, default mode", wantData: "data", wantPerm: 0o644},
		// The umask (022 or stricter) would take 066 away.
		{name: "new file, mode beyond the umask", perm: 0o666, wantData: "data", wantPerm: 0o666},
		{name: "existing file keeps its mode", setup: existing(0o600, "old content"), perm: 0o644, wantData: "data", wantPerm: 0o600},
		{name: "append", setup: existing(0o640, "old;"), mode: appendTo, wantData: "old;data", wantPerm: 0o640},
		{name: "append creates", mode: appendTo, perm: 0o600, wantData: "data", wantPerm: 0o600},
		{name: "exclusive creates", mode: exclusive, perm: 0o700, wantData: "data", wantPerm: 0o700},
		{name: "exclusive of an existing file", setup: existing(0o644, "old"), mode: exclusive,
			wantKind: agentv1.FileErrorKind_FILE_ERROR_KIND_ALREADY_EXISTS},
		{name: "missing parents made", path: "a/b/f", parents: true, wantData: "data", wantPerm: 0o644},
		{name: "missing parents", path: "a/b/f", wantKind: agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND},
		{name: "over the limit", limit: 3, wantKind: agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE},
		{name: "append over the limit", setup: existing(0o644, "old"), mode: appendTo, limit: 6,
			wantKind: agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE},
		{name: "within the limit", setup: existing(0o644, "much longer old content"), mode: truncate, limit: 4, wantData: "data", wantPerm: 0o644},
		{name: "a directory", setup: func(dir string) { os.Mkdir(filepath.Join(dir, "f"), 0o755) },
			wantKind: agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY},
		{name: "through a dangling symlink", setup: func(dir string) { os.Symlink(filepath.Join(dir, "target"), filepath.Join(dir, "f")) },
			wantData: "data", wantPerm: 0o644 &^ umask()},
	}
	for _, wc := range writeCalls {
		for _, tt := range tests {
			t.Run(wc.name+"/"+tt.name, func(t *testing.T) {
				dir := t.TempDir()
				if tt.setup != nil {
					tt.setup(dir)
				}
				p := filepath.Join(dir, "f")
				if tt.path != "" {
					p = filepath.Join(dir, tt.path)
				}
				err := wc.call(ctx, fc, &agentv1.WriteHeader{Path: p, WriteMode: tt.mode, Mode: tt.perm, Parents: tt.parents, SizeLimit: tt.limit}, []byte("data"))
				if tt.wantKind != 0 {
					if kind, _ := kindOf(err); kind != tt.wantKind {
						t.Fatalf("got %v (kind %v), want kind %v", err, kind, tt.wantKind)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(p)
				fi, _ := os.Stat(p)
				if string(got) != tt.wantData || fi.Mode().Perm() != tt.wantPerm {
					t.Errorf("got %q mode %o, want %q mode %o", got, fi.Mode().Perm(), tt.wantData, tt.wantPerm)
				}
			})
		}
	}
}

func existing(perm os.FileMode, content string) func(dir string) {
	return func(dir string) {
		p := filepath.Join(dir, "f")
		os.WriteFile(p, []byte(content), perm)
		os.Chmod(p, perm)
	}
}

// umask returns the process's umask (the test's process is the agent's).
func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

func TestFSGetFile(t *testing.T) {
	fc := startFS(t)
	ctx := context.Background()
	dir := t.TempDir()
	small := bytes.Repeat([]byte("0123456789"), 100)
	os.WriteFile(filepath.Join(dir, "small"), small, 0o640)
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "large"), make([]byte, 5000), 0o644)
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	tests := []struct {
		name         string
		path         string
		max          int64
		wantComplete bool
		wantData     []byte // nil: any
		wantSome     bool   // some data, whatever it is
		wantType     agentv1.FileType
		wantKind     agentv1.FileErrorKind
	}{
		{name: "small", path: dir + "/small", max: 4096, wantComplete: true, wantData: small, wantType: agentv1.FileType_FILE_TYPE_FILE},
		{name: "exactly the max", path: dir + "/small", max: int64(len(small)), wantComplete: true, wantData: small, wantType: agentv1.FileType_FILE_TYPE_FILE},
		{name: "empty", path: dir + "/empty", max: 4096, wantComplete: true, wantType: agentv1.FileType_FILE_TYPE_FILE},
		{name: "larger than the max", path: dir + "/large", max: 4096, wantType: agentv1.FileType_FILE_TYPE_FILE},
		{name: "not a regular file", path: "/dev/null", max: 4096, wantType: agentv1.FileType_FILE_TYPE_OTHER},
		// Its stat says 0 bytes: it is read to its end all the same.
		{name: "a /proc file", path: "/proc/self/limits", max: 1 << 20, wantComplete: true, wantSome: true, wantType: agentv1.FileType_FILE_TYPE_FILE},
		{name: "a directory", path: dir + "/d", wantKind: agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY},
		{name: "missing", path: dir + "/nope", wantKind: agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND},
		{name: "relative", path: "etc/passwd", wantKind: agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := fc.GetFile(ctx, connect.NewRequest(&agentv1.GetFileRequest{Path: tt.path, MaxSize: tt.max}))
			if tt.wantKind != 0 {
				if kind, _ := kindOf(err); kind != tt.wantKind {
					t.Fatalf("got %v (kind %v), want kind %v", err, kind, tt.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := resp.Msg
			if m.Complete != tt.wantComplete || m.Info.GetType() != tt.wantType {
				t.Fatalf("got complete %v type %v, want %v %v", m.Complete, m.Info.GetType(), tt.wantComplete, tt.wantType)
			}
			if !tt.wantComplete && len(m.Data) != 0 {
				t.Errorf("got %d bytes of an incomplete file, want none", len(m.Data))
			}
			if tt.wantData != nil && !bytes.Equal(m.Data, tt.wantData) {
				t.Errorf("got %d bytes, want the %d of the file", len(m.Data), len(tt.wantData))
			}
			if tt.wantSome && len(m.Data) == 0 {
				t.Errorf("got no bytes, want the file's")
			}
		})
	}
}
