package server

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/api/gen/sandboxd/v1/sandboxdv1connect"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func TestToRPCKeepsClassAndMessage(t *testing.T) {
	cases := []struct {
		err  error
		code connect.Code
	}{
		{errdefs.NotFound("sandbox %q not found", "x"), connect.CodeNotFound},
		{fmt.Errorf("create: %w", errdefs.AlreadyExists("name taken")), connect.CodeAlreadyExists},
		{errdefs.Invalid("bad"), connect.CodeInvalidArgument},
		{errdefs.FailedPrecondition("finished"), connect.CodeFailedPrecondition},
		{errdefs.Expired("snapshot expired"), connect.CodeFailedPrecondition},
		{errdefs.Exhausted("pool"), connect.CodeResourceExhausted},
		{context.Canceled, connect.CodeCanceled},
		{errors.New("boom"), connect.CodeInternal},
		{connect.NewError(connect.CodeOutOfRange, errors.New("agent said")), connect.CodeOutOfRange},
	}
	for _, c := range cases {
		got := toRPC(c.err)
		if connect.CodeOf(got) != c.code {
			t.Errorf("toRPC(%v): got code %v, want %v", c.err, connect.CodeOf(got), c.code)
		}
		var ce *connect.Error
		if errors.As(got, &ce) && ce.Message() != c.err.Error() && c.code != connect.CodeOutOfRange {
			t.Errorf("toRPC(%v): message %q lost the original", c.err, ce.Message())
		}
	}
}

func TestEveryCallNeedsTheToken(t *testing.T) {
	s := &Server{Token: "right"}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	for _, tok := range []string{"", "wrong"} {
		c := sandboxdv1connect.NewSandboxServiceClient(ts.Client(), ts.URL)
		req := connect.NewRequest(&pb.ListSandboxesRequest{})
		if tok != "" {
			req.Header().Set("Authorization", "Bearer "+tok)
		}
		_, err := c.ListSandboxes(context.Background(), req)
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("token %q: got %v, want unauthenticated", tok, err)
		}
		sc := sandboxdv1connect.NewSecretServiceClient(ts.Client(), ts.URL)
		if _, err := sc.ListSecrets(context.Background(), connect.NewRequest(&pb.ListSecretsRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("secrets with token %q: got %v, want unauthenticated", tok, err)
		}
	}
}
