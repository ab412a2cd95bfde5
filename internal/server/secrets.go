package server

import (
	"context"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/internal/secret"
)

type secretService struct{ s *Server }

func secretToPB(s secret.Secret) *pb.Secret {
	return &pb.Secret{Name: s.Name, Keys: s.Keys, CreatedAt: ts(s.CreatedAt)}
}

func (h *secretService) CreateSecret(ctx context.Context, req *connect.Request[pb.CreateSecretRequest]) (*connect.Response[pb.CreateSecretResponse], error) {
	s, err := h.s.Secrets.Put(ctx, req.Msg.Name, req.Msg.Values)
	if err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.CreateSecretResponse{Secret: secretToPB(s)}), nil
}

func (h *secretService) ListSecrets(ctx context.Context, req *connect.Request[pb.ListSecretsRequest]) (*connect.Response[pb.ListSecretsResponse], error) {
	list, err := h.s.Secrets.List(ctx)
	if err != nil {
		return nil, toRPC(err)
	}
	out := &pb.ListSecretsResponse{}
	for _, s := range list {
		out.Secrets = append(out.Secrets, secretToPB(s))
	}
	return connect.NewResponse(out), nil
}

func (h *secretService) DeleteSecret(ctx context.Context, req *connect.Request[pb.DeleteSecretRequest]) (*connect.Response[pb.DeleteSecretResponse], error) {
	if err := h.s.Secrets.Delete(ctx, req.Msg.Name); err != nil {
		return nil, toRPC(err)
	}
	return connect.NewResponse(&pb.DeleteSecretResponse{}), nil
}
