package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Default terminal size of a tty exec that asks for none.
const (
	defaultRows = 24
	defaultCols = 80
)

// Resize changes the terminal size of a tty exec.
func (s *service) Resize(ctx context.Context, req *connect.Request[agentv1.ResizeRequest]) (*connect.Response[agentv1.ResizeResponse], error) {
	m := req.Msg
	if m.Rows == 0 || m.Cols == 0 || m.Rows > 0xffff || m.Cols > 0xffff {
		return nil, toConnect(errdefs.Invalid("terminal size %dx%d: rows and cols must be 1 to 65535", m.Rows, m.Cols))
	}
	e, err := s.a.lookup(m.ExecId)
	if err != nil {
		return nil, toConnect(err)
	}
	if e.tty == nil {
		return nil, toConnect(errdefs.FailedPrecondition("exec %q has no terminal", m.ExecId))
	}
	if !e.running() {
		return nil, toConnect(errdefs.FailedPrecondition("exec %q has exited", m.ExecId))
	}
	if err := setWinsize(e.tty, m.Rows, m.Cols); err != nil {
		return nil, toConnect(fmt.Errorf("resize exec %q: %w", m.ExecId, err))
	}
	return connect.NewResponse(&agentv1.ResizeResponse{}), nil
}

// openPTY opens a new pseudo-terminal pair. The master is non-blocking
// (deadlines work on it); the slave is for the child.
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		master, err = os.OpenFile("/dev/pts/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open ptmx: %w", err)
	}
	var n int
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return fmt.Errorf("unlock pty: %w", err)
		}
		var err error
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open pty slave: %w", err)
	}
	return master, slave, nil
}

// control runs fn on f's descriptor without making f blocking (as Fd would).
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// dupFile returns a second *os.File on f's open file description.
func dupFile(f *os.File, name string) (*os.File, error) {
	var nfd int
	err := control(f, func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), name), nil
}

func setWinsize(f *os.File, rows, cols uint32) error {
	return control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)})
	})
}

// spawnTTY starts the process of a tty plan on a new terminal, as the leader
// of a new session with the terminal as its controlling one. The master
// feeds e's stdout; stderr stays empty. On success it sets e.pid, e.tty,
// e.pipes and e.stdin (when p.stdin); on failure nothing is left open.
func (a *Agent) spawnTTY(e *execution, p *plan) (err error) {
	master, slave, err := openPTY()
	if err != nil {
		return errdefs.Unavailable("allocate a terminal: %v", err)
	}
	var mine []*os.File
	defer func() {
		slave.Close()
		if err != nil {
			master.Close()
			for _, f := range mine {
				f.Close()
			}
		}
	}()
	rows, cols := p.rows, p.cols
	if rows == 0 || cols == 0 {
		rows, cols = defaultRows, defaultCols
	}
	if err := setWinsize(master, rows, cols); err != nil {
		return fmt.Errorf("set terminal size: %w", err)
	}
	out, err := dupFile(master, "pty-out")
	if err != nil {
		return err
	}
	mine = append(mine, out)
	var in *os.File
	if p.stdin {
		if in, err = dupFile(master, "pty-in"); err != nil {
			return err
		}
		mine = append(mine, in)
	}
	attr := &os.ProcAttr{
		Dir:   p.dir,
		Env:   p.env,
		Files: []*os.File{slave, slave, slave},
		Sys:   &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	}
	pid, err := a.reaper.start(p.path, p.argv, attr, func(ws syscall.WaitStatus) { a.exited(e, ws) })
	if err != nil {
		return startError(p, err)
	}
	e.pid = pid
	e.tty = master
	e.pipes[stdoutIdx] = out
	e.out[stderrIdx].closed = true // everything comes on stdout
	if in != nil {
		e.stdin = newStdinPipe(in)
	}
	return nil
}
