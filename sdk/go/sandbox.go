package sandboxd

import (
	"context"
	"io"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// CreateOptions describe a new sandbox. The zero value is a sandbox of the
// default image in the default app, with no entrypoint, for 5 minutes.
type CreateOptions struct {
	App   string
	Name  string
	Image string
	// Entrypoint, if set, is the sandbox's main process: the sandbox ends when
	// it exits, with its exit code.
	Entrypoint []string
	Env        map[string]string
	// Secrets are names of secrets whose key/values join the environment.
	Secrets []string
	Workdir string
	// Timeout is the sandbox's lifetime (default 5 minutes, at most 24 hours).
	Timeout   time.Duration
	CPU       float64
	MemoryMiB int64
	Pids      int64
	Tags      map[string]string
	// Mounts are images mounted at paths (copy-on-write, nothing copied).
	Mounts []Mount
}

// State is a sandbox's state.
type State string

const (
	StateCreating State = "creating"
	StateRunning  State = "running"
	StateFinished State = "finished"
)

// Info is what the daemon knows of a sandbox at one moment.
type Info struct {
	ID           string
	App          string
	Name         string
	Image        string
	ImageID      string
	Entrypoint   []string
	Env          map[string]string
	Secrets      []string
	Workdir      string
	Timeout      time.Duration
	CPU          float64
	MemoryMiB    int64
	Pids         int64
	Tags         map[string]string
	State        State
	FinishReason string // exited, terminated, timeout, lost, failed
	ExitCode     int
	Error        string
	CreatedAt    time.Time
	StartedAt    time.Time
	FinishedAt   time.Time
	Deadline     time.Time
}

// Sandbox is a handle on one sandbox. Its methods are safe for concurrent use.
type Sandbox struct {
	ID string
	c  *Client
}

// Sandbox returns a handle on the sandbox id without asking the daemon.
func (c *Client) Sandbox(id string) *Sandbox { return &Sandbox{ID: id, c: c} }

// Create creates a sandbox and returns once it is ready for its first exec.
func (c *Client) Create(ctx context.Context, o CreateOptions) (*Sandbox, error) {
	resp, err := c.sandboxes.CreateSandbox(ctx, connect.NewRequest(&pb.CreateSandboxRequest{
		App: o.App, Name: o.Name, Image: o.Image, Entrypoint: o.Entrypoint, Env: o.Env, Secrets: o.Secrets,
		Workdir: o.Workdir, TimeoutMs: o.Timeout.Milliseconds(), Tags: o.Tags,
		Resources: &pb.Resources{Cpu: o.CPU, MemoryMib: o.MemoryMiB, Pids: o.Pids},
		Mounts:    mountsToPB(o.Mounts),
	}))
	if err != nil {
		return nil, wrap(err)
	}
	return &Sandbox{ID: resp.Msg.Sandbox.Id, c: c}, nil
}

// Get returns the sandbox with the given id (running or finished).
func (c *Client) Get(ctx context.Context, id string) (*Sandbox, Info, error) {
	resp, err := c.sandboxes.GetSandbox(ctx, connect.NewRequest(&pb.GetSandboxRequest{Id: id}))
	if err != nil {
		return nil, Info{}, wrap(err)
	}
	return &Sandbox{ID: id, c: c}, infoFromPB(resp.Msg.Sandbox), nil
}

// FromName returns the running sandbox named name in app ("" is the default app).
func (c *Client) FromName(ctx context.Context, app, name string) (*Sandbox, Info, error) {
	resp, err := c.sandboxes.GetSandbox(ctx, connect.NewRequest(&pb.GetSandboxRequest{App: app, Name: name}))
	if err != nil {
		return nil, Info{}, wrap(err)
	}
	return &Sandbox{ID: resp.Msg.Sandbox.Id, c: c}, infoFromPB(resp.Msg.Sandbox), nil
}

// ListOptions filter List.
type ListOptions struct {
	App string
	// Tags: a sandbox matches when it has at least these tags.
	Tags map[string]string
	// All includes finished sandboxes.
	All bool
}

// List lists sandboxes, newest first.
func (c *Client) List(ctx context.Context, o ListOptions) ([]Info, error) {
	resp, err := c.sandboxes.ListSandboxes(ctx, connect.NewRequest(&pb.ListSandboxesRequest{App: o.App, Tags: o.Tags, All: o.All}))
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]Info, 0, len(resp.Msg.Sandboxes))
	for _, s := range resp.Msg.Sandboxes {
		out = append(out, infoFromPB(s))
	}
	return out, nil
}

// Info returns what the daemon knows of the sandbox now.
func (s *Sandbox) Info(ctx context.Context) (Info, error) {
	_, info, err := s.c.Get(ctx, s.ID)
	return info, err
}

// SetTags replaces the sandbox's tags.
func (s *Sandbox) SetTags(ctx context.Context, tags map[string]string) error {
	_, err := s.c.sandboxes.SetTags(ctx, connect.NewRequest(&pb.SetTagsRequest{Id: s.ID, Tags: tags}))
	return wrap(err)
}

// Tags returns the sandbox's tags.
func (s *Sandbox) Tags(ctx context.Context) (map[string]string, error) {
	info, err := s.Info(ctx)
	return info.Tags, err
}

// Terminate ends the sandbox; it does nothing on a finished sandbox.
func (s *Sandbox) Terminate(ctx context.Context) error {
	_, err := s.c.sandboxes.TerminateSandbox(ctx, connect.NewRequest(&pb.TerminateSandboxRequest{Id: s.ID}))
	return wrap(err)
}

// Wait waits until the sandbox finishes and returns its exit code (124 after
// its timeout, 137 after Terminate).
func (s *Sandbox) Wait(ctx context.Context) (int, error) {
	for {
		resp, err := s.c.sandboxes.WaitSandbox(ctx, connect.NewRequest(&pb.WaitSandboxRequest{Id: s.ID, TimeoutMs: 60_000}))
		if err != nil {
			return 0, wrap(err)
		}
		if resp.Msg.Finished {
			return int(resp.Msg.ExitCode), nil
		}
	}
}

// Poll returns nil while the sandbox runs, else its exit code.
func (s *Sandbox) Poll(ctx context.Context) (*int, error) {
	resp, err := s.c.sandboxes.WaitSandbox(ctx, connect.NewRequest(&pb.WaitSandboxRequest{Id: s.ID}))
	if err != nil {
		return nil, wrap(err)
	}
	if !resp.Msg.Finished {
		return nil, nil
	}
	code := int(resp.Msg.ExitCode)
	return &code, nil
}

// Logs copies the entrypoint's output to stdout and stderr (either may be
// nil); with follow it returns once the sandbox has finished and all is copied.
func (s *Sandbox) Logs(ctx context.Context, follow bool, stdout, stderr io.Writer) error {
	var outOff, errOff int64
	for attempt := 0; ; attempt++ {
		stream, err := s.c.sandboxes.SandboxLogs(ctx, connect.NewRequest(&pb.SandboxLogsRequest{
			Id: s.ID, Follow: follow, StdoutOffset: outOff, StderrOffset: errOff}))
		if err != nil {
			return wrap(err)
		}
		for stream.Receive() {
			m := stream.Msg()
			if o := m.Stdout; o != nil && o.Offset+int64(len(o.Data)) > outOff {
				if stdout != nil {
					if _, err := stdout.Write(o.Data[outOff-o.Offset:]); err != nil {
						stream.Close()
						return err
					}
				}
				outOff = o.Offset + int64(len(o.Data))
			}
			if o := m.Stderr; o != nil && o.Offset+int64(len(o.Data)) > errOff {
				if stderr != nil {
					if _, err := stderr.Write(o.Data[errOff-o.Offset:]); err != nil {
						stream.Close()
						return err
					}
				}
				errOff = o.Offset + int64(len(o.Data))
			}
		}
		err = stream.Err()
		stream.Close()
		if err == nil {
			return nil
		}
		if !retryable(err) || attempt >= maxRetries || ctx.Err() != nil {
			return wrap(err)
		}
		sleepBackoff(ctx, attempt)
	}
}

// Stdin returns a writer to the entrypoint's stdin. Close closes the stdin.
func (s *Sandbox) Stdin() io.WriteCloser {
	return &stdinWriter{write: func(ctx context.Context, off int64, data []byte, close bool) (int64, error) {
		resp, err := s.c.sandboxes.WriteSandboxStdin(ctx, connect.NewRequest(&pb.WriteStdinRequest{
			SandboxId: s.ID, Offset: off, Data: data, Close: close}))
		if err != nil {
			return 0, err
		}
		return resp.Msg.NextOffset, nil
	}}
}

var stateFromPB = map[pb.SandboxState]State{
	pb.SandboxState_SANDBOX_STATE_CREATING: StateCreating,
	pb.SandboxState_SANDBOX_STATE_RUNNING:  StateRunning,
	pb.SandboxState_SANDBOX_STATE_FINISHED: StateFinished,
}

var reasonFromPB = map[pb.FinishReason]string{
	pb.FinishReason_FINISH_REASON_EXITED:     "exited",
	pb.FinishReason_FINISH_REASON_TERMINATED: "terminated",
	pb.FinishReason_FINISH_REASON_TIMEOUT:    "timeout",
	pb.FinishReason_FINISH_REASON_LOST:       "lost",
	pb.FinishReason_FINISH_REASON_FAILED:     "failed",
}

func infoFromPB(s *pb.Sandbox) Info {
	i := Info{
		ID: s.Id, App: s.App, Name: s.Name, Image: s.Image, ImageID: s.ImageId, Entrypoint: s.Entrypoint,
		Env: s.Env, Secrets: s.Secrets, Workdir: s.Workdir, Timeout: time.Duration(s.TimeoutMs) * time.Millisecond,
		Tags: s.Tags, State: stateFromPB[s.State], FinishReason: reasonFromPB[s.FinishReason],
		ExitCode: int(s.ExitCode), Error: s.Error,
	}
	if r := s.Resources; r != nil {
		i.CPU, i.MemoryMiB, i.Pids = r.Cpu, r.MemoryMib, r.Pids
	}
	if s.CreatedAt != nil {
		i.CreatedAt = s.CreatedAt.AsTime()
	}
	if s.StartedAt != nil {
		i.StartedAt = s.StartedAt.AsTime()
	}
	if s.FinishedAt != nil {
		i.FinishedAt = s.FinishedAt.AsTime()
	}
	if s.Deadline != nil {
		i.Deadline = s.Deadline.AsTime()
	}
	if i.Tags == nil {
		i.Tags = map[string]string{}
	}
	return i
}
