package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// app is what every command shares: its streams and how to reach the daemon.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// newClient connects lazily, so that bad flags fail before the
	// environment is read.
	newClient func() (*sandboxd.Client, error)
}

func clientFromEnv() (*sandboxd.Client, error) {
	c, err := sandboxd.NewClientFromEnv()
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return c, nil
}

// newRootCmd builds the sbx command tree. Cobra prints nothing on error:
// errors go back to run, which prints one line.
func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "sbx",
		Short: "Run untrusted code in sandboxd sandboxes",
		Long: "sbx talks to the sandboxd daemon at SANDBOXD_ADDR (default " + sandboxd.DefaultAddr + ")\n" +
			"with the token SANDBOXD_TOKEN (default: read from " + sandboxd.DefaultTokenFile + ").\n\n" +
			"Errors are one line on stderr and exit 1, except: exec exits with the command's code\n" +
			"(124 on timeout, 125 when sbx fails) and wait with the sandbox's.",
		SilenceUsage:  true,
		SilenceErrors: true,
		// No completion command: the tree is small and scripts need no surprises.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.AddCommand(
		newCreateCmd(a),
		newExecCmd(a),
		newLsCmd(a),
		newInspectCmd(a),
		newLogsCmd(a),
		newWaitCmd(a),
		newPollCmd(a),
		newTerminateCmd(a),
		newTagCmd(a),
		newSecretCmd(a),
		newSnapshotCmd(a),
		newRestoreCmd(a),
		newSnapshotsCmd(a),
		newSnapshotFSCmd(a),
		newSnapshotDirCmd(a),
		newImagesCmd(a),
		newVersionCmd(a),
		newCpCmd(a),
		newFsCmd(a),
		newMountCmd(a),
		newUnmountCmd(a),
		newMountsCmd(a),
	)
	return root
}

// withUsage adds the command's usage line to the errors of an argument check.
func withUsage(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return fmt.Errorf("%s: %w; usage: %s", cmd.CommandPath(), err, cmd.UseLine())
		}
		return nil
	}
}

// sandboxRef returns a handle on ref, an id ("sb-...") or "APP/NAME" (a
// running sandbox by name; "/NAME" is the default app). An id is not checked
// with the daemon: the next call on the handle reports ErrNotFound.
func sandboxRef(ctx context.Context, c *sandboxd.Client, ref string) (*sandboxd.Sandbox, error) {
	app, name, ok := strings.Cut(ref, "/")
	if !ok {
		if ref == "" {
			return nil, errors.New("empty sandbox id")
		}
		return c.Sandbox(ref), nil
	}
	if name == "" {
		return nil, fmt.Errorf("%q: want ID or APP/NAME", ref)
	}
	sb, _, err := c.FromName(ctx, app, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return sb, nil
}

// sandboxInfo returns what the daemon knows of ref, an id or "APP/NAME".
func sandboxInfo(ctx context.Context, c *sandboxd.Client, ref string) (sandboxd.Info, error) {
	var info sandboxd.Info
	app, name, ok := strings.Cut(ref, "/")
	var err error
	switch {
	case ok && name == "":
		return info, fmt.Errorf("%q: want ID or APP/NAME", ref)
	case ok:
		_, info, err = c.FromName(ctx, app, name)
	case ref == "":
		return info, errors.New("empty sandbox id")
	default:
		_, info, err = c.Get(ctx, ref)
	}
	if err != nil {
		return info, fmt.Errorf("%s: %w", ref, err)
	}
	return info, nil
}

// kvFlag is a repeatable KEY=VALUE flag (--env, --tag). The last value of a
// key wins. Values may contain '='.
type kvFlag struct{ m map[string]string }

func (f *kvFlag) Set(s string) error {
	k, v, err := parseKV(s)
	if err != nil {
		return err
	}
	if f.m == nil {
		f.m = map[string]string{}
	}
	f.m[k] = v
	return nil
}

func (f *kvFlag) Type() string { return "KEY=VALUE" }

func (f *kvFlag) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(f.m)) {
		parts = append(parts, k+"="+f.m[k])
	}
	return strings.Join(parts, ",")
}

// parseKV splits "KEY=VALUE" at the first '='. The error quotes s, so it must
// not be used where s may hold a secret (see parseKVs).
func parseKV(s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("%q is not KEY=VALUE (missing '=')", s)
	}
	if k == "" {
		return "", "", fmt.Errorf("%q is not KEY=VALUE (empty key)", s)
	}
	return k, v, nil
}

// parseKVs parses positional KEY=VALUE arguments. With redact, an error names
// the argument's position instead of quoting it (it may hold a secret value).
func parseKVs(args []string, redact bool) (map[string]string, error) {
	m := make(map[string]string, len(args))
	for i, s := range args {
		k, v, err := parseKV(s)
		if err != nil {
			if redact {
				return nil, fmt.Errorf("KEY=VALUE argument %d has no '=' or an empty key", i+1)
			}
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

// durationFlag accepts a Go duration ("30s", "5m", "2h") or a bare number of
// seconds ("90", "1.5").
type durationFlag struct{ d *time.Duration }

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func (f durationFlag) Type() string { return "DUR" }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return f.d.String()
}

func parseDuration(s string) (time.Duration, error) {
	var d time.Duration
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || secs > float64(math.MaxInt64)/float64(time.Second) {
			return 0, fmt.Errorf("%q is too long", s)
		}
		d = time.Duration(secs * float64(time.Second))
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("%q is not a duration (like 30s, 5m, 2h) or a number of seconds", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// sortedKeys returns m's keys in order.
func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// joinKV renders m as "k=v,k2=v2" in key order, or "-" when empty.
func joinKV(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// orDash returns s, or "-" when it is empty, so table columns stay split-able.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print sbx's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(a.stdout, "sbx %s\n", version)
			return err
		},
	}
}
