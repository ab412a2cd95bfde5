// Command sbx is the command-line client of sandboxd: it creates sandboxes,
// runs processes in them and ends them, through the Go SDK (sdk/go) alone.
// It finds the daemon through SANDBOXD_ADDR and SANDBOXD_TOKEN, else the SDK's
// defaults.
//
// Exit codes: 0 on success; exec exits with the process's exit code (124 on
// timeout) and 125 when sbx itself fails; wait exits with the sandbox's exit
// code; any other failure exits 1 after one line "sbx: <message>" on stderr.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes sbx with args and returns the exit code. It is the only place
// that turns an error into an exit code and a message.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, newClient: clientFromEnv}
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	code, msg := exitCode(err)
	if h := hint(err); h != "" {
		msg += " (" + h + ")"
	}
	if msg != "" {
		fmt.Fprintf(stderr, "sbx: %s\n", msg)
	}
	return code
}

// exitError ends sbx with a given exit code. With a nil err it ends silently
// (a process's or a sandbox's own exit code); otherwise err is reported.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// withCode wraps a non-nil err so that sbx exits with code; nil stays nil.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: code, err: err}
}

// exitCode maps the error a command returned to sbx's exit code and the
// one-line message to print ("" for none).
func exitCode(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err == nil {
			return ee.code, ""
		}
		return ee.code, oneLine(ee.err.Error())
	}
	return 1, oneLine(err.Error())
}

// hint suggests a fix for errors that come from sbx's environment.
func hint(err error) string {
	switch {
	case errors.Is(err, sandboxd.ErrUnavailable):
		addr := os.Getenv("SANDBOXD_ADDR")
		if addr == "" {
			addr = sandboxd.DefaultAddr
		}
		return "is sandboxd running at " + addr + "? SANDBOXD_ADDR sets the address"
	case errors.Is(err, sandboxd.ErrUnauthenticated):
		return "check SANDBOXD_TOKEN"
	}
	return ""
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	return strings.TrimSpace(strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s))
}
