package store

import (
	"context"
	"testing"
)

// Migration 4 upgrades a database of version 3 that holds data: the
// live_mounts table appears, the old rows stay, and a path is unique per
// sandbox.
func TestMigrationLiveMounts(t *testing.T) {
	ctx := context.Background()
	path := dbAtVersion(t, 3, `INSERT INTO apps (name, created_at) VALUES ('a', 1)`)
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
	ins := `INSERT INTO live_mounts (sandbox_id, path, image_ref, image_id, stage, mounted_at) VALUES ('sb-1', '/w', 'x', 'im-1', ?, 1)`
	if _, err := db.ExecContext(ctx, ins, "m1"); err != nil {
		t.Fatalf("insert live mount: %v", err)
	}
	if _, err := db.ExecContext(ctx, ins, "m2"); err == nil {
		t.Error("a second live mount at the same path of the same sandbox was accepted")
	}
}
