package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Origin is where a restored sandbox came from.
type Origin struct {
	SnapshotID string
	ExpiresAt  time.Time // the snapshot's expiry when the sandbox was restored
}

// SetOrigin records that sandboxID was restored from sn.
func (s *Store) SetOrigin(ctx context.Context, sandboxID string, sn Snapshot) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO sandbox_origins (sandbox_id, snapshot_id, expires_at) VALUES (?,?,?)`,
		sandboxID, sn.ID, sn.ExpiresAt.UnixNano())
	if err != nil {
		return fmt.Errorf("record sandbox origin: %w", err)
	}
	return nil
}

// OriginOf returns the snapshot sandboxID was restored from; ok is false
// for a sandbox that was created, not restored.
func (s *Store) OriginOf(ctx context.Context, sandboxID string) (o Origin, ok bool, err error) {
	var exp int64
	err = s.db.QueryRowContext(ctx, `SELECT snapshot_id, expires_at FROM sandbox_origins WHERE sandbox_id = ?`, sandboxID).
		Scan(&o.SnapshotID, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return Origin{}, false, nil
	}
	if err != nil {
		return Origin{}, false, fmt.Errorf("sandbox origin: %w", err)
	}
	o.ExpiresAt = time.Unix(0, exp)
	return o, true, nil
}
