package main

import (
	"context"
	"database/sql"
	"log/slog"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/provision"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/snapshot"
)

// openSnapshots opens the snapshot store of cfg, cleans what a crash left
// and starts its expiry collector; the returned func stops the collector and
// removes the restore targets.
func openSnapshots(ctx context.Context, cfg *Config, db *sql.DB, mgr *sandbox.Manager, prov *provision.Provisioner,
	log *slog.Logger) (*sandbox.Snapshots, func(), error) {
	slog := log.With("component", "snapshot")
	st, err := snapshot.New(db, cfg.DataDir, clock.Real{}, slog, snapshot.Config{})
	if err != nil {
		return nil, nil, err
	}
	if err := st.Startup(ctx); err != nil {
		return nil, nil, err
	}
	stopCollector := st.StartCollector()
	snaps := sandbox.NewSnapshots(mgr, st, prov, slog)
	snaps.SetRestoreTargets(cfg.RestoreTargets)
	stop := func() {
		stopCollector()
		snaps.Close()
	}
	return snaps, stop, nil
}
