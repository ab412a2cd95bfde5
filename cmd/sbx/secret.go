package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// newSecretCmd groups the secret commands. No command ever prints a
// secret's value, nor quotes a KEY=VALUE argument in an error.
func newSecretCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage named secrets (create, ls, rm)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSecretCreateCmd(a), newSecretLsCmd(a), newSecretRmCmd(a))
	return cmd
}

func newSecretCreateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME KEY=VALUE...",
		Short: "Create or replace a secret",
		Args:  withUsage(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			values, err := parseKVs(args[1:], true)
			if err != nil {
				return fmt.Errorf("secret create %s: %w", args[0], err)
			}
			client, err := a.newClient()
			if err != nil {
				return err
			}
			if err := client.CreateSecret(cmd.Context(), args[0], values); err != nil {
				return fmt.Errorf("secret create %s: %w", args[0], err)
			}
			return nil
		},
	}
}

func newSecretLsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List secrets: names and keys",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			secrets, err := client.ListSecrets(cmd.Context())
			if err != nil {
				return fmt.Errorf("secret ls: %w", err)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKEYS")
			for _, s := range secrets {
				fmt.Fprintf(tw, "%s\t%s\n", s.Name, orDash(strings.Join(s.Keys, ",")))
			}
			return tw.Flush()
		},
	}
}

func newSecretRmCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "Delete secrets",
		Args:    withUsage(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := a.newClient()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := client.DeleteSecret(cmd.Context(), name); err != nil {
					return fmt.Errorf("secret rm %s: %w", name, err)
				}
			}
			return nil
		},
	}
}
