package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newTerminateCmd: sbx terminate ID... ends sandboxes. Ending a finished
// sandbox is not an error. It stops at the first failure.
func newTerminateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "terminate ID...",
		Short: "End sandboxes",
		Args:  withUsage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			for _, ref := range args {
				sb, err := sandboxRef(cmd.Context(), client, ref)
				if err != nil {
					return err
				}
				if err := sb.Terminate(cmd.Context()); err != nil {
					return fmt.Errorf("terminate %s: %w", ref, err)
				}
			}
			return nil
		},
	}
}
