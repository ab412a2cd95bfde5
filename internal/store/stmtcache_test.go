package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

func openTestDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// cachedStmts returns how many statements the database's one connection
// keeps.
func cachedStmts(t *testing.T, db *sql.DB) int {
	t.Helper()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := -1
	c.Raw(func(dc any) error {
		n = len(dc.(*cachedConn).stmts)
		return nil
	})
	return n
}

func TestStmtCacheReusesStatements(t *testing.T) {
	db := openTestDB(t)
	before := cachedStmts(t, db)
	for i := range 50 {
		if _, err := db.Exec(`INSERT INTO kv (k, v) VALUES (?, ?)`, fmt.Sprint("k", i), i); err != nil {
			t.Fatal(err)
		}
		var v int
		if err := db.QueryRow(`SELECT v FROM kv WHERE k = ?`, fmt.Sprint("k", i)).Scan(&v); err != nil || v != i {
			t.Fatalf("read back k%d: %d, %v", i, v, err)
		}
	}
	if got := cachedStmts(t, db) - before; got != 2 {
		t.Errorf("50 runs of 2 queries kept %d new statements, want 2", got)
	}
}

// A query run again while its statement still reads rows (inside the loop
// over them, on the same connection: a transaction) gets a statement of
// its own, and both read what they should.
func TestStmtCacheNestedSameQuery(t *testing.T) {
	db := openTestDB(t)
	for i := range 3 {
		db.Exec(`INSERT INTO kv (k, v) VALUES (?, ?)`, fmt.Sprint("k", i), i)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	const q = `SELECT k, v FROM kv WHERE v >= ? ORDER BY v`
	rows, err := tx.Query(q, 0)
	if err != nil {
		t.Fatal(err)
	}
	var outer []string
	for rows.Next() {
		var k string
		var v int
		rows.Scan(&k, &v)
		outer = append(outer, k)
		inner, err := tx.Query(q, v)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for inner.Next() {
			n++
		}
		inner.Close()
		if want := 3 - v; n != want {
			t.Errorf("inner query from %d gave %d rows, want %d", v, n, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if fmt.Sprint(outer) != "[k0 k1 k2]" {
		t.Errorf("outer query gave %v, want [k0 k1 k2]", outer)
	}
}

// A statement that failed (a constraint) runs again afterwards.
func TestStmtCacheAfterError(t *testing.T) {
	db := openTestDB(t)
	const ins = `INSERT INTO kv (k, v) VALUES (?, ?)`
	if _, err := db.Exec(ins, "a", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ins, "a", 2); err == nil {
		t.Fatal("a duplicate key was inserted")
	}
	if _, err := db.Exec(ins, "b", 2); err != nil {
		t.Fatalf("insert after a failed one: %v", err)
	}
	var n int
	db.QueryRow(`SELECT COUNT(*) FROM kv`).Scan(&n)
	if n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
}

// Rows left unread and closed early give the statement back.
func TestStmtCacheRowsClosedEarly(t *testing.T) {
	db := openTestDB(t)
	for i := range 5 {
		db.Exec(`INSERT INTO kv (k, v) VALUES (?, ?)`, fmt.Sprint("k", i), i)
	}
	for range 3 {
		rows, err := db.Query(`SELECT v FROM kv ORDER BY v`)
		if err != nil {
			t.Fatal(err)
		}
		rows.Next()
		var v int
		rows.Scan(&v)
		rows.Close()
		if v != 0 {
			t.Fatalf("first row %d, want 0", v)
		}
	}
}
