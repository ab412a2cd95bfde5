// Package server serves sandboxd's public API over ConnectRPC: it decodes and
// checks requests, calls the domain packages, and maps their error classes to
// RPC codes. Only cmd/sandboxd imports it.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"

	"connectrpc.com/connect"

	"github.com/sandboxd/sandboxd/api/gen/sandboxd/v1/sandboxdv1connect"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/rpcerr"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/secret"
)

// ImageLister is what the image service needs.
type ImageLister interface {
	ListImages(ctx context.Context) ([]ImageView, error)
	GetImage(ctx context.Context, ref string) (ImageView, error)
}

// Server holds the services' collaborators.
type Server struct {
	Sandboxes *sandbox.Manager
	Secrets   *secret.Store
	Images    ImageLister
	Snapshots *sandbox.Snapshots
	Token     string
	// FileSizeLimit caps the size of files written through the file API; 0: none.
	FileSizeLimit int64
}

// Handler returns the HTTP handler of every service, behind bearer-token auth.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// No gzip: the API's messages are small or already dense (file
	// contents), and compressing them costs more time than loopback saves.
	opts := connect.WithHandlerOptions(connect.WithInterceptors(authInterceptor(s.Token)),
		connect.WithCompression("gzip", nil, nil))
	mux.Handle(sandboxdv1connect.NewSandboxServiceHandler(&sandboxService{s}, opts))
	mux.Handle(sandboxdv1connect.NewExecServiceHandler(&execService{s}, opts))
	mux.Handle(sandboxdv1connect.NewSecretServiceHandler(&secretService{s}, opts))
	mux.Handle(sandboxdv1connect.NewImageServiceHandler(&imageService{s}, opts))
	mux.Handle(sandboxdv1connect.NewFileServiceHandler(&fileService{s}, opts))
	if s.Snapshots != nil {
		mux.Handle(sandboxdv1connect.NewSnapshotServiceHandler(&snapshotService{s}, opts))
	}
	return mux
}

func authInterceptor(token string) connect.Interceptor {
	return &auth{want: []byte("Bearer " + token)}
}

type auth struct{ want []byte }

func (a *auth) check(h http.Header) error {
	if subtle.ConstantTimeCompare([]byte(h.Get("Authorization")), a.want) != 1 {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("missing or wrong bearer token"))
	}
	return nil
}

func (a *auth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.check(req.Header()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a *auth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *auth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := a.check(conn.RequestHeader()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// ClassHeader is the error metadata key naming a class that has no RPC code
// of its own ("expired").
const ClassHeader = "Sandboxd-Class"

// toRPC maps an error of the domain to an RPC error, keeping its message.
// Errors that already carry an RPC code (from the agent) keep it.
func toRPC(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) && errdefs.Class(err) == errdefs.ErrExpired {
		// The metadata lets clients tell "expired" from other failed
		// preconditions (the SDK's ErrExpired).
		ce := connect.NewError(connect.CodeFailedPrecondition, err)
		ce.Meta().Set(ClassHeader, "expired")
		return ce
	}
	return rpcerr.ToConnect(err)
}
