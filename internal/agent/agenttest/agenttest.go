// Package agenttest runs an in-process agent for tests of the agent and of
// its clients. Only tests import it.
package agenttest

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agentclient"
)

// Token is the bearer token Start uses when cfg has none.
const Token = "test-token"

// Start serves an agent with cfg on 127.0.0.1:0 until the test ends and
// returns a client for it and its address. The agent logs through t.Log.
func Start(t testing.TB, cfg agent.Config, opts agent.Options) (*agentclient.Client, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return StartOn(t, ln, cfg, opts)
}

// StartOn is Start on a given listener, which it closes.
func StartOn(t testing.TB, ln net.Listener, cfg agent.Config, opts agent.Options) (*agentclient.Client, string) {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = Token
	}
	lw := &logWriter{t: t}
	t.Cleanup(lw.stop) // registered first: runs last
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	a, err := agent.New(cfg, opts)
	if err != nil {
		ln.Close()
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		a.Close()
	})
	addr := ln.Addr().String()
	c := agentclient.New(addr, cfg.Token)
	t.Cleanup(c.Close)
	return c, addr
}

// logWriter forwards log lines to t.Log while the test runs.
type logWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *logWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}
