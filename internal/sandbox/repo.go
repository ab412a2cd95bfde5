package sandbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// repo reads and writes sandbox records. Every method is one statement or one
// transaction.
type repo struct{ db *sql.DB }

const sandboxCols = `id, app, name, image_ref, image_id, spec_json, tags_json, state, finish_reason,
	exit_code, error, runtime_json, created_at, started_at, finished_at, deadline`

func (r repo) insert(ctx context.Context, sb *Sandbox) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("insert sandbox: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO apps (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING`,
		sb.Spec.App, sb.CreatedAt.UnixNano()); err != nil {
		return fmt.Errorf("insert app: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sandboxes (`+sandboxCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		sb.ID, sb.Spec.App, sb.Spec.Name, sb.Spec.Image, sb.ImageID, mustJSON(sb.Spec), mustJSON(sb.Tags),
		string(sb.State), string(sb.FinishReason), sb.ExitCode, sb.Error, "{}",
		sb.CreatedAt.UnixNano(), nanos(sb.StartedAt), nanos(sb.FinishedAt), nanos(sb.Deadline))
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE constraint failed") {
			return errdefs.AlreadyExists("a running sandbox named %q already exists in app %q", sb.Spec.Name, sb.Spec.App)
		}
		return fmt.Errorf("insert sandbox: %w", err)
	}
	return tx.Commit()
}

func (r repo) setRunning(ctx context.Context, id string, h Handle, started, deadline time.Time) error {
	_, err := r.db.ExecContext(ctx, `UPDATE sandboxes SET state = ?, runtime_json = ?, started_at = ?, deadline = ? WHERE id = ?`,
		string(StateRunning), mustJSON(h), started.UnixNano(), deadline.UnixNano(), id)
	if err != nil {
		return fmt.Errorf("record sandbox running: %w", err)
	}
	return nil
}

func (r repo) setFinished(ctx context.Context, id string, reason FinishReason, code int, msg string, at time.Time) error {
	_, err := r.db.ExecContext(ctx, `UPDATE sandboxes SET state = ?, finish_reason = ?, exit_code = ?, error = ?, finished_at = ?
		WHERE id = ? AND state != ?`, string(StateFinished), string(reason), code, msg, at.UnixNano(), id, string(StateFinished))
	if err != nil {
		return fmt.Errorf("record sandbox finished: %w", err)
	}
	return nil
}

func (r repo) setTags(ctx context.Context, id string, tags map[string]string) error {
	res, err := r.db.ExecContext(ctx, `UPDATE sandboxes SET tags_json = ? WHERE id = ?`, mustJSON(tags), id)
	if err != nil {
		return fmt.Errorf("set tags: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("sandbox %q not found", id)
	}
	return nil
}

func (r repo) get(ctx context.Context, id string) (*Sandbox, Handle, error) {
	row := r.db.QueryRowContext(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE id = ?`, id)
	sb, h, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, Handle{}, errdefs.NotFound("sandbox %q not found", id)
	}
	return sb, h, err
}

func (r repo) getByName(ctx context.Context, app, name string) (*Sandbox, error) {
	row := r.db.QueryRowContext(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE app = ? AND name = ? AND state != ?`,
		app, name, string(StateFinished))
	sb, _, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errdefs.NotFound("no running sandbox named %q in app %q", name, app)
	}
	return sb, err
}

// list returns sandboxes, newest first. An empty app means every app.
func (r repo) list(ctx context.Context, app string, all bool) ([]*Sandbox, error) {
	q := `SELECT ` + sandboxCols + ` FROM sandboxes WHERE 1=1`
	var args []any
	if app != "" {
		q += ` AND app = ?`
		args = append(args, app)
	}
	if !all {
		q += ` AND state != ?`
		args = append(args, string(StateFinished))
	}
	q += ` ORDER BY created_at DESC`
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	defer rows.Close()
	var out []*Sandbox
	for rows.Next() {
		sb, _, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sb)
	}
	return out, rows.Err()
}

// unfinished returns the records of sandboxes that have not finished, with
// their handles.
func (r repo) unfinished(ctx context.Context) ([]*Sandbox, []Handle, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE state != ?`, string(StateFinished))
	if err != nil {
		return nil, nil, fmt.Errorf("list unfinished sandboxes: %w", err)
	}
	defer rows.Close()
	var sbs []*Sandbox
	var hs []Handle
	for rows.Next() {
		sb, h, err := scan(rows)
		if err != nil {
			return nil, nil, err
		}
		sbs = append(sbs, sb)
		hs = append(hs, h)
	}
	return sbs, hs, rows.Err()
}

type scanner interface{ Scan(dest ...any) error }

func scan(s scanner) (*Sandbox, Handle, error) {
	var sb Sandbox
	var app, name, imageRef, specJSON, tagsJSON, state, reason, runtimeJSON string
	var created, started, finished, deadline int64
	var h Handle
	err := s.Scan(&sb.ID, &app, &name, &imageRef, &sb.ImageID, &specJSON, &tagsJSON, &state, &reason,
		&sb.ExitCode, &sb.Error, &runtimeJSON, &created, &started, &finished, &deadline)
	if err != nil {
		return nil, h, err
	}
	if err := json.Unmarshal([]byte(specJSON), &sb.Spec); err != nil {
		return nil, h, fmt.Errorf("decode sandbox %s spec: %w", sb.ID, err)
	}
	json.Unmarshal([]byte(tagsJSON), &sb.Tags)
	json.Unmarshal([]byte(runtimeJSON), &h)
	sb.State, sb.FinishReason = State(state), FinishReason(reason)
	sb.CreatedAt, sb.StartedAt, sb.FinishedAt, sb.Deadline = fromNanos(created), fromNanos(started), fromNanos(finished), fromNanos(deadline)
	return &sb, h, nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
