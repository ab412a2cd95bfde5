package agent_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/api/gen/agent/v1/agentv1connect"
	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/rpcerr"
)

// The agent's file API, run on the host: paths are the host's, under a
// temporary directory. Needs no root.

func startFS(t *testing.T) agentv1connect.FilesystemServiceClient {
	t.Helper()
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	return c.Files()
}

// kindOf returns the FileError kind and code of err.
func kindOf(err error) (agentv1.FileErrorKind, connect.Code) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0, connect.CodeUnknown
	}
	fe, _ := rpcerr.Detail[*agentv1.FileError](ce)
	return fe.GetKind(), ce.Code()
}

func writeFile(ctx context.Context, fc agentv1connect.FilesystemServiceClient, h *agentv1.WriteHeader, chunks ...[]byte) (*agentv1.WriteFileResponse, error) {
	s := fc.WriteFile(ctx)
	s.Send(&agentv1.WriteFileRequest{Msg: &agentv1.WriteFileRequest_Header{Header: h}})
	for _, c := range chunks {
		if err := s.Send(&agentv1.WriteFileRequest{Msg: &agentv1.WriteFileRequest_Data{Data: c}}); err != nil {
			break
		}
	}
	resp, err := s.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func readFile(ctx context.Context, fc agentv1connect.FilesystemServiceClient, req *agentv1.ReadFileRequest) ([]byte, error) {
	s, err := fc.ReadFile(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var b bytes.Buffer
	for s.Receive() {
		b.Write(s.Msg().Data)
	}
	return b.Bytes(), s.Err()
}

func TestFSErrors(t *testing.T) {
	fc := startFS(t)
	ctx := context.Background()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(dir, "d", "sub"), 0o755)
	tests := []struct {
		name string
		call func() error
		kind agentv1.FileErrorKind
		code connect.Code
	}{
		{"stat missing", func() error {
			_, err := fc.Stat(ctx, connect.NewRequest(&agentv1.StatRequest{Path: dir + "/nope"}))
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND, connect.CodeNotFound},
		{"relative path", func() error {
			_, err := fc.Stat(ctx, connect.NewRequest(&agentv1.StatRequest{Path: "etc/passwd"}))
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH, connect.CodeInvalidArgument},
		{"read a directory", func() error {
			_, err := readFile(ctx, fc, &agentv1.ReadFileRequest{Path: dir + "/d"})
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY, connect.CodeFailedPrecondition},
		{"list a file", func() error {
			_, err := fc.ListDir(ctx, connect.NewRequest(&agentv1.ListDirRequest{Path: dir + "/f"}))
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_DIRECTORY, connect.CodeFailedPrecondition},
		{"remove a full directory", func() error {
			_, err := fc.Remove(ctx, connect.NewRequest(&agentv1.RemoveRequest{Path: dir + "/d"}))
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_DIRECTORY_NOT_EMPTY, connect.CodeFailedPrecondition},
		{"mkdir existing", func() error {
			_, err := fc.MakeDir(ctx, connect.NewRequest(&agentv1.MakeDirRequest{Path: dir + "/d"}))
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_ALREADY_EXISTS, connect.CodeAlreadyExists},
		{"exclusive create of existing", func() error {
			_, err := writeFile(ctx, fc, &agentv1.WriteHeader{Path: dir + "/f", WriteMode: agentv1.WriteMode_WRITE_MODE_EXCLUSIVE}, []byte("y"))
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_ALREADY_EXISTS, connect.CodeAlreadyExists},
		{"write past the limit", func() error {
			_, err := writeFile(ctx, fc, &agentv1.WriteHeader{Path: dir + "/big", SizeLimit: 10}, make([]byte, 8), make([]byte, 8))
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE, connect.CodeResourceExhausted},
		{"write through a file", func() error {
			_, err := writeFile(ctx, fc, &agentv1.WriteHeader{Path: dir + "/f/x"}, []byte("y"))
			return err
		}, agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_DIRECTORY, connect.CodeFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, code := kindOf(tt.call())
			if kind != tt.kind || code != tt.code {
				t.Errorf("got kind %v code %v, want %v %v", kind, code, tt.kind, tt.code)
			}
		})
	}
}

func TestFSWriteReadRange(t *testing.T) {
	fc := startFS(t)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "sub", "f")
	data := make([]byte, 3<<20+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	resp, err := writeFile(ctx, fc, &agentv1.WriteHeader{Path: p, Parents: true, Mode: 0o600}, data[:1<<20], data[1<<20:])
	if err != nil {
		t.Fatal(err)
	}
	if resp.BytesWritten != int64(len(data)) || resp.Info.Mode != 0o600 {
		t.Errorf("got %d bytes mode %o, want %d 600", resp.BytesWritten, resp.Info.Mode, len(data))
	}
	got, err := readFile(ctx, fc, &agentv1.ReadFileRequest{Path: p})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %d bytes, err %v; want %d equal bytes", len(got), err, len(data))
	}
	got, err = readFile(ctx, fc, &agentv1.ReadFileRequest{Path: p, Offset: 1000, Length: 5})
	if err != nil || !bytes.Equal(got, data[1000:1005]) {
		t.Errorf("range: got %v, %v", got, err)
	}
	if _, err := writeFile(ctx, fc, &agentv1.WriteHeader{Path: p, WriteMode: agentv1.WriteMode_WRITE_MODE_APPEND}, []byte("tail")); err != nil {
		t.Fatal(err)
	}
	got, _ = readFile(ctx, fc, &agentv1.ReadFileRequest{Path: p, Offset: int64(len(data))})
	if string(got) != "tail" {
		t.Errorf("append: got %q, want tail", got)
	}
}

func TestFSWatch(t *testing.T) {
	fc := startFS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	s, err := fc.Watch(ctx, connect.NewRequest(&agentv1.WatchRequest{Path: dir, Recursive: true, TimeoutMs: 5000}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Receive() || s.Msg().Type != agentv1.WatchEventType_WATCH_EVENT_TYPE_READY {
		t.Fatalf("first event: %v %v", s.Msg(), s.Err())
	}
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	time.Sleep(50 * time.Millisecond) // let the new directory's watch land
	os.WriteFile(filepath.Join(dir, "d", "f"), []byte("x"), 0o644)
	os.Rename(filepath.Join(dir, "d", "f"), filepath.Join(dir, "g"))
	os.Remove(filepath.Join(dir, "g"))
	want := []string{"CREATE " + dir + "/d", "CREATE " + dir + "/d/f", "MODIFY " + dir + "/d/f",
		"RENAME " + dir + "/d/f", "CREATE " + dir + "/g", "REMOVE " + dir + "/g"}
	var got []string
	for len(got) < len(want) && s.Receive() {
		m := s.Msg()
		got = append(got, m.Type.String()[len("WATCH_EVENT_TYPE_"):]+" "+m.Path)
	}
	if len(got) != len(want) {
		t.Fatalf("got %q (err %v), want %q", got, s.Err(), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: got %q, want %q", i, got[i], want[i])
		}
	}
}
