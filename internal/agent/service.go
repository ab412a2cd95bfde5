package agent

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/sandboxd/sandboxd/api/gen/agent/v1/agentv1connect"
)

// service implements AgentService: handlers decode, validate, call the
// Agent and map errors, nothing else.
type service struct {
	a      *Agent
	mounts *imageMounts
}

var _ agentv1connect.AgentServiceHandler = (*service)(nil)

// Handler returns the HTTP handler serving AgentService. Every request must
// carry "Authorization: Bearer <token>" or is refused with Unauthenticated.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	// No compression: the link is a local veth and output is often binary;
	// gzip would only cost CPU inside the sandbox.
	mux.Handle(agentv1connect.NewAgentServiceHandler(&service{a: a, mounts: a.mounts}, connect.WithCompression("gzip", nil, nil)))
	fss := newFSService()
	mux.Handle(agentv1connect.NewFilesystemServiceHandler(fss, connect.WithCompression("gzip", nil, nil)))
	mux.HandleFunc(RawReadPath, fss.rawRead)
	return requireToken(a.cfg.Token, mux)
}

// requireToken refuses requests without the bearer token, comparing in
// constant time.
func requireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			errw.Write(w, r, connect.NewError(connect.CodeUnauthenticated, errors.New("missing or wrong bearer token")))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Serve serves AgentService on ln over HTTP/1.1 and HTTP/2 cleartext until
// ctx ends, then closes ln and every connection. It does not Close the agent.
// The listener stays open across a gVisor checkpoint/restore.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           a.Handler(),
		Protocols:         &protos,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 4096},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          newErrorLog(a.log),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
