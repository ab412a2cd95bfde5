package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// dbAtVersion makes a database of schema version v (the first v migrations),
// runs seed on it, and returns its path, closed: a migration test opens it
// with Open to upgrade it.
func dbAtVersion(t *testing.T, v int, seed string) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	all := migrations
	migrations = all[:v]
	err = Migrate(ctx, db)
	migrations = all
	if err != nil {
		t.Fatalf("migrate to %d: %v", v, err)
	}
	if _, err := db.ExecContext(ctx, seed); err != nil {
		t.Fatal(err)
	}
	return path
}
