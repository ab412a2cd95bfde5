package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// snapshotCmd: sbx snapshot [--ttl DUR] ID prints the new snapshot's id.
type snapshotCmd struct{ ttl time.Duration }

func newSnapshotCmd(a *app) *cobra.Command {
	c := &snapshotCmd{}
	cmd := &cobra.Command{
		Use:   "snapshot [--ttl DUR] ID|APP/NAME",
		Short: "Take a memory snapshot of a running sandbox (it keeps running); prints the snapshot id",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			sb, err := sandboxRef(cmd.Context(), client, args[0])
			if err != nil {
				return err
			}
			sn, err := sb.Snapshot(cmd.Context(), c.ttl)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", args[0], err)
			}
			_, err = fmt.Fprintln(a.stdout, sn.ID)
			return err
		},
	}
	cmd.Flags().Var(durationFlag{&c.ttl}, "ttl", "lifetime (default: the parent snapshot's expiry for a restored sandbox, else 7 days)")
	return cmd
}

// restoreCmd: sbx restore [--name N|--no-name] SN prints the new sandbox's id.
type restoreCmd struct {
	name   string
	noName bool
}

func newRestoreCmd(a *app) *cobra.Command {
	c := &restoreCmd{}
	cmd := &cobra.Command{
		Use:   "restore [--name N|--no-name] SNAPSHOT",
		Short: "Start a new sandbox from a snapshot; prints the new sandbox's id",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if c.noName && c.name != "" {
				return errors.New("restore: --name and --no-name exclude each other")
			}
			client, err := a.newClient()
			if err != nil {
				return err
			}
			sb, err := client.Restore(cmd.Context(), args[0], sandboxd.RestoreOptions{Name: c.name, NoName: c.noName})
			if err != nil {
				return fmt.Errorf("restore %s: %w", args[0], err)
			}
			_, err = fmt.Fprintln(a.stdout, sb.ID)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.name, "name", "", "name the new sandbox N (default: the snapshot's name)")
	f.BoolVar(&c.noName, "no-name", false, "restore without a name")
	return cmd
}

// snapshotsCmd: sbx snapshots ls|inspect|rm.
func newSnapshotsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshots",
		Short: "List, inspect and delete snapshots",
		Args:  cobra.NoArgs,
	}
	var asJSON bool
	ls := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List snapshots, newest first",
		Args:    withUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			list, err := client.ListSnapshots(cmd.Context())
			if err != nil {
				return fmt.Errorf("list snapshots: %w", err)
			}
			if asJSON {
				views := make([]snapshotView, 0, len(list))
				for _, s := range list {
					views = append(views, newSnapshotView(s))
				}
				return writeJSON(a.stdout, views)
			}
			return writeSnapshotTable(a.stdout, list, time.Now())
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	var inspectJSON bool
	inspect := &cobra.Command{
		Use:   "inspect SNAPSHOT",
		Short: "Show a snapshot: size, parent, source sandbox, expiry",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			s, err := client.GetSnapshot(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if inspectJSON {
				return writeJSON(a.stdout, newSnapshotView(s))
			}
			return writeSnapshot(a.stdout, s)
		},
	}
	inspect.Flags().BoolVar(&inspectJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:   "rm SNAPSHOT...",
		Short: "Delete snapshots",
		Args:  withUsage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := client.DeleteSnapshot(cmd.Context(), id); err != nil {
					return fmt.Errorf("rm %s: %w", id, err)
				}
			}
			return nil
		},
	}
	cmd.AddCommand(ls, inspect, rm)
	return cmd
}

// snapshotView is the JSON form of a snapshot: add fields, never rename them.
type snapshotView struct {
	ID              string    `json:"id"`
	SourceSandboxID string    `json:"source_sandbox_id"`
	ParentID        string    `json:"parent_snapshot_id"`
	App             string    `json:"app"`
	Name            string    `json:"name"`
	ImageID         string    `json:"image_id"`
	SizeBytes       int64     `json:"size_bytes"`
	Checksum        string    `json:"checksum"`
	CreatedAt       time.Time `json:"created_at"`
	ExpiresAt       time.Time `json:"expires_at"`
}

func newSnapshotView(s sandboxd.Snapshot) snapshotView {
	return snapshotView{
		ID: s.ID, SourceSandboxID: s.SourceSandboxID, ParentID: s.ParentID, App: s.App, Name: s.Name,
		ImageID: s.ImageID, SizeBytes: s.Size, Checksum: s.Checksum, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt,
	}
}

func writeSnapshotTable(w io.Writer, list []sandboxd.Snapshot, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tPARENT\tAPP\tNAME\tSIZE\tAGE\tEXPIRES")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%dMiB\t%s\t%s\n", s.ID, s.SourceSandboxID, orDash(s.ParentID),
			orDash(s.App), orDash(s.Name), (s.Size+(1<<20)-1)>>20, age(now, s.CreatedAt), s.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// writeSnapshot prints aligned "key: value" lines.
func writeSnapshot(w io.Writer, s sandboxd.Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, r := range [][2]string{
		{"id", s.ID}, {"source sandbox", s.SourceSandboxID}, {"parent snapshot", orDash(s.ParentID)},
		{"app", orDash(s.App)}, {"name", orDash(s.Name)}, {"image", orDash(s.ImageID)},
		{"size", fmt.Sprintf("%d bytes", s.Size)}, {"checksum", s.Checksum},
		{"created", s.CreatedAt.UTC().Format(time.RFC3339)}, {"expires", s.ExpiresAt.UTC().Format(time.RFC3339)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}
