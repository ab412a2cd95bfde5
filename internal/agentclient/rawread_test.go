package agentclient_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/agentclient"
	"github.com/sandboxd/sandboxd/internal/rpcerr"
)

func TestReadRaw(t *testing.T) {
	ctx := testCtx(t)
	c, _ := agenttest.Start(t, agent.Config{}, agent.Options{})
	dir := t.TempDir()
	data := bytes.Repeat([]byte("raw bytes "), 500000)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
	t.Run("file", func(t *testing.T) {
		info, body, err := c.ReadRaw(ctx, &agentv1.ReadFileRequest{Path: p})
		if err != nil {
			t.Fatal(err)
		}
		defer body.Close()
		got, err := io.ReadAll(body)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("got %d bytes, %v; want %d", len(got), err, len(data))
		}
		if info.Path != p || info.Size != int64(len(data)) || info.Mode != 0o640 || info.Type != agentv1.FileType_FILE_TYPE_FILE {
			t.Errorf("info: got %v", info)
		}
	})
	t.Run("errors as ReadFile's", func(t *testing.T) {
		for _, tt := range []struct {
			path string
			code connect.Code
			kind agentv1.FileErrorKind
		}{
			{filepath.Join(dir, "nope"), connect.CodeNotFound, agentv1.FileErrorKind_FILE_ERROR_KIND_NOT_FOUND},
			{dir, connect.CodeFailedPrecondition, agentv1.FileErrorKind_FILE_ERROR_KIND_IS_DIRECTORY},
		} {
			_, _, err := c.ReadRaw(ctx, &agentv1.ReadFileRequest{Path: tt.path})
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != tt.code || !connect.IsWireError(ce) {
				t.Fatalf("%s: got %v, want a wire error with code %v", tt.path, err, tt.code)
			}
			fe, _ := rpcerr.Detail[*agentv1.FileError](ce)
			if kind := fe.GetKind(); kind != tt.kind {
				t.Errorf("%s: detail kind %v, want %v", tt.path, kind, tt.kind)
			}
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		bad := agentclient.New(c.Addr(), "wrong")
		defer bad.Close()
		_, _, err := bad.ReadRaw(ctx, &agentv1.ReadFileRequest{Path: p})
		if err == nil || errors.Is(err, agentclient.ErrNoRawRead) {
			t.Errorf("got %v, want a refusal", err)
		}
	})
}

// An agent older than the raw read answers 404: ErrNoRawRead.
func TestReadRawMissing(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	c := agentclient.New(strings.TrimPrefix(srv.URL, "http://"), "t")
	defer c.Close()
	if _, _, err := c.ReadRaw(testCtx(t), &agentv1.ReadFileRequest{Path: "/x"}); !errors.Is(err, agentclient.ErrNoRawRead) {
		t.Errorf("got %v, want ErrNoRawRead", err)
	}
}
