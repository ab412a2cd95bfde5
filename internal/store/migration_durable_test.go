package store

import (
	"context"
	"testing"
)

// Migration 5 upgrades a database of version 4 that holds layers: they stay,
// all durable (they were flushed before they were recorded), and new rows
// can say they are not.
func TestMigrationLayerDurable(t *testing.T) {
	ctx := context.Background()
	path := dbAtVersion(t, 4, `INSERT INTO layers (digest, size, created_at) VALUES ('sha256:old', 1, 1)`)
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `INSERT INTO layers (digest, size, created_at, durable) VALUES ('sha256:new', 1, 2, 0)`); err != nil {
		t.Fatalf("insert a layer not durable: %v", err)
	}
	for digest, want := range map[string]bool{"sha256:old": true, "sha256:new": false} {
		var got bool
		if err := db.QueryRowContext(ctx, `SELECT durable FROM layers WHERE digest = ?`, digest).Scan(&got); err != nil {
			t.Fatalf("%s: %v", digest, err)
		}
		if got != want {
			t.Errorf("%s: got durable %v, want %v", digest, got, want)
		}
	}
}
