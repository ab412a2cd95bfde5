package agent

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/rpcerr"
)

// stagedFS is a file service whose staging dir is a temporary directory.
func stagedFS(t *testing.T) (*fsService, string) {
	t.Helper()
	s := newFSService()
	s.stageDir = t.TempDir()
	return s, s.stageDir
}

// stage puts data in the staging dir under name.
func stage(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func stagedKind(err error) (agentv1.FileErrorKind, connect.Code) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0, connect.CodeUnknown
	}
	fe, _ := rpcerr.Detail[*agentv1.FileError](ce)
	return fe.GetKind(), ce.Code()
}

// TestWriteStagedSteps writes a file in steps, as the daemon does, in each
// write mode: the steps after the first go on where the earlier stopped.
func TestWriteStagedSteps(t *testing.T) {
	const (
		truncate  = agentv1.WriteMode_WRITE_MODE_TRUNCATE
		appendTo  = agentv1.WriteMode_WRITE_MODE_APPEND
		exclusive = agentv1.WriteMode_WRITE_MODE_EXCLUSIVE
	)
	steps := [][]byte{bytes.Repeat([]byte("a"), 3<<20+7), []byte("bb"), bytes.Repeat([]byte("c"), 1<<20)}
	all := bytes.Join(steps, nil)
	tests := []struct {
		name     string
		mode     agentv1.WriteMode
		existing string // the target's content before, if any
		want     []byte
	}{
		{"truncate a new file", truncate, "", all},
		{"truncate a longer file", truncate, string(bytes.Repeat([]byte("x"), 6<<20)), all},
		{"append", appendTo, "head:", append([]byte("head:"), all...)},
		{"exclusive", exclusive, "", all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := stagedFS(t)
			target := filepath.Join(t.TempDir(), "f")
			if tt.existing != "" {
				os.WriteFile(target, []byte(tt.existing), 0o600)
			}
			h := &agentv1.WriteHeader{Path: target, WriteMode: tt.mode, Mode: 0o640}
			var written int64
			for i, data := range steps {
				name := ".xfer-0" + string(rune('a'+i))
				stage(t, dir, name, data)
				resp, err := s.WriteStaged(context.Background(), connect.NewRequest(&agentv1.WriteStagedRequest{Header: h, Source: name, Written: written}))
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if resp.Msg.BytesWritten != int64(len(data)) {
					t.Fatalf("step %d: wrote %d, want %d", i, resp.Msg.BytesWritten, len(data))
				}
				written += resp.Msg.BytesWritten
				if resp.Msg.Info.GetSize() != int64(len(tt.existing))*boolInt(tt.mode == appendTo)+written {
					t.Errorf("step %d: info says %d bytes", i, resp.Msg.Info.GetSize())
				}
			}
			got, _ := os.ReadFile(target)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %d bytes, want %d", len(got), len(tt.want))
			}
			if fi, _ := os.Stat(target); tt.existing == "" && fi.Mode().Perm() != 0o640 {
				t.Errorf("new file's mode: got %v, want 0640", fi.Mode().Perm())
			}
		})
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func TestWriteStagedErrors(t *testing.T) {
	s, dir := stagedFS(t)
	stage(t, dir, ".xfer-01", bytes.Repeat([]byte("z"), 5000))
	tmp := t.TempDir()
	os.WriteFile(filepath.Join(tmp, "exists"), []byte("old"), 0o644)
	os.Mkdir(filepath.Join(tmp, "dir"), 0o755)
	os.Symlink(filepath.Join(dir, ".xfer-01"), filepath.Join(dir, ".xfer-02"))
	tests := []struct {
		name     string
		req      *agentv1.WriteStagedRequest
		wantCode connect.Code
		wantKind agentv1.FileErrorKind
	}{
		{"exclusive on an existing file", &agentv1.WriteStagedRequest{Source: ".xfer-01",
			Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "exists"), WriteMode: agentv1.WriteMode_WRITE_MODE_EXCLUSIVE}},
			connect.CodeAlreadyExists, agentv1.FileErrorKind_FILE_ERROR_KIND_ALREADY_EXISTS},
		{"a directory", &agentv1.WriteStagedRequest{Source: ".xfer-01", Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "dir")}},
			connect.CodeFailedPrecondition, agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY},
		{"a missing parent", &agentv1.WriteStagedRequest{Source: ".xfer-01", Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "no", "f")}},
			connect.CodeNotFound, agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND},
		{"a later step of a file gone", &agentv1.WriteStagedRequest{Source: ".xfer-01", Written: 10, Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "gone")}},
			connect.CodeNotFound, agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND},
		{"over the size limit", &agentv1.WriteStagedRequest{Source: ".xfer-01", Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "big"), SizeLimit: 4096}},
			connect.CodeResourceExhausted, agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE},
		{"a later step over the size limit", &agentv1.WriteStagedRequest{Source: ".xfer-01", Written: 4000, Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "exists"), SizeLimit: 8192}},
			connect.CodeResourceExhausted, agentv1.FileErrorKind_FILE_ERROR_KIND_FILE_TOO_LARGE},
		{"a relative path", &agentv1.WriteStagedRequest{Source: ".xfer-01", Header: &agentv1.WriteHeader{Path: "rel"}},
			connect.CodeInvalidArgument, agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH},
		{"a source outside the staging dir", &agentv1.WriteStagedRequest{Source: "../etc/passwd", Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "x")}},
			connect.CodeInvalidArgument, 0},
		{"a source that is not a transfer", &agentv1.WriteStagedRequest{Source: "busybox", Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "x")}},
			connect.CodeInvalidArgument, 0},
		{"a source that is a symlink", &agentv1.WriteStagedRequest{Source: ".xfer-02", Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "x")}},
			connect.CodeInvalidArgument, 0},
		{"a missing source", &agentv1.WriteStagedRequest{Source: ".xfer-03", Header: &agentv1.WriteHeader{Path: filepath.Join(tmp, "x")}},
			connect.CodeInvalidArgument, 0},
		{"no header", &agentv1.WriteStagedRequest{Source: ".xfer-01"}, connect.CodeInvalidArgument, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.WriteStaged(context.Background(), connect.NewRequest(tt.req))
			kind, code := stagedKind(err)
			if code != tt.wantCode || kind != tt.wantKind {
				t.Errorf("got %v (code %v, kind %v), want code %v, kind %v", err, code, kind, tt.wantCode, tt.wantKind)
			}
		})
	}
	if got, _ := os.ReadFile(filepath.Join(tmp, "exists")); len(got) > 8192 {
		t.Errorf("the refused later step grew the file to %d bytes", len(got))
	}
	if _, err := os.Stat(filepath.Join(tmp, "x")); err == nil {
		t.Errorf("a refused source created the target")
	}
}

func TestRawRead(t *testing.T) {
	s, _ := stagedFS(t)
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789"), 300000) // 3 MB: several writes
	os.WriteFile(filepath.Join(dir, "f"), data, 0o644)
	srv := httptest.NewServer(http.HandlerFunc(s.rawRead))
	t.Cleanup(srv.Close)
	post := func(req *agentv1.ReadFileRequest) (*http.Response, []byte) {
		b, _ := proto.Marshal(req)
		resp, err := http.Post(srv.URL, "application/proto", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out bytes.Buffer
		out.ReadFrom(resp.Body)
		return resp, out.Bytes()
	}
	t.Run("whole and range", func(t *testing.T) {
		for _, tt := range []struct {
			offset, length int64
			want           []byte
		}{{0, 0, data}, {5, 10, data[5:15]}, {int64(len(data)) - 3, 0, data[len(data)-3:]}, {int64(len(data)) + 10, 0, nil}} {
			resp, body := post(&agentv1.ReadFileRequest{Path: filepath.Join(dir, "f"), Offset: tt.offset, Length: tt.length})
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, tt.want) {
				t.Errorf("offset %d length %d: got %s, %d bytes; want 200, %d bytes", tt.offset, tt.length, resp.Status, len(body), len(tt.want))
			}
			if resp.Header.Get(RawInfoHeader) == "" {
				t.Errorf("no %s header", RawInfoHeader)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			path string
			code connect.Code
			kind agentv1.FileErrorKind
		}{
			{"missing", filepath.Join(dir, "nope"), connect.CodeNotFound, agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND},
			{"directory", dir, connect.CodeFailedPrecondition, agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY},
			{"relative", "f", connect.CodeInvalidArgument, agentv1.FileErrorKind_FILE_ERROR_KIND_INVALID_PATH},
		} {
			resp, body := post(&agentv1.ReadFileRequest{Path: tt.path})
			var re agentv1.RawReadError
			if resp.Header.Get("Content-Type") != RawErrorType || proto.Unmarshal(body, &re) != nil {
				t.Fatalf("%s: got %s, %q; want a RawReadError", tt.name, resp.Status, body)
			}
			if connect.Code(re.Code) != tt.code || re.FileError.GetKind() != tt.kind {
				t.Errorf("%s: got %v, want code %v kind %v", tt.name, &re, tt.code, tt.kind)
			}
		}
	})
}
