package store

import (
	"context"
	"testing"
)

// Migration 2 upgrades a database of version 1 that holds data: the
// snapshot tables appear and the old rows stay.
func TestMigrationSnapshots(t *testing.T) {
	ctx := context.Background()
	path := dbAtVersion(t, 1, `INSERT INTO apps (name, created_at) VALUES ('a', 1)`)
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	defer db.Close()
	var n int
	db.QueryRowContext(ctx, `SELECT COUNT(*) FROM apps`).Scan(&n)
	if n != 1 {
		t.Errorf("got %d apps after the upgrade, want 1", n)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO snapshots (id, source_sandbox_id, app, record_json, size, checksum, created_at, expires_at)
		VALUES ('sn-1', 'sb-1', 'a', '{}', 10, 'sha256:x', 1, 2)`); err != nil {
		t.Errorf("insert snapshot: %v", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO sandbox_origins (sandbox_id, snapshot_id, expires_at) VALUES ('sb-2', 'sn-1', 2)`); err != nil {
		t.Errorf("insert origin: %v", err)
	}
}
