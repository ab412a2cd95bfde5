package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/api/gen/sandboxd/v1/sandboxdv1connect"
)

// fakeDaemon is a hand-written in-memory stand-in for sandboxd's API, enough
// to drive sbx end to end through the real SDK. It records the requests it
// gets; sandboxes holds what Get/List return, keyed by id.
type fakeDaemon struct {
	sandboxdv1connect.UnimplementedSandboxServiceHandler
	sandboxdv1connect.UnimplementedExecServiceHandler
	sandboxdv1connect.UnimplementedSecretServiceHandler

	mu        sync.Mutex
	sandboxes map[string]*pb.Sandbox
	created   *pb.CreateSandboxRequest
	execReq   *pb.ExecRequest
	stdin     []byte
	tags      map[string]string
	secrets   map[string]map[string]string
	// exec's script: output then exit status.
	stdout, stderr string
	exited         *pb.Exited
	// signals receives the signals of SignalExec (it must be buffered when
	// set). With exitOnSignal, Exec exits 128+signal on the first one;
	// otherwise, with signals set, Exec never exits.
	signals      chan int32
	exitOnSignal bool
	// catStdin makes Exec wait for its stdin to close and echo it on stdout.
	catStdin    bool
	stdinClosed chan struct{}
}

// startFakeDaemon serves f and points SANDBOXD_ADDR and SANDBOXD_TOKEN at it.
func startFakeDaemon(t *testing.T, f *fakeDaemon) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(sandboxdv1connect.NewSandboxServiceHandler(f))
	mux.Handle(sandboxdv1connect.NewExecServiceHandler(f))
	mux.Handle(sandboxdv1connect.NewSecretServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	t.Setenv("SANDBOXD_ADDR", srv.URL)
	t.Setenv("SANDBOXD_TOKEN", "test-token")
}

func (f *fakeDaemon) lookup(id string) (*pb.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sandboxes[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errNotFound(id))
	}
	return s, nil
}

type errNotFound string

func (e errNotFound) Error() string { return "sandbox " + string(e) + " not found" }

func (f *fakeDaemon) CreateSandbox(_ context.Context, r *connect.Request[pb.CreateSandboxRequest]) (*connect.Response[pb.CreateSandboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = r.Msg
	return connect.NewResponse(&pb.CreateSandboxResponse{Sandbox: &pb.Sandbox{Id: "sb-new"}}), nil
}

func (f *fakeDaemon) GetSandbox(_ context.Context, r *connect.Request[pb.GetSandboxRequest]) (*connect.Response[pb.GetSandboxResponse], error) {
	id := r.Msg.Id
	if id == "" {
		f.mu.Lock()
		for _, s := range f.sandboxes {
			if s.App == r.Msg.App && s.Name == r.Msg.Name {
				id = s.Id
			}
		}
		f.mu.Unlock()
	}
	s, err := f.lookup(id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.GetSandboxResponse{Sandbox: s}), nil
}

func (f *fakeDaemon) ListSandboxes(context.Context, *connect.Request[pb.ListSandboxesRequest]) (*connect.Response[pb.ListSandboxesResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pb.Sandbox
	for _, s := range f.sandboxes {
		out = append(out, s)
	}
	return connect.NewResponse(&pb.ListSandboxesResponse{Sandboxes: out}), nil
}

func (f *fakeDaemon) SetTags(_ context.Context, r *connect.Request[pb.SetTagsRequest]) (*connect.Response[pb.SetTagsResponse], error) {
	if _, err := f.lookup(r.Msg.Id); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tags = r.Msg.Tags
	return connect.NewResponse(&pb.SetTagsResponse{}), nil
}

func (f *fakeDaemon) WaitSandbox(_ context.Context, r *connect.Request[pb.WaitSandboxRequest]) (*connect.Response[pb.WaitSandboxResponse], error) {
	s, err := f.lookup(r.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.WaitSandboxResponse{
		Finished: s.State == pb.SandboxState_SANDBOX_STATE_FINISHED, ExitCode: s.ExitCode}), nil
}

func (f *fakeDaemon) Exec(ctx context.Context, r *connect.Request[pb.ExecRequest], stream *connect.ServerStream[pb.ExecEvent]) error {
	if _, err := f.lookup(r.Msg.SandboxId); err != nil {
		return err
	}
	f.mu.Lock()
	f.execReq = r.Msg
	stdout, stderr, exited := f.stdout, f.stderr, f.exited
	f.mu.Unlock()
	events := []*pb.ExecEvent{{Event: &pb.ExecEvent_Started{Started: &pb.Started{ExecId: "ex-1", Created: true}}}}
	if stdout != "" {
		events = append(events, &pb.ExecEvent{Event: &pb.ExecEvent_Stdout{Stdout: &pb.Output{Data: []byte(stdout)}}})
	}
	if stderr != "" {
		events = append(events, &pb.ExecEvent{Event: &pb.ExecEvent_Stderr{Stderr: &pb.Output{Data: []byte(stderr)}}})
	}
	for _, e := range events {
		if err := stream.Send(e); err != nil {
			return err
		}
	}
	switch {
	case f.catStdin:
		select {
		case <-f.stdinClosed:
		case <-ctx.Done():
			return ctx.Err()
		}
		f.mu.Lock()
		data := f.stdin
		f.mu.Unlock()
		e := &pb.ExecEvent{Event: &pb.ExecEvent_Stdout{Stdout: &pb.Output{Data: data}}}
		if err := stream.Send(e); err != nil {
			return err
		}
	case f.signals != nil && f.exitOnSignal:
		select {
		case sig := <-f.signals:
			exited = &pb.Exited{ExitCode: 128 + sig, Signal: sig}
		case <-ctx.Done():
			return ctx.Err()
		}
	case f.signals != nil:
		<-ctx.Done()
		return ctx.Err()
	}
	return stream.Send(&pb.ExecEvent{Event: &pb.ExecEvent_Exited{Exited: exited}})
}

func (f *fakeDaemon) SignalExec(_ context.Context, r *connect.Request[pb.SignalExecRequest]) (*connect.Response[pb.SignalExecResponse], error) {
	f.signals <- r.Msg.Signal
	return connect.NewResponse(&pb.SignalExecResponse{}), nil
}

func (f *fakeDaemon) WriteStdin(_ context.Context, r *connect.Request[pb.WriteStdinRequest]) (*connect.Response[pb.WriteStdinResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Msg.Offset == int64(len(f.stdin)) {
		f.stdin = append(f.stdin, r.Msg.Data...)
	}
	if r.Msg.Close {
		close(f.stdinClosed)
	}
	return connect.NewResponse(&pb.WriteStdinResponse{NextOffset: int64(len(f.stdin))}), nil
}

func (f *fakeDaemon) CreateSecret(_ context.Context, r *connect.Request[pb.CreateSecretRequest]) (*connect.Response[pb.CreateSecretResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.secrets == nil {
		f.secrets = map[string]map[string]string{}
	}
	f.secrets[r.Msg.Name] = r.Msg.Values
	return connect.NewResponse(&pb.CreateSecretResponse{}), nil
}

// runningSandbox and finishedSandbox are fixtures.
func runningSandbox() *pb.Sandbox {
	return &pb.Sandbox{
		Id: "sb-run", App: "web", Name: "api", Image: "busybox", Entrypoint: []string{"sh", "-c", "sleep 1000"},
		Env: map[string]string{"MODE": "dev"}, Secrets: []string{"db"}, Workdir: "/srv", TimeoutMs: 300_000,
		Resources: &pb.Resources{Cpu: 0.5, MemoryMib: 256}, Tags: map[string]string{"team": "a"},
		State:     pb.SandboxState_SANDBOX_STATE_RUNNING,
		CreatedAt: timestamppb.New(testNow), StartedAt: timestamppb.New(testNow),
		Deadline: timestamppb.New(testNow.Add(300_000_000_000)),
	}
}

func finishedSandbox() *pb.Sandbox {
	return &pb.Sandbox{
		Id: "sb-done", Image: "busybox", State: pb.SandboxState_SANDBOX_STATE_FINISHED,
		FinishReason: pb.FinishReason_FINISH_REASON_EXITED, ExitCode: 3,
		CreatedAt: timestamppb.New(testNow), FinishedAt: timestamppb.New(testNow),
	}
}

func (f *fakeDaemon) TerminateSandbox(_ context.Context, r *connect.Request[pb.TerminateSandboxRequest]) (*connect.Response[pb.TerminateSandboxResponse], error) {
	s, err := f.lookup(r.Msg.Id)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s.State, s.FinishReason, s.ExitCode = pb.SandboxState_SANDBOX_STATE_FINISHED, pb.FinishReason_FINISH_REASON_TERMINATED, 137
	return connect.NewResponse(&pb.TerminateSandboxResponse{}), nil
}

// SandboxLogs sends the exec script's stdout and stderr as the entrypoint's.
func (f *fakeDaemon) SandboxLogs(_ context.Context, r *connect.Request[pb.SandboxLogsRequest], stream *connect.ServerStream[pb.SandboxLogsResponse]) error {
	if _, err := f.lookup(r.Msg.Id); err != nil {
		return err
	}
	return stream.Send(&pb.SandboxLogsResponse{
		Stdout: &pb.Output{Data: []byte(f.stdout)}, Stderr: &pb.Output{Data: []byte(f.stderr)}})
}

func (f *fakeDaemon) ListSecrets(context.Context, *connect.Request[pb.ListSecretsRequest]) (*connect.Response[pb.ListSecretsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &pb.ListSecretsResponse{}
	for name, values := range f.secrets {
		s := &pb.Secret{Name: name}
		for k := range values {
			s.Keys = append(s.Keys, k)
		}
		resp.Secrets = append(resp.Secrets, s)
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeDaemon) DeleteSecret(_ context.Context, r *connect.Request[pb.DeleteSecretRequest]) (*connect.Response[pb.DeleteSecretResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.secrets[r.Msg.Name]; !ok {
		return nil, connect.NewError(connect.CodeNotFound, errNotFound(r.Msg.Name))
	}
	delete(f.secrets, r.Msg.Name)
	return connect.NewResponse(&pb.DeleteSecretResponse{}), nil
}
