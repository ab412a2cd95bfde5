package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// invocation is one runsc command line.
type invocation struct {
	args []string // everything after the binary: global flags, subcommand, its flags
	// stdout and stderr, when set, are handed to runsc as they are (Run and
	// Restore give the init's log file). When nil, the output is captured
	// into a temporary file and returned.
	stdout, stderr *os.File
}

// commander runs runsc. It exists so that spec generation and argument
// building can be tested without root; execCommander is the real one and
// tests use a fake.
type commander interface {
	// run runs inv to completion and returns what runsc wrote to stdout when
	// inv.stdout is nil. A non-zero exit is a *runscError.
	run(ctx context.Context, inv invocation) ([]byte, error)
}

// runscError is a failed runsc command with the last lines of its error
// output.
type runscError struct {
	args   []string
	code   int
	detail string
}

func (e *runscError) Error() string {
	sub := subcommand(e.args)
	if e.detail == "" {
		return fmt.Sprintf("runsc %s: exit %d", sub, e.code)
	}
	return fmt.Sprintf("runsc %s: exit %d: %s", sub, e.code, e.detail)
}

// subcommand returns runsc's subcommand in args, skipping the global flags
// this package passes.
func subcommand(args []string) string {
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--root", "--platform", "--network", "--overlay2", "--log", "--debug-log":
			i++
		case "--debug":
		default:
			return args[i]
		}
	}
	return ""
}

type execCommander struct{ path string }

func (c execCommander) run(ctx context.Context, inv invocation) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.path, inv.args...)
	// Stdin nil means /dev/null. Files are handed over as descriptors: no
	// pipe, no copying goroutine that could wait for the sandbox.
	var outFile, errFile *os.File
	var err error
	if cmd.Stdout = inv.stdout; inv.stdout == nil {
		if outFile, err = tempFile(); err != nil {
			return nil, err
		}
		defer outFile.Close()
		cmd.Stdout = outFile
	}
	if cmd.Stderr = inv.stderr; inv.stderr == nil {
		if errFile, err = tempFile(); err != nil {
			return nil, err
		}
		defer errFile.Close()
		cmd.Stderr = errFile
	}
	runErr := cmd.Run()
	var out []byte
	if outFile != nil {
		out, _ = readAllFrom(outFile, 0)
	}
	if runErr == nil {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("runsc %s: %w", subcommand(inv.args), err)
	}
	var exitErr *exec.ExitError
	if !errors.As(runErr, &exitErr) {
		return nil, fmt.Errorf("runsc %s: %w", subcommand(inv.args), runErr)
	}
	re := &runscError{args: inv.args, code: exitErr.ExitCode()}
	if errFile != nil {
		b, _ := readAllFrom(errFile, 0)
		re.detail = lastLine(b)
	}
	return nil, re
}

// tempFile returns an unlinked temporary file.
func tempFile() (*os.File, error) {
	f, err := os.CreateTemp("", "runsc-out-")
	if err != nil {
		return nil, fmt.Errorf("runsc output file: %w", err)
	}
	os.Remove(f.Name())
	return f, nil
}

func readAllFrom(f *os.File, off int64) ([]byte, error) {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// lastLine returns the last non-empty line of b, trimmed to 300 bytes: the
// line runsc prints its fatal error on.
func lastLine(b []byte) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(string(lines[i]))
		if l == "" {
			continue
		}
		l = strings.TrimPrefix(l, "FATAL ERROR: ")
		if len(l) > 300 {
			l = l[:300] + "..."
		}
		return l
	}
	return ""
}

// classify wraps err from runsc with what as context and the errdefs class
// that its text implies.
func classify(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w: %w", what, errdefsCanceled, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: %w", what, errdefsDeadline, err)
	}
	var re *runscError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %w", what, err)
	}
	d := strings.ToLower(re.detail)
	for _, m := range textClasses {
		if strings.Contains(d, m.text) {
			return fmt.Errorf("%s: %w: %w", what, m.class, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
