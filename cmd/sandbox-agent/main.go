// Command sandbox-agent is the init process (PID 1) of every sandbox. The
// daemon starts it as `sandbox-agent init --config PATH`; it serves
// AgentService (see internal/agent) until it is told to stop.
//
// Build it static: CGO_ENABLED=0 go build ./cmd/sandbox-agent.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: sandbox-agent init --config PATH")
	}
	switch args[0] {
	case "init":
		return (&initCmd{}).run(ctx, args[1:])
	default:
		return fmt.Errorf("unknown command %q (usage: sandbox-agent init --config PATH)", args[0])
	}
}
