package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// inspectCmd prints what the daemon knows of one sandbox.
type inspectCmd struct {
	json bool
}

func newInspectCmd(a *app) *cobra.Command {
	c := &inspectCmd{}
	cmd := &cobra.Command{
		Use:   "inspect ID|APP/NAME",
		Short: "Show a sandbox's details",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			info, err := sandboxInfo(cmd.Context(), client, args[0])
			if err != nil {
				return err
			}
			if c.json {
				return writeJSON(a.stdout, newSandboxView(info))
			}
			return writeInfo(a.stdout, info)
		},
	}
	cmd.Flags().BoolVar(&c.json, "json", false, "print JSON")
	return cmd
}

// sandboxView is the JSON form of a sandbox, shared by inspect and ls. Its
// field names are part of sbx's contract: add fields, never rename them.
// Env holds only the values given at creation; secrets appear by name.
type sandboxView struct {
	ID           string            `json:"id"`
	App          string            `json:"app"`
	Name         string            `json:"name"`
	Image        string            `json:"image"`
	ImageID      string            `json:"image_id"`
	Entrypoint   []string          `json:"entrypoint"`
	Env          map[string]string `json:"env"`
	Secrets      []string          `json:"secrets"`
	Workdir      string            `json:"workdir"`
	TimeoutMS    int64             `json:"timeout_ms"`
	CPU          float64           `json:"cpu"`
	MemoryMiB    int64             `json:"memory_mib"`
	Pids         int64             `json:"pids"`
	Tags         map[string]string `json:"tags"`
	State        string            `json:"state"`
	FinishReason string            `json:"finish_reason"`
	ExitCode     *int              `json:"exit_code"` // null until finished
	Error        string            `json:"error"`
	CreatedAt    *time.Time        `json:"created_at"`
	StartedAt    *time.Time        `json:"started_at"`
	FinishedAt   *time.Time        `json:"finished_at"`
	Deadline     *time.Time        `json:"deadline"`
}

func newSandboxView(i sandboxd.Info) sandboxView {
	v := sandboxView{
		ID: i.ID, App: i.App, Name: i.Name, Image: i.Image, ImageID: i.ImageID,
		Entrypoint: nonNil(i.Entrypoint), Env: i.Env, Secrets: nonNil(i.Secrets), Workdir: i.Workdir,
		TimeoutMS: i.Timeout.Milliseconds(), CPU: i.CPU, MemoryMiB: i.MemoryMiB, Pids: i.Pids,
		Tags: i.Tags, State: string(i.State), FinishReason: i.FinishReason, Error: i.Error,
		CreatedAt: timeOrNil(i.CreatedAt), StartedAt: timeOrNil(i.StartedAt),
		FinishedAt: timeOrNil(i.FinishedAt), Deadline: timeOrNil(i.Deadline),
	}
	if v.Env == nil {
		v.Env = map[string]string{}
	}
	if v.Tags == nil {
		v.Tags = map[string]string{}
	}
	if i.State == sandboxd.StateFinished {
		code := i.ExitCode
		v.ExitCode = &code
	}
	return v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeInfo prints aligned "key: value" lines. Env shows keys only.
func writeInfo(w io.Writer, i sandboxd.Info) error {
	exit, reason := "-", "-"
	if i.State == sandboxd.StateFinished {
		exit, reason = fmt.Sprint(i.ExitCode), orDash(i.FinishReason)
	}
	rows := [][2]string{
		{"id", i.ID},
		{"app", orDash(i.App)},
		{"name", orDash(i.Name)},
		{"image", orDash(i.Image)},
		{"image id", orDash(i.ImageID)},
		{"state", orDash(string(i.State))},
		{"finish reason", reason},
		{"exit code", exit},
		{"error", orDash(i.Error)},
		{"created", formatTime(i.CreatedAt)},
		{"started", formatTime(i.StartedAt)},
		{"finished", formatTime(i.FinishedAt)},
		{"deadline", formatTime(i.Deadline)},
		{"timeout", formatDuration(i.Timeout)},
		{"cpu", formatNumber(i.CPU, "")},
		{"memory", formatNumber(float64(i.MemoryMiB), " MiB")},
		{"pids", formatNumber(float64(i.Pids), "")},
		{"entrypoint", orDash(quoteArgs(i.Entrypoint))},
		{"workdir", orDash(i.Workdir)},
		{"tags", joinKV(i.Tags)},
		{"env", orDash(strings.Join(sortedKeys(i.Env), ","))},
		{"secrets", orDash(strings.Join(i.Secrets, ","))},
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], oneLine(r[1]))
	}
	return tw.Flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func formatDuration(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.String()
}

func formatNumber(n float64, unit string) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%g%s", n, unit)
}

// quoteArgs joins argv with spaces, quoting the arguments that need it.
func quoteArgs(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`") {
			a = strconv.Quote(a)
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}
