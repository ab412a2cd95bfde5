package sandbox

import (
	"context"
	"path"
	"regexp"
	"syscall"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

var execIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// ExecRequest asks for a process in a running sandbox.
type ExecRequest struct {
	// ExecID names the exec; a repeated request with the same id attaches to
	// the same process. Empty: a new id is chosen.
	ExecID  string
	Argv    []string
	Workdir string
	Env     map[string]string
	Secrets []string
	Stdin   bool
	// TimeoutMs kills the process after that many milliseconds; 0: none.
	TimeoutMs    int64
	Stdout       agentv1.OutputMode
	Stderr       agentv1.OutputMode
	StdoutOffset int64
	StderrOffset int64
	AttachOnly   bool
	// TTY runs the process on a terminal of Rows x Cols (0: 24 x 80).
	TTY        bool
	Rows, Cols uint32
}

// ExecFollower is an AgentConn's optional ability to stream an exec's events
// across broken and silently stalled connections (a snapshot freezes the
// sandbox, and its connections, under execs in flight): it attaches again
// by exec id from the offsets already streamed, so no event is lost or
// repeated and Started comes once. Exec uses it when the conn has it.
type ExecFollower interface {
	Follow(ctx context.Context, req *agentv1.ExecRequest) (ExecStream, error)
}

// Exec starts (or attaches to) a process in a running sandbox and returns its
// event stream and exec id. The caller must Close the stream. The stream
// resumes across broken connections when the agent conn is an ExecFollower.
func (m *Manager) Exec(ctx context.Context, sandboxID string, r ExecRequest) (ExecStream, string, error) {
	if r.ExecID == "" {
		if r.AttachOnly {
			return nil, "", errdefs.Invalid("attach needs an exec id")
		}
		r.ExecID = newID("ex-")
	}
	if !execIDRE.MatchString(r.ExecID) {
		return nil, "", errdefs.Invalid("bad exec id %q: 1 to 128 letters, digits, '.', '_', ':' or '-'", r.ExecID)
	}
	if r.ExecID == agent.EntrypointExecID && !r.AttachOnly {
		return nil, "", errdefs.Invalid("exec id %q is reserved for the entrypoint", r.ExecID)
	}
	if !r.AttachOnly {
		if len(r.Argv) == 0 || r.Argv[0] == "" {
			return nil, "", errdefs.Invalid("exec needs a command")
		}
		if r.Workdir != "" && !path.IsAbs(r.Workdir) {
			return nil, "", errdefs.Invalid("workdir %q is not an absolute path", r.Workdir)
		}
		if r.TimeoutMs < 0 {
			return nil, "", errdefs.Invalid("negative exec timeout")
		}
		if err := checkEnv(r.Env); err != nil {
			return nil, "", err
		}
	}
	if r.StdoutOffset < 0 || r.StderrOffset < 0 {
		return nil, "", errdefs.Invalid("negative output offset")
	}
	l, err := m.running(ctx, sandboxID)
	if err != nil {
		return nil, "", err
	}
	env := r.Env
	if len(r.Secrets) > 0 {
		vals, err := m.secrets.Values(ctx, r.Secrets)
		if err != nil {
			return nil, "", err
		}
		env = map[string]string{}
		for k, v := range r.Env {
			env[k] = v
		}
		for k, v := range vals {
			env[k] = v
		}
	}
	req := &agentv1.ExecRequest{
		ExecId: r.ExecID, StdoutOffset: r.StdoutOffset, StderrOffset: r.StderrOffset, AttachOnly: r.AttachOnly,
	}
	if !r.AttachOnly {
		req.Spec = &agentv1.ProcessSpec{
			Argv: r.Argv, Workdir: r.Workdir, Env: env, Stdin: r.Stdin, TimeoutMs: r.TimeoutMs,
			Stdout: r.Stdout, Stderr: r.Stderr, Tty: r.TTY, Rows: r.Rows, Cols: r.Cols,
		}
	}
	var s ExecStream
	if f, ok := l.agent.(ExecFollower); ok {
		s, err = f.Follow(ctx, req)
	} else {
		s, err = l.agent.Exec(ctx, req)
	}
	if err != nil {
		return nil, "", err
	}
	return s, r.ExecID, nil
}

// WriteStdin writes to an exec's stdin at offset; execID "" means the
// entrypoint. It returns the next offset.
func (m *Manager) WriteStdin(ctx context.Context, sandboxID, execID string, offset int64, data []byte, close bool) (int64, error) {
	if execID == "" {
		execID = agent.EntrypointExecID
	}
	if offset < 0 {
		return 0, errdefs.Invalid("negative stdin offset")
	}
	l, err := m.running(ctx, sandboxID)
	if err != nil {
		return 0, err
	}
	return l.agent.WriteStdin(ctx, execID, offset, data, close)
}

// Signal sends a signal to an exec's process group.
func (m *Manager) Signal(ctx context.Context, sandboxID, execID string, sig int32) error {
	if sig <= 0 || sig > 64 {
		return errdefs.Invalid("bad signal %d", sig)
	}
	l, err := m.running(ctx, sandboxID)
	if err != nil {
		return err
	}
	return l.agent.Signal(ctx, execID, syscall.Signal(sig))
}

// ExplainAgentError turns an error from a sandbox's agent into what the caller
// should see: when the sandbox has finished meanwhile, that it has finished.
func (m *Manager) ExplainAgentError(ctx context.Context, sandboxID string, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	if _, rerr := m.running(context.WithoutCancel(ctx), sandboxID); rerr != nil {
		return rerr
	}
	return err
}
