package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// ttlFlag is an optional life after last use: unset keeps the daemon's
// default; "0" or "never" means no expiry.
type ttlFlag struct{ d *time.Duration }

func (f *ttlFlag) Set(s string) error {
	if s == "never" {
		f.d = new(time.Duration)
		return nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	f.d = &d
	return nil
}

func (f *ttlFlag) Type() string { return "DUR" }

func (f *ttlFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

const ttlUsage = "life after last use: a duration (90m, 72h), or 0/never for no expiry"

// syncUsage describes --sync of snapshot-fs and snapshot-dir.
const syncUsage = "return once the image is on disk (survives a machine crash); without, its new layer is written in the background"

func newSnapshotFSCmd(a *app) *cobra.Command {
	var ttl ttlFlag
	var sync bool
	cmd := &cobra.Command{
		Use:   "snapshot-fs [--ttl DUR] [--sync] ID",
		Short: "Record a running sandbox's root filesystem as an image and print its id",
		Long: "Record a running sandbox's whole root filesystem as a new image (its image's layers plus\n" +
			"one layer of its changes) and print the image id (im-...). The sandbox keeps running.\n" +
			"Without --ttl the image lives until deleted. /tmp (a tmpfs) and mounted images are not included.\n" +
			"The image is usable at once; its new layer reaches the disk in the background unless --sync.",
		Args: withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			sb, err := sandboxRef(cmd.Context(), client, args[0])
			if err != nil {
				return err
			}
			img, err := sb.SnapshotFilesystem(cmd.Context(), sandboxd.SnapshotOptions{TTL: ttl.d, WaitDurable: sync})
			if err != nil {
				return fmt.Errorf("snapshot-fs: %w", err)
			}
			_, err = fmt.Fprintln(a.stdout, img.ID)
			return err
		},
	}
	cmd.Flags().Var(&ttl, "ttl", ttlUsage+" (default: no expiry)")
	cmd.Flags().BoolVar(&sync, "sync", false, syncUsage)
	return cmd
}

func newSnapshotDirCmd(a *app) *cobra.Command {
	var ttl ttlFlag
	var sync bool
	cmd := &cobra.Command{
		Use:   "snapshot-dir [--ttl DUR] [--sync] ID PATH",
		Short: "Record one directory of a running sandbox as an image and print its id",
		Long: "Record the tree at PATH (absolute) in a running sandbox as a new image holding it at its\n" +
			"root, and print the image id (im-...). Mount it with create --mount IMAGE:/path.\n" +
			"Without --ttl the image lives 30 days after its last use. The image is usable at once;\n" +
			"its layer reaches the disk in the background unless --sync.",
		Args: withUsage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			sb, err := sandboxRef(cmd.Context(), client, args[0])
			if err != nil {
				return err
			}
			img, err := sb.SnapshotDirectory(cmd.Context(), args[1], sandboxd.SnapshotOptions{TTL: ttl.d, WaitDurable: sync})
			if err != nil {
				return fmt.Errorf("snapshot-dir: %w", err)
			}
			_, err = fmt.Fprintln(a.stdout, img.ID)
			return err
		},
	}
	cmd.Flags().Var(&ttl, "ttl", ttlUsage+" (default: 30 days)")
	cmd.Flags().BoolVar(&sync, "sync", false, syncUsage)
	return cmd
}

func newImagesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "List, inspect and delete images",
		Args:  withUsage(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var asJSON bool
	ls := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List images, oldest first",
		Args:    withUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			list, err := client.ListImages(cmd.Context())
			if err != nil {
				return fmt.Errorf("images ls: %w", err)
			}
			if asJSON {
				views := make([]imageView, 0, len(list))
				for _, im := range list {
					views = append(views, newImageView(im))
				}
				return writeJSON(a.stdout, views)
			}
			return writeImageTable(a.stdout, list, time.Now())
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print a JSON array (the view of images inspect)")
	inspect := &cobra.Command{
		Use:   "inspect IMAGE",
		Short: "Show one image as JSON (layers, size, source, expiry, last use)",
		Args:  withUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			im, err := client.GetImage(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("images inspect %s: %w", args[0], err)
			}
			return writeJSON(a.stdout, newImageView(im))
		},
	}
	rm := &cobra.Command{
		Use:     "rm IMAGE...",
		Aliases: []string{"delete"},
		Short:   "Delete images (refused while sandboxes use them)",
		Args:    withUsage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			for _, ref := range args {
				if err := client.DeleteImage(cmd.Context(), ref); err != nil {
					return fmt.Errorf("images rm %s: %w", ref, err)
				}
			}
			return nil
		},
	}
	cmd.AddCommand(ls, inspect, rm)
	return cmd
}

// imageView is an image as sbx prints it in JSON.
type imageView struct {
	ID        string     `json:"id"`
	Names     []string   `json:"names"`
	Layers    []string   `json:"layers"`
	SizeBytes int64      `json:"size_bytes"`
	Source    string     `json:"source"`
	CreatedAt time.Time  `json:"created_at"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
	IdleTTL   string     `json:"idle_ttl,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Durable   bool       `json:"durable"` // all its layers are on disk
}

func newImageView(im sandboxd.Image) imageView {
	v := imageView{ID: im.ID, Names: im.Names, Layers: im.Layers, SizeBytes: im.Size, Source: im.Source, CreatedAt: im.CreatedAt,
		Durable: im.Durable}
	if v.Names == nil {
		v.Names = []string{}
	}
	if !im.LastUsed.IsZero() {
		v.LastUsed = &im.LastUsed
	}
	if !im.ExpiresAt.IsZero() {
		v.ExpiresAt = &im.ExpiresAt
	}
	if im.IdleTTL > 0 {
		v.IdleTTL = im.IdleTTL.String()
	}
	return v
}

func writeImageTable(w io.Writer, list []sandboxd.Image, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAMES\tLAYERS\tSIZE\tSOURCE\tAGE\tEXPIRES")
	for _, im := range list {
		expires := "never"
		if !im.ExpiresAt.IsZero() {
			expires = im.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", im.ID, orDash(strings.Join(im.Names, ",")), len(im.Layers),
			humanSize(im.Size), orDash(im.Source), age(now, im.CreatedAt), expires)
	}
	return tw.Flush()
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// mountFlag is a repeatable IMAGE:/PATH flag (create --mount).
type mountFlag struct{ ms []sandboxd.Mount }

func (f *mountFlag) Set(s string) error {
	img, p, ok := strings.Cut(s, ":/")
	if !ok || img == "" {
		return fmt.Errorf("%q is not IMAGE:/PATH", s)
	}
	f.ms = append(f.ms, sandboxd.Mount{Image: img, Path: "/" + p})
	return nil
}

func (f *mountFlag) Type() string { return "IMAGE:/PATH" }

func (f *mountFlag) String() string {
	parts := make([]string, 0, len(f.ms))
	for _, m := range f.ms {
		parts = append(parts, m.Image+":"+m.Path)
	}
	return strings.Join(parts, ",")
}
