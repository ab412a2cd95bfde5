package sandboxd

import (
	"context"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
)

// Resize changes the terminal size of a process started with
// ExecOptions.TTY.
func (p *Process) Resize(ctx context.Context, rows, cols int) error {
	_, err := p.sb.c.exec.ResizeExec(ctx, connect.NewRequest(&pb.ResizeExecRequest{
		SandboxId: p.sb.ID, ExecId: p.ExecID, Rows: uint32(rows), Cols: uint32(cols)}))
	return wrap(err)
}
