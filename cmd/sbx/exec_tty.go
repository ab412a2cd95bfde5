package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// runTTY runs argv on a terminal in the sandbox: sbx's stdin is forwarded,
// the output (stdout and stderr merged) goes to sbx's stdout. When sbx's
// stdin is a terminal it is put in raw mode (so Ctrl-C reaches the remote
// terminal as a byte) and restored on return, and the remote terminal
// follows the local one's size (SIGWINCH).
func (c *execCmd) runTTY(ctx context.Context, a *app, sb *sandboxd.Sandbox, argv []string, sigs <-chan os.Signal) error {
	o := &sandboxd.ExecOptions{
		Workdir: c.workdir, Env: c.env.m, Timeout: c.timeout, Stdin: true, TTY: true,
		Stdout: a.stdout, Stderr: a.stderr,
	}
	in, isTerm := a.stdin.(*os.File)
	isTerm = isTerm && term.IsTerminal(int(in.Fd()))
	if isTerm {
		if w, h, err := term.GetSize(int(in.Fd())); err == nil {
			o.Cols, o.Rows = w, h
		}
		old, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return withCode(exitExecFailed, fmt.Errorf("exec: raw mode: %w", err))
		}
		defer term.Restore(int(in.Fd()), old)
	}
	p, err := sb.Exec(ctx, argv, o)
	if err != nil {
		return withCode(exitExecFailed, fmt.Errorf("exec: %w", err))
	}
	go forwardStdin(p.Stdin, a.stdin)
	if isTerm {
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-winch:
					if w, h, err := term.GetSize(int(in.Fd())); err == nil {
						_ = p.Resize(ctx, h, w) // best effort: the process may have exited
					}
				}
			}
		}()
	}
	return c.wait(ctx, p, sigs)
}
