package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"reflect"
)

// The SQLite driver prepares a query's text and finalizes it at every call
// that does not go through a prepared *sql.Stmt, and parsing is the
// costliest part of the small queries the daemon runs: in a loop of 1 MiB
// filesystem snapshots it was a sixth of the daemon's CPU (pprof). So each
// connection keeps the statements it prepared, by query text, and runs a
// query it has seen again on its statement (the driver resets a statement
// for reuse). database/sql uses a connection from one goroutine at a time;
// a statement still reading rows (a query inside the loop over another's
// rows, in a transaction) is not handed out twice: the second use gets a
// statement of its own, closed after it.

// maxCachedStmts bounds the statements a connection keeps; queries beyond
// it are prepared per call, as without the cache. The daemon's queries are
// texts in its code, fewer than this.
const maxCachedStmts = 256

// cachingConnector opens the SQLite driver's connections (through its own
// connector), each with a statement cache.
type cachingConnector struct{ driver.Connector }

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	raw, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	rc, ok := raw.(rawConn)
	if !ok {
		raw.Close()
		return nil, errors.New("sqlite driver: connection lacks context methods")
	}
	return &cachedConn{rawConn: rc, stmts: map[string]*cachedStmt{}}, nil
}

// rawConn is what the SQLite driver's connections can do that database/sql
// uses.
type rawConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// execQueryStmt is a prepared statement of the SQLite driver.
type execQueryStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

type cachedStmt struct {
	s    execQueryStmt
	busy bool
}

// cachedConn is a connection that keeps its prepared statements. It is
// used by one goroutine at a time (database/sql's rule).
type cachedConn struct {
	rawConn
	stmts map[string]*cachedStmt
}

var (
	_ driver.ExecerContext  = (*cachedConn)(nil)
	_ driver.QueryerContext = (*cachedConn)(nil)
)

// stmt returns a statement for query and what to call once done with it.
func (c *cachedConn) stmt(ctx context.Context, query string) (execQueryStmt, func(), error) {
	cs := c.stmts[query]
	if cs != nil && !cs.busy {
		cs.busy = true
		return cs.s, func() { cs.busy = false }, nil
	}
	ds, err := c.rawConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	s, ok := ds.(execQueryStmt)
	if !ok {
		ds.Close()
		return nil, nil, errors.New("sqlite driver: statement lacks context methods")
	}
	if cs == nil && len(c.stmts) < maxCachedStmts {
		cs = &cachedStmt{s: s, busy: true}
		c.stmts[query] = cs
		return s, func() { cs.busy = false }, nil
	}
	return s, func() { s.Close() }, nil
}

func (c *cachedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, done, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.ExecContext(ctx, args)
}

func (c *cachedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, done, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := s.QueryContext(ctx, args)
	if err != nil {
		done()
		return nil, err
	}
	return &doneRows{Rows: rows, done: done}, nil
}

// Close closes the kept statements, then the connection.
func (c *cachedConn) Close() error {
	var errs []error
	for q, cs := range c.stmts {
		errs = append(errs, cs.s.Close())
		delete(c.stmts, q)
	}
	return errors.Join(append(errs, c.rawConn.Close())...)
}

// doneRows gives its statement back when closed.
type doneRows struct {
	driver.Rows
	done func()
}

func (r *doneRows) Close() error {
	err := r.Rows.Close()
	if r.done != nil {
		r.done()
		r.done = nil
	}
	return err
}

// The column type methods of the driver's rows (sql.Rows.ColumnTypes).

func (r *doneRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *doneRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *doneRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}
