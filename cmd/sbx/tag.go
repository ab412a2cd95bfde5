package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newTagCmd: sbx tag ID K=V... replaces the sandbox's tags with exactly
// these (none clears them). It prints nothing on success.
func newTagCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "tag ID [KEY=VALUE...]",
		Short: "Set a sandbox's tags (replacing them all)",
		Args:  withUsage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			tags, err := parseKVs(args[1:], false)
			if err != nil {
				return err
			}
			client, err := a.newClient()
			if err != nil {
				return err
			}
			sb, err := sandboxRef(cmd.Context(), client, args[0])
			if err != nil {
				return err
			}
			if err := sb.SetTags(cmd.Context(), tags); err != nil {
				return fmt.Errorf("tag %s: %w", args[0], err)
			}
			return nil
		},
	}
}
