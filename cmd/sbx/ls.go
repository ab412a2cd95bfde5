package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// lsCmd lists sandboxes, newest first.
type lsCmd struct {
	app  string
	tags kvFlag
	all  bool
	json bool
}

func newLsCmd(a *app) *cobra.Command {
	c := &lsCmd{}
	cmd := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "List sandboxes (running ones unless --all)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			infos, err := client.List(cmd.Context(), sandboxd.ListOptions{App: c.app, Tags: c.tags.m, All: c.all})
			if err != nil {
				return fmt.Errorf("list: %w", err)
			}
			if c.json {
				views := make([]sandboxView, 0, len(infos))
				for _, i := range infos {
					views = append(views, newSandboxView(i))
				}
				return writeJSON(a.stdout, views)
			}
			return writeTable(a.stdout, infos, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.app, "app", "", "only this app's sandboxes")
	f.Var(&c.tags, "tag", "only sandboxes with tag KEY=VALUE (repeatable; all must match)")
	f.BoolVarP(&c.all, "all", "a", false, "include finished sandboxes")
	f.BoolVar(&c.json, "json", false, "print a JSON array (the view of inspect --json)")
	return cmd
}

// writeTable prints one row per sandbox; empty cells are "-" so that columns
// split on whitespace.
func writeTable(w io.Writer, infos []sandboxd.Info, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPP\tNAME\tIMAGE\tSTATE\tAGE\tTAGS")
	for _, i := range infos {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, orDash(i.App), orDash(i.Name),
			orDash(i.Image), orDash(string(i.State)), age(now, i.CreatedAt), oneLine(joinKV(i.Tags)))
	}
	return tw.Flush()
}

// age renders how long ago t was, in its largest whole unit: 45s, 12m, 3h, 2d.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}
