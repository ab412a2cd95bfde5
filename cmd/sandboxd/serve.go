package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/network"
	"github.com/sandboxd/sandboxd/internal/provision"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/secret"
	"github.com/sandboxd/sandboxd/internal/server"
)

func newLogger(debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func prepareCmd(cfg *Config) *cobra.Command {
	return &cobra.Command{
		Use:   "prepare",
		Short: "build or import the base images (busybox, debian-slim) into the data directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			abs, err := filepath.Abs(cfg.DataDir)
			if err != nil {
				return err
			}
			cfg.DataDir = abs
			log := newLogger(cfg.Debug)
			db, imgs, err := openImages(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer db.Close()
			defer imgs.Close()
			return ensureBases(ctx, imgs, image.BaseNames(), os.Stdout)
		},
	}
}

func serveCmd(cfg *Config) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "serve the sandboxd API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(); err != nil {
				return err
			}
			if err := cfg.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, newLogger(cfg.Debug))
		},
	}
}

func requireRoot() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("sandboxd must run as root (it makes namespaces, mounts and gVisor sandboxes)")
	}
	return nil
}

func serve(ctx context.Context, cfg *Config, log *slog.Logger) error {
	db, imgs, err := openImages(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	defer imgs.Close() // the layers still being flushed reach the disk first
	if !cfg.NoBaseBuild {
		if err := ensureBases(ctx, imgs, image.BaseNames(), os.Stderr); err != nil {
			return err
		}
	}
	token, err := loadToken(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	rt, err := runtime.New(runtime.Config{
		RunscPath: cfg.RunscPath, RootDir: filepath.Join(cfg.DataDir, "runsc"),
		LogDir: filepath.Join(cfg.DataDir, "logs", "runsc"), Debug: cfg.Debug,
	}, log.With("component", "runtime"))
	if err != nil {
		return err
	}
	defer closeRuntime(rt, log)
	chain := network.DefaultGuardChain
	if cfg.IfPrefix != network.DefaultIfPrefix {
		chain = "SANDBOXD-" + strings.ToUpper(cfg.IfPrefix)
	}
	nw, err := network.New(network.Config{CIDR: cfg.NetworkCIDR, IfPrefix: cfg.IfPrefix, GuardChain: chain},
		log.With("component", "network"))
	if err != nil {
		return err
	}
	defer nw.Close()
	if err := nw.EnsureGuard(ctx); err != nil {
		return fmt.Errorf("host guard: %w", err)
	}
	prov, err := provision.New(cfg.DataDir, cfg.AgentBin, rt, nw, imgs, log.With("component", "provision"))
	if err != nil {
		return err
	}
	secrets := secret.New(db, clock.Real{})
	mgr := sandbox.New(sandbox.Config{DataDir: cfg.DataDir, DefaultImage: cfg.DefaultImage}, sandbox.Deps{
		DB: db, Provisioner: prov, Agents: agentDialer{log: log.With("component", "agent")},
		Images: imageAdapter{imgs}, Secrets: secrets, Clock: clock.Real{}, Logger: log,
	})
	if err := mgr.Recover(ctx); err != nil {
		log.Error("recover", "err", err)
	}
	if err := mgr.StartPools(cfg.Pools); err != nil {
		mgr.Close()
		return fmt.Errorf("warm pools: %w", err)
	}
	// Expired filesystem and directory snapshots go once no sandbox uses them.
	go mgr.RunImageCollector(ctx, time.Minute)
	// Finished sandboxes and their logs go after the retention.
	retention := cfg.FinishedRetention
	if retention == 0 {
		retention = -1
	}
	go mgr.RunPruner(ctx, 10*time.Minute, retention)
	snaps, stopCollector, err := openSnapshots(ctx, cfg, db, mgr, prov, log)
	if err != nil {
		mgr.Close()
		return err
	}
	defer stopCollector()

	srv := &server.Server{Sandboxes: mgr, Secrets: secrets, Images: imageAdapter{imgs}, Snapshots: snaps, Token: token,
		FileSizeLimit: cfg.MaxFileSize}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: srv.Handler(), Protocols: &protos, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		mgr.Close()
		return err
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen); !isLoopback(host) {
		log.Warn("the API listens beyond loopback: anyone who can reach it with the token runs code here", "listen", cfg.Listen)
	}
	log.Info("sandboxd serving", "listen", ln.Addr().String(), "data_dir", cfg.DataDir)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	log.Info("sandboxd stopping; sandboxes keep running")
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	hs.Close()
	mgr.Close()
	if n := mgr.LiveCount(); n == 0 {
		if err := nw.RemoveGuard(context.Background()); err != nil {
			log.Warn("remove host guard", "err", err)
		}
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// closeRuntime releases what runsc keeps for all its containers once none
// is left (see runtime.Close); containers left running (for the next start)
// keep it, and the log says which.
func closeRuntime(rt *runtime.Runtime, log *slog.Logger) {
	if err := rt.Close(); err != nil {
		ids, _ := rt.List()
		log.Info("runsc root kept", "reason", err, "containers", ids)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
