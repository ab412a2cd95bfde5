package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// iptables is what the guard needs of the filter table. Rules are argument
// lists in the form `iptables -S` prints them, without "-A CHAIN".
type iptables interface {
	// listRules returns the rules of chain in order, and false when the
	// chain does not exist.
	listRules(ctx context.Context, chain string) ([]string, bool, error)
	newChain(ctx context.Context, chain string) error
	// deleteChain flushes and deletes chain; a missing chain is no error.
	deleteChain(ctx context.Context, chain string) error
	exists(ctx context.Context, chain string, rule []string) (bool, error)
	// insert puts rule at position pos (1-based).
	insert(ctx context.Context, chain string, pos int, rule []string) error
	deleteRule(ctx context.Context, chain string, rule []string) error
	deleteAt(ctx context.Context, chain string, pos int) error
}

// execIptables runs the iptables binary, waiting for the xtables lock (-w).
type execIptables struct{}

var _ iptables = execIptables{}

func (execIptables) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "filter"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &iptablesError{args: args, err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return stdout.String(), nil
}

type iptablesError struct {
	args   []string
	err    error
	stderr string
}

func (e *iptablesError) Error() string {
	return fmt.Sprintf("iptables %s: %v: %s", strings.Join(e.args, " "), e.err, e.stderr)
}
func (e *iptablesError) Unwrap() error { return e.err }

// exitCode returns the exit status of a failed iptables run, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func (x execIptables) listRules(ctx context.Context, chain string) ([]string, bool, error) {
	// List the whole table: unlike `-S chain`, a missing chain is then told
	// apart from a failure without parsing error messages.
	out, err := x.run(ctx, "-S")
	if err != nil {
		return nil, false, err
	}
	var rules []string
	found := false
	for _, line := range strings.Split(out, "\n") {
		if line == "-N "+chain {
			found = true
		} else if r, ok := strings.CutPrefix(line, "-A "+chain+" "); ok {
			rules = append(rules, r)
		}
	}
	return rules, found, nil
}

func (x execIptables) newChain(ctx context.Context, chain string) error {
	_, err := x.run(ctx, "-N", chain)
	return err
}

func (x execIptables) deleteChain(ctx context.Context, chain string) error {
	_, found, err := x.listRules(ctx, chain)
	if err != nil || !found {
		return err
	}
	if _, err := x.run(ctx, "-F", chain); err != nil {
		return err
	}
	_, err = x.run(ctx, "-X", chain)
	return err
}

func (x execIptables) exists(ctx context.Context, chain string, rule []string) (bool, error) {
	_, err := x.run(ctx, append([]string{"-C", chain}, rule...)...)
	switch {
	case err == nil:
		return true, nil
	case exitCode(err) == 1:
		return false, nil
	default:
		return false, err
	}
}

func (x execIptables) insert(ctx context.Context, chain string, pos int, rule []string) error {
	_, err := x.run(ctx, append([]string{"-I", chain, strconv.Itoa(pos)}, rule...)...)
	return err
}

func (x execIptables) deleteRule(ctx context.Context, chain string, rule []string) error {
	_, err := x.run(ctx, append([]string{"-D", chain}, rule...)...)
	return err
}

func (x execIptables) deleteAt(ctx context.Context, chain string, pos int) error {
	_, err := x.run(ctx, "-D", chain, strconv.Itoa(pos))
	return err
}
