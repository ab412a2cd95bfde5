package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/sandboxd/sandboxd/internal/agent"
)

// initCmd is `sandbox-agent init`: load the config, start the entrypoint,
// serve until SIGTERM or SIGINT, then kill every exec.
type initCmd struct {
	config    string
	subreaper bool
	debug     bool
}

func (c *initCmd) run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.StringVar(&c.config, "config", "", "path of the JSON config (agent.Config)")
	fs.BoolVar(&c.subreaper, "subreaper", false, "when not PID 1, become a child subreaper and reap all children")
	fs.BoolVar(&c.debug, "debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.config == "" {
		return fmt.Errorf("init: --config is required")
	}
	level := slog.LevelInfo
	if c.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// Capabilities only the agent holds must not reach what it executes.
	if err := agent.ClearInheritableCaps(); err != nil {
		return fmt.Errorf("confine capabilities: %w", err)
	}
	cfg, err := agent.LoadConfig(c.config)
	if err != nil {
		return err
	}
	reapAll := os.Getpid() == 1
	if !reapAll && c.subreaper {
		if err := agent.SetSubreaper(); err != nil {
			return fmt.Errorf("set child subreaper: %w", err)
		}
		reapAll = true
	}
	// Listen before starting the entrypoint so the daemon can connect as
	// soon as the sandbox runs.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	a, err := agent.New(cfg, agent.Options{Logger: log, ReapAll: reapAll})
	if err != nil {
		ln.Close()
		return err
	}
	defer a.Close()
	log.Info("agent serving", "sandbox_id", cfg.SandboxID, "addr", ln.Addr().String(), "pid", os.Getpid(), "reap_all", reapAll)
	err = a.Serve(ctx, ln)
	log.Info("agent stopping", "sandbox_id", cfg.SandboxID)
	return err
}
