package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newWaitCmd: sbx wait ID blocks until the sandbox finishes and exits with
// its exit code (124 after its timeout, 137 after terminate).
func newWaitCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a sandbox to finish; exit with its exit code",
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
			code, err := sb.Wait(cmd.Context())
			if err != nil {
				return fmt.Errorf("wait %s: %w", args[0], err)
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
}

// newPollCmd: sbx poll ID prints "running" or the sandbox's exit code, and
// exits 0 either way.
func newPollCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "poll ID",
		Short: `Print "running" or the sandbox's exit code`,
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
			code, err := sb.Poll(cmd.Context())
			if err != nil {
				return fmt.Errorf("poll %s: %w", args[0], err)
			}
			if code == nil {
				_, err = fmt.Fprintln(a.stdout, "running")
			} else {
				_, err = fmt.Fprintln(a.stdout, *code)
			}
			return err
		},
	}
}
