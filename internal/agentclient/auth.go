package agentclient

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
)

// bearer is an interceptor adding "Authorization: Bearer <token>" to every
// call, unary and streaming.
type bearer string

var _ connect.Interceptor = bearer("")

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		b.set(req.Header())
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		b.set(conn.RequestHeader())
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (b bearer) set(h http.Header) { h.Set("Authorization", "Bearer "+string(b)) }
