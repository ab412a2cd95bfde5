package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// Migration 5 upgrades a database of version 4 that holds layers: they stay,
// all durable (they were flushed before they were recorded), and new rows
// can say they are not.
func TestMigrationLayerDurable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	all := migrations
	migrations = all[:4]
	err = Migrate(ctx, db)
	migrations = all
	if err != nil {
		t.Fatalf("migrate to 4: %v", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO layers (digest, size, created_at) VALUES ('sha256:old', 1, 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = Open(ctx, path)
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
