package sandbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// The live_mounts table (store migration 4): one row per image mounted into
// a sandbox while it runs.

func (r repo) insertLiveMount(ctx context.Context, id string, lm LiveMount) error {
	_, err := r.db.ExecContext(ctx, `INSERT INTO live_mounts (sandbox_id, path, image_ref, image_id, stage, mounted_at)
		VALUES (?, ?, ?, ?, ?, ?)`, id, lm.Path, lm.Image, lm.ImageID, lm.Stage, lm.At.UnixNano())
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE constraint failed") {
			return errdefs.AlreadyExists("an image is mounted at %s already", lm.Path)
		}
		return fmt.Errorf("record live mount: %w", err)
	}
	return nil
}

func (r repo) deleteLiveMount(ctx context.Context, id, path string) error {
	if _, err := r.db.ExecContext(ctx, `DELETE FROM live_mounts WHERE sandbox_id = ? AND path = ?`, id, path); err != nil {
		return fmt.Errorf("forget live mount: %w", err)
	}
	return nil
}

// deleteLiveMountsOf forgets the live mounts of a sandbox that finished.
func (r repo) deleteLiveMountsOf(ctx context.Context, id string) error {
	if _, err := r.db.ExecContext(ctx, `DELETE FROM live_mounts WHERE sandbox_id = ?`, id); err != nil {
		return fmt.Errorf("forget live mounts: %w", err)
	}
	return nil
}

// pruneLiveMounts forgets the live mounts of finished (or unknown) sandboxes.
func (r repo) pruneLiveMounts(ctx context.Context) error {
	_, err := r.db.ExecContext(ctx, `DELETE FROM live_mounts WHERE sandbox_id NOT IN
		(SELECT id FROM sandboxes WHERE state != ?)`, string(StateFinished))
	if err != nil {
		return fmt.Errorf("prune live mounts: %w", err)
	}
	return nil
}

const liveMountCols = `path, image_ref, image_id, stage, mounted_at`

func scanLiveMount(s scanner) (LiveMount, error) {
	var lm LiveMount
	var at int64
	if err := s.Scan(&lm.Path, &lm.Image, &lm.ImageID, &lm.Stage, &at); err != nil {
		return LiveMount{}, err
	}
	lm.At = time.Unix(0, at)
	return lm, nil
}

// liveMount returns the live mount at path of sandbox id, or ErrNotFound.
func (r repo) liveMount(ctx context.Context, id, path string) (LiveMount, error) {
	row := r.db.QueryRowContext(ctx, `SELECT `+liveMountCols+` FROM live_mounts WHERE sandbox_id = ? AND path = ?`, id, path)
	lm, err := scanLiveMount(row)
	if errors.Is(err, sql.ErrNoRows) {
		return LiveMount{}, errdefs.NotFound("no image is mounted at %s in sandbox %s (since it started)", path, id)
	}
	if err != nil {
		return LiveMount{}, fmt.Errorf("read live mount: %w", err)
	}
	return lm, nil
}

// liveMounts returns the live mounts of sandbox id, by path.
func (r repo) liveMounts(ctx context.Context, id string) ([]LiveMount, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+liveMountCols+` FROM live_mounts WHERE sandbox_id = ? ORDER BY path`, id)
	if err != nil {
		return nil, fmt.Errorf("list live mounts: %w", err)
	}
	defer rows.Close()
	var out []LiveMount
	for rows.Next() {
		lm, err := scanLiveMount(rows)
		if err != nil {
			return nil, fmt.Errorf("list live mounts: %w", err)
		}
		out = append(out, lm)
	}
	return out, rows.Err()
}

// liveMountUsers returns, for each image mounted into a sandbox that has not
// finished, those sandboxes' ids.
func (r repo) liveMountUsers(ctx context.Context) (map[string][]string, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT lm.image_id, lm.sandbox_id FROM live_mounts lm
		JOIN sandboxes s ON s.id = lm.sandbox_id WHERE s.state != ?`, string(StateFinished))
	if err != nil {
		return nil, fmt.Errorf("live mount users: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var img, sb string
		if err := rows.Scan(&img, &sb); err != nil {
			return nil, fmt.Errorf("live mount users: %w", err)
		}
		out[img] = append(out[img], sb)
	}
	return out, rows.Err()
}
