package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// logFiles holds an entrypoint's stdout and stderr on the host, appended as the
// follower reads them from the agent, so they outlive the sandbox.
type logFiles struct {
	dir string

	mu      sync.Mutex
	out     *os.File
	errf    *os.File
	changed chan struct{} // closed and replaced on every append
	closed  bool
}

func openLogFiles(dir string) (*logFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(dir, "stdout"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	errf, err := os.OpenFile(filepath.Join(dir, "stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("open log: %w", err)
	}
	return &logFiles{dir: dir, out: out, errf: errf, changed: make(chan struct{})}, nil
}

func (l *logFiles) sizes() (int64, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, _ := l.out.Stat()
	b, _ := l.errf.Stat()
	return a.Size(), b.Size()
}

// append writes data of one stream at offset; data already held is skipped.
func (l *logFiles) append(stderr bool, offset int64, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.out
	if stderr {
		f = l.errf
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	have := st.Size()
	if offset > have {
		return fmt.Errorf("log gap: have %d bytes, got data at %d", have, offset)
	}
	if skip := have - offset; skip < int64(len(data)) {
		if _, err := f.Write(data[skip:]); err != nil {
			return err
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}

func (l *logFiles) wait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *logFiles) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	l.out.Close()
	l.errf.Close()
	close(l.changed)
}

// follow copies the entrypoint's output from the agent into the log files
// until it exits, then finishes the sandbox with its exit code. It resumes from
// what the files hold after a lost connection or a daemon restart.
func (m *Manager) follow(ctx context.Context, l *live) {
	defer m.wg.Done()
	log := m.log.With("sandbox_id", l.id)
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		outOff, errOff := l.logs.sizes()
		stream, err := l.agent.Exec(ctx, &agentv1.ExecRequest{
			ExecId: agent.EntrypointExecID, AttachOnly: true, StdoutOffset: outOff, StderrOffset: errOff,
		})
		if err == nil {
			for {
				var ev *agentv1.ExecEvent
				ev, err = stream.Recv()
				if err != nil {
					break
				}
				switch e := ev.Event.(type) {
				case *agentv1.ExecEvent_Stdout:
					err = l.logs.append(false, e.Stdout.Offset, e.Stdout.Data)
				case *agentv1.ExecEvent_Stderr:
					err = l.logs.append(true, e.Stderr.Offset, e.Stderr.Data)
				case *agentv1.ExecEvent_Exited:
					stream.Close()
					go m.finish(l.id, ReasonExited, int(e.Exited.ExitCode), "")
					return
				}
				if err != nil {
					log.Error("write entrypoint log", "err", err)
					break
				}
			}
			stream.Close()
		}
		if ctx.Err() != nil {
			return
		}
		log.Debug("entrypoint stream broke; reattaching", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < time.Second {
			backoff *= 2
		}
	}
}

// LogChunk is a piece of an entrypoint's output.
type LogChunk struct {
	Stderr bool
	Offset int64
	Data   []byte
}

// Logs sends the entrypoint's output from the given offsets; with follow it
// goes on until the sandbox finishes and everything is sent.
func (m *Manager) Logs(ctx context.Context, id string, outOff, errOff int64, follow bool, send func(LogChunk) error) error {
	sb, err := m.Get(ctx, id)
	if err != nil {
		return err
	}
	if outOff < 0 || errOff < 0 {
		return errdefs.Invalid("negative log offset")
	}
	dir := filepath.Join(m.cfg.DataDir, "logs", id)
	var lf *logFiles
	var done <-chan struct{}
	if follow && sb.State != StateFinished {
		m.mu.Lock()
		if l := m.live[id]; l != nil {
			lf, done = l.logs, l.done
		}
		m.mu.Unlock()
	}
	for {
		// Take the change channel before reading so no append is missed.
		var changed <-chan struct{}
		if lf != nil {
			changed = lf.wait()
		}
		var n1, n2 int64
		if n1, err = sendFile(filepath.Join(dir, "stdout"), false, outOff, send); err != nil {
			return err
		}
		if n2, err = sendFile(filepath.Join(dir, "stderr"), true, errOff, send); err != nil {
			return err
		}
		outOff += n1
		errOff += n2
		if done == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			done, lf = nil, nil // one last read after the end
		case <-changed:
		}
	}
}

func sendFile(path string, stderr bool, off int64, send func(LogChunk) error) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var sent int64
	buf := make([]byte, 64<<10)
	for {
		n, err := f.ReadAt(buf, off+sent)
		if n > 0 {
			if serr := send(LogChunk{Stderr: stderr, Offset: off + sent, Data: append([]byte(nil), buf[:n]...)}); serr != nil {
				return sent, serr
			}
			sent += int64(n)
		}
		if err == io.EOF {
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
	}
}
