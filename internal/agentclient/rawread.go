package agentclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agent"
)

// ErrNoRawRead is returned by ReadRaw when the agent has no raw read (an
// agent older than it, restored from a snapshot): use ReadFile.
var ErrNoRawRead = errors.New("agent has no raw read")

// ReadRaw reads a file or a range of it as req says through the agent's raw
// read (agent.RawReadPath): the file's info, and a body of its bytes that
// the caller must close. A body that ends early ends with an error, never
// with io.EOF. Errors before the body are Connect errors as ReadFile's
// (with the agent's FileError detail), or ErrNoRawRead.
func (c *Client) ReadRaw(ctx context.Context, req *agentv1.ReadFileRequest) (*agentv1.FileInfo, io.ReadCloser, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, nil, err
	}
	c.mu.RLock()
	tr, addr := c.tr, c.addr
	c.mu.RUnlock()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+agent.RawReadPath, bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	hr.Header.Set("Authorization", "Bearer "+c.token)
	hr.Header.Set("Content-Type", "application/proto")
	resp, err := tr.RoundTrip(hr)
	if err != nil {
		return nil, nil, connect.NewError(connect.CodeUnavailable, err)
	}
	if resp.StatusCode == http.StatusOK {
		info := &agentv1.FileInfo{}
		ib, err := base64.StdEncoding.DecodeString(resp.Header.Get(agent.RawInfoHeader))
		if err == nil {
			err = proto.Unmarshal(ib, info)
		}
		if err != nil {
			resp.Body.Close()
			return nil, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("raw read: bad file info: %w", err))
		}
		return info, resp.Body, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.Header.Get("Content-Type") != agent.RawErrorType {
		if resp.StatusCode == http.StatusNotFound {
			return nil, nil, ErrNoRawRead
		}
		return nil, nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("raw read: HTTP %s", resp.Status))
	}
	var re agentv1.RawReadError
	if err := proto.Unmarshal(body, &re); err != nil {
		return nil, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("raw read: bad error: %w", err))
	}
	return nil, nil, rawError(&re)
}

// rawError turns a RawReadError back into the Connect error the agent's
// ReadFile would have answered.
func rawError(re *agentv1.RawReadError) error {
	ce := connect.NewWireError(connect.Code(re.Code), errors.New(re.Message))
	if re.FileError != nil {
		if d, err := connect.NewErrorDetail(re.FileError); err == nil {
			ce.AddDetail(d)
		}
	}
	return ce
}
