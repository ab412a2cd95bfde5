package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// logsCmd copies a sandbox's entrypoint output: its stdout to stdout, its
// stderr to stderr.
type logsCmd struct {
	follow bool
}

func newLogsCmd(a *app) *cobra.Command {
	c := &logsCmd{}
	cmd := &cobra.Command{
		Use:   "logs [-f] ID",
		Short: "Print a sandbox's entrypoint output",
		Long: "Print a sandbox's entrypoint output, its stdout to stdout and its stderr to stderr.\n" +
			"With -f, keep printing until the sandbox finishes.",
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
			if err := sb.Logs(cmd.Context(), c.follow, a.stdout, a.stderr); err != nil {
				return fmt.Errorf("logs %s: %w", args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&c.follow, "follow", "f", false, "follow the output until the sandbox finishes")
	return cmd
}
