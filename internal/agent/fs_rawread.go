package agent

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/rpcerr"
)

// The raw read: ReadFile without messages, for large files. Each message of
// ReadFile is marshalled, framed and unmarshalled again by the daemon, and
// inside gVisor every copy and goroutine hand-off costs; here the file's
// bytes go into the HTTP/1.1 response as they are. It is a plain HTTP
// endpoint beside the Connect services, behind the same bearer token:
//
//	POST RawReadPath, body: a ReadFileRequest (binary protobuf)
//	200: header RawInfoHeader holds the file's FileInfo (protobuf, base64),
//	     the body is the range's bytes; a failure midway breaks the response
//	     (no final chunk), so a short body is never taken for a whole one.
//	otherwise: Content-Type RawErrorType, the body a RawReadError.
//
// An agent without it answers 404 (the mux's), and the daemon falls back to
// ReadFile. Nothing of it outlives the request: a checkpoint may come
// between any two.
const (
	RawReadPath   = "/sandboxd.agent.v1.RawFiles/Read"
	RawInfoHeader = "Sandboxd-File-Info"
	RawErrorType  = "application/x-sandboxd-raw-error"
)

// rawRead serves RawReadPath. It reads and writes stagedCopyBuf bytes at a
// time, with WriteStaged's buffers.
func (s *fsService) rawRead(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeRawError(w, toConnect(err))
		return
	}
	var req agentv1.ReadFileRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		writeRawError(w, toConnect(errInvalid("raw read: bad request: %v", err)))
		return
	}
	f, info, src, err := openRead(&req)
	if err != nil {
		writeRawError(w, err)
		return
	}
	defer f.Close()
	ib, err := proto.Marshal(info)
	if err != nil {
		writeRawError(w, toConnect(err))
		return
	}
	w.Header().Set(RawInfoHeader, base64.StdEncoding.EncodeToString(ib))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	bp := s.copyBufs.Get().(*[]byte)
	defer s.copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the daemon went away
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return
		}
		if err != nil || r.Context().Err() != nil {
			// Break the response: the daemon must not take what came for
			// the whole file.
			panic(http.ErrAbortHandler)
		}
	}
}

// writeRawError answers a failed raw read with err (a Connect error, or
// made one) as a RawReadError.
func writeRawError(w http.ResponseWriter, err error) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		ce = connect.NewError(connect.CodeUnknown, err)
	}
	out := &agentv1.RawReadError{Code: uint32(ce.Code()), Message: ce.Message()}
	out.FileError, _ = rpcerr.Detail[*agentv1.FileError](ce)
	b, _ := proto.Marshal(out)
	w.Header().Set("Content-Type", RawErrorType)
	w.WriteHeader(http.StatusUnprocessableEntity)
	w.Write(b)
}
