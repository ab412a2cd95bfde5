package store

import (
	"context"
	"path/filepath"
	"testing"
)

func TestOpenMigratesAndReopens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO apps (name, created_at) VALUES ('a', 1)`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	db.Close()

	db, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	var v, n int
	db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if v != len(migrations) {
		t.Errorf("got schema version %d, want %d", v, len(migrations))
	}
	db.QueryRowContext(ctx, `SELECT COUNT(*) FROM apps`).Scan(&n)
	if n != 1 {
		t.Errorf("got %d apps after reopen, want 1", n)
	}
}

func TestLiveNameUnique(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.ExecContext(ctx, `INSERT INTO apps (name, created_at) VALUES ('a', 1)`)
	ins := `INSERT INTO sandboxes (id, app, name, image_ref, image_id, spec_json, state, created_at) VALUES (?, 'a', 'n', 'i', 'i', '{}', ?, 1)`
	if _, err := db.ExecContext(ctx, ins, "sb-1", "running"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, ins, "sb-2", "running"); err == nil {
		t.Fatal("second running sandbox with the same name was accepted")
	}
	db.ExecContext(ctx, `UPDATE sandboxes SET state='finished' WHERE id='sb-1'`)
	if _, err := db.ExecContext(ctx, ins, "sb-3", "running"); err != nil {
		t.Fatalf("name not freed after the first finished: %v", err)
	}
}
