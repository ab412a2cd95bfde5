package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// createCmd creates a sandbox and prints its id alone on stdout.
type createCmd struct {
	app       string
	name      string
	image     string
	env       kvFlag
	secrets   []string
	workdir   string
	timeout   time.Duration
	cpu       float64
	memoryMiB int64
	tags      kvFlag
	mounts    mountFlag
}

func newCreateCmd(a *app) *cobra.Command {
	c := &createCmd{}
	cmd := &cobra.Command{
		Use:   "create [flags] [-- ENTRYPOINT ARGS...]",
		Short: "Create a sandbox and print its id",
		Long: "Create a sandbox and print its id (sb-...) alone on stdout.\n" +
			"With an entrypoint, the sandbox ends when the entrypoint exits, with its exit code.",
		RunE: func(cmd *cobra.Command, args []string) error {
			entrypoint, err := entrypointArgs(args, cmd.ArgsLenAtDash())
			if err != nil {
				return err
			}
			return c.run(cmd, a, entrypoint)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.app, "app", "", "app the sandbox belongs to (default app if empty)")
	f.StringVar(&c.name, "name", "", "name, unique among the app's running sandboxes")
	f.StringVar(&c.image, "image", "", "image reference (the daemon's default if empty)")
	f.Var(&c.env, "env", "environment variable KEY=VALUE (repeatable)")
	f.StringArrayVar(&c.secrets, "secret", nil, "name of a secret whose keys join the environment (repeatable)")
	f.StringVar(&c.workdir, "workdir", "", "working directory")
	f.Var(durationFlag{&c.timeout}, "timeout", "lifetime: a duration (30s, 5m, 2h) or seconds (default 5m)")
	f.Float64Var(&c.cpu, "cpu", 0, "CPUs (may be fractional)")
	f.Int64Var(&c.memoryMiB, "memory", 0, "memory limit in MiB")
	f.Var(&c.tags, "tag", "tag KEY=VALUE (repeatable)")
	f.Var(&c.mounts, "mount", "mount image IMAGE at absolute PATH, copy-on-write: IMAGE:/PATH (repeatable)")
	return cmd
}

// entrypointArgs returns the arguments after "--"; nothing may come before it.
func entrypointArgs(args []string, dashAt int) ([]string, error) {
	if dashAt < 0 {
		dashAt = len(args)
	}
	if dashAt > 0 {
		return nil, fmt.Errorf("unexpected argument %q (put the entrypoint after --)", args[0])
	}
	return args[dashAt:], nil
}

func (c *createCmd) run(cmd *cobra.Command, a *app, entrypoint []string) error {
	if c.cpu < 0 {
		return errors.New("--cpu must not be negative")
	}
	if c.memoryMiB < 0 {
		return errors.New("--memory must not be negative")
	}
	client, err := a.newClient()
	if err != nil {
		return err
	}
	sb, err := client.Create(cmd.Context(), sandboxd.CreateOptions{
		App: c.app, Name: c.name, Image: c.image, Entrypoint: entrypoint,
		Env: c.env.m, Secrets: c.secrets, Workdir: c.workdir, Timeout: c.timeout,
		CPU: c.cpu, MemoryMiB: c.memoryMiB, Tags: c.tags.m, Mounts: c.mounts.ms,
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	_, err = fmt.Fprintln(a.stdout, sb.ID)
	return err
}
