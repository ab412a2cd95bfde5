package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Images mounted into running sandboxes: sbx mount, sbx unmount, sbx mounts.

// newMountCmd: sbx mount ID PATH IMAGE mounts an image at PATH of a running
// sandbox (copy-on-write, nothing copied).
func newMountCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "mount ID|APP/NAME PATH IMAGE",
		Short: "Mount an image at an absolute path of a running sandbox (copy-on-write; replaces what the path shows)",
		Args:  withUsage(cobra.ExactArgs(3)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			sb, err := sandboxRef(cmd.Context(), client, args[0])
			if err != nil {
				return err
			}
			if _, err := sb.MountImage(cmd.Context(), args[2], args[1]); err != nil {
				return fmt.Errorf("mount %s at %s: %w", args[2], args[1], err)
			}
			return nil
		},
	}
}

// newUnmountCmd: sbx unmount ID PATH undoes sbx mount.
func newUnmountCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "unmount ID|APP/NAME PATH",
		Short: "Unmount an image mounted into a running sandbox; the path shows what it held before",
		Args:  withUsage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			sb, err := sandboxRef(cmd.Context(), client, args[0])
			if err != nil {
				return err
			}
			if err := sb.UnmountImage(cmd.Context(), args[1]); err != nil {
				return fmt.Errorf("unmount %s: %w", args[1], err)
			}
			return nil
		},
	}
}

// newMountsCmd: sbx mounts ID lists the images mounted into a running
// sandbox: PATH, IMAGE ID, reference, when.
func newMountsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "mounts ID|APP/NAME",
		Short: "List the images mounted into a running sandbox with sbx mount",
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
			lms, err := sb.Mounts(cmd.Context())
			if err != nil {
				return fmt.Errorf("mounts of %s: %w", args[0], err)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PATH\tIMAGE ID\tIMAGE\tMOUNTED")
			for _, lm := range lms {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", lm.Path, lm.ImageID, lm.Image, lm.MountedAt.Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
}
