package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// Exit codes of sbx exec other than the process's own.
const (
	exitExecFailed      = 125 // sbx itself failed: bad usage, daemon unreachable, no such sandbox
	exitTimedOut        = 124 // the process outlived --timeout
	exitSecondInterrupt = 130 // a second SIGINT/SIGTERM while waiting
)

// execCmd runs a process in a sandbox, streams its output and exits with its
// exit code.
type execCmd struct {
	workdir string
	env     kvFlag
	timeout time.Duration
	stdin   bool
	tty     bool
	// notify registers for the signals forwarded to the process (signal.Notify
	// outside tests).
	notify func(chan<- os.Signal, ...os.Signal)
}

func newExecCmd(a *app) *cobra.Command {
	c := &execCmd{notify: signal.Notify}
	cmd := &cobra.Command{
		Use:   "exec [flags] ID -- CMD ARGS...",
		Short: "Run a command in a sandbox",
		Long: "Run a command in a sandbox (ID or APP/NAME), streaming its output.\n" +
			"sbx exits with the command's exit code (124 after --timeout) and with 125 when sbx\n" +
			"itself fails. The first SIGINT/SIGTERM is forwarded to the command; a second one\n" +
			"makes sbx exit 130.",
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, argv, err := execArgs(args, cmd.ArgsLenAtDash())
			if err != nil {
				return withCode(exitExecFailed, err)
			}
			return c.run(cmd.Context(), a, ref, argv)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(exitExecFailed, err) })
	f := cmd.Flags()
	f.StringVar(&c.workdir, "workdir", "", "working directory of the command")
	f.Var(&c.env, "env", "environment variable KEY=VALUE (repeatable)")
	f.Var(durationFlag{&c.timeout}, "timeout", "kill the command after a duration (30s, 5m) or seconds; exit 124")
	f.BoolVarP(&c.stdin, "interactive", "i", false, "forward sbx's stdin to the command")
	f.BoolVarP(&c.tty, "tty", "t", false, "run the command on a terminal (stdin forwarded, output merged)")
	return cmd
}

// execArgs splits "ID -- CMD ARGS..." (dashAt is where "--" was, -1 if
// absent). Without "--" the first argument is the id and the rest the command.
func execArgs(args []string, dashAt int) (string, []string, error) {
	const usage = "usage: sbx exec [flags] ID -- CMD ARGS..."
	switch {
	case dashAt < 0 && len(args) >= 2:
		return args[0], args[1:], nil
	case dashAt == 1 && len(args) >= 2:
		return args[0], args[1:], nil
	case dashAt < 0 && len(args) == 1, dashAt == 1:
		return "", nil, errors.New("no command to run; " + usage)
	case len(args) == 0 || dashAt == 0:
		return "", nil, errors.New("no sandbox id; " + usage)
	default:
		return "", nil, fmt.Errorf("want one sandbox id before --, got %d arguments; %s", dashAt, usage)
	}
}

func (c *execCmd) run(ctx context.Context, a *app, ref string, argv []string) error {
	client, err := a.newClient()
	if err != nil {
		return withCode(exitExecFailed, err)
	}
	sb, err := sandboxRef(ctx, client, ref)
	if err != nil {
		return withCode(exitExecFailed, err)
	}
	// Signals are caught from before the process starts, so that an early
	// Ctrl-C is forwarded rather than killing sbx and orphaning the process.
	sigs := make(chan os.Signal, 2)
	c.notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.tty {
		return c.runTTY(ctx, a, sb, argv, sigs)
	}
	p, err := sb.Exec(ctx, argv, &sandboxd.ExecOptions{
		Workdir: c.workdir, Env: c.env.m, Timeout: c.timeout, Stdin: c.stdin,
		Stdout: a.stdout, Stderr: a.stderr,
	})
	if err != nil {
		return withCode(exitExecFailed, fmt.Errorf("exec: %w", err))
	}
	if c.stdin {
		go forwardStdin(p.Stdin, a.stdin)
	}
	return c.wait(ctx, p, sigs)
}

// wait waits for p, forwarding the first signal to it; a second one ends
// sbx with exit code 130.
func (c *execCmd) wait(ctx context.Context, p *sandboxd.Process, sigs <-chan os.Signal) error {
	type result struct {
		st  sandboxd.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := p.WaitStatus(ctx)
		done <- result{st, err}
	}()
	forwarded := false
	for {
		select {
		case r := <-done:
			if r.err != nil {
				return withCode(exitExecFailed, fmt.Errorf("exec: %w", r.err))
			}
			return statusError(r.st)
		case sig := <-sigs:
			if forwarded {
				return &exitError{code: exitSecondInterrupt}
			}
			forwarded = true
			if s, ok := sig.(syscall.Signal); ok {
				// Best effort: if it fails the process is likely gone, and
				// Wait reports how it ended.
				_ = p.Signal(ctx, int(s))
			}
		}
	}
}

// statusError turns a process's exit status into sbx's exit (nil for 0).
func statusError(st sandboxd.ExitStatus) error {
	code := st.Code
	if st.TimedOut {
		code = exitTimedOut
	}
	if code == 0 {
		return nil
	}
	return &exitError{code: code}
}

// forwardStdin copies r to the process's stdin, then closes it. Errors are
// dropped, as a shell drops a broken pipe: they mostly mean the process has
// exited (or closed its stdin), and Wait reports how it ended.
func forwardStdin(w io.WriteCloser, r io.Reader) {
	_, _ = io.Copy(w, r)
	_ = w.Close()
}
