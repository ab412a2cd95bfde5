package sandbox

import (
	"context"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// TTYAgent is the optional ability of an AgentConn to resize the terminal
// of a tty exec.
type TTYAgent interface {
	Resize(ctx context.Context, execID string, rows, cols uint32) error
}

// Resize changes the terminal size of a tty exec of a running sandbox. It
// fails with ErrFailedPrecondition when the exec has no terminal or has
// exited, ErrNotFound when there is no such exec.
func (m *Manager) Resize(ctx context.Context, sandboxID, execID string, rows, cols uint32) error {
	if rows == 0 || cols == 0 || rows > 0xffff || cols > 0xffff {
		return errdefs.Invalid("terminal size %dx%d: rows and cols must be 1 to 65535", rows, cols)
	}
	if !execIDRE.MatchString(execID) {
		return errdefs.Invalid("bad exec id %q", execID)
	}
	l, err := m.running(ctx, sandboxID)
	if err != nil {
		return err
	}
	ta, ok := l.agent.(TTYAgent)
	if !ok {
		return errdefs.FailedPrecondition("sandbox %s: its agent connection cannot resize terminals", sandboxID)
	}
	return ta.Resize(ctx, execID, rows, cols)
}
