package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultRetention is how long a finished sandbox stays listable, with its
// entrypoint's logs, before PruneFinished forgets it.
const DefaultRetention = 7 * 24 * time.Hour

// PruneFinished forgets the sandboxes that finished more than retention ago:
// their records and their entrypoints' logs, so that neither grows without
// bound. It also removes log directories that belong to no record (left by
// a crash between the two). It returns the ids forgotten. Live sandboxes
// are never touched.
func (m *Manager) PruneFinished(ctx context.Context, retention time.Duration) ([]string, error) {
	cutoff := m.clock.Now().Add(-retention).UnixNano()
	rows, err := m.repo.db.QueryContext(ctx,
		`SELECT id FROM sandboxes WHERE state = ? AND finished_at > 0 AND finished_at < ?`, string(StateFinished), cutoff)
	if err != nil {
		return nil, fmt.Errorf("prune finished sandboxes: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("prune finished sandboxes: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	var gone []string
	for _, id := range ids {
		if m.isLive(id) {
			continue // finishing right now; a later run takes it
		}
		// The record first: a crash before the logs go leaves an orphan
		// directory, which the sweep below removes next time.
		if _, err := m.repo.db.ExecContext(ctx, `DELETE FROM sandboxes WHERE id = ? AND state = ?`, id, string(StateFinished)); err != nil {
			return gone, fmt.Errorf("prune sandbox %s: %w", id, err)
		}
		if err := os.RemoveAll(m.logDir(id)); err != nil {
			return gone, fmt.Errorf("prune sandbox %s: logs: %w", id, err)
		}
		gone = append(gone, id)
	}
	return gone, m.sweepOrphanLogs(ctx)
}

// sweepOrphanLogs removes the log directories of sandboxes that have no
// record. A record is written before its sandbox's logs, so a directory
// without one is a leftover.
func (m *Manager) sweepOrphanLogs(ctx context.Context) error {
	entries, err := os.ReadDir(filepath.Join(m.cfg.DataDir, "logs"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("sweep logs: %w", err)
	}
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || !strings.HasPrefix(id, "sb-") || m.isLive(id) {
			continue
		}
		var n int
		if err := m.repo.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sandboxes WHERE id = ?`, id).Scan(&n); err != nil {
			return fmt.Errorf("sweep logs: %w", err)
		}
		if n == 0 {
			if err := os.RemoveAll(m.logDir(id)); err != nil {
				return fmt.Errorf("sweep logs: %w", err)
			}
		}
	}
	return nil
}

func (m *Manager) logDir(id string) string { return filepath.Join(m.cfg.DataDir, "logs", id) }

func (m *Manager) isLive(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.live[id]
	return ok
}

// RunPruner calls PruneFinished every interval of the manager's clock until
// ctx ends. A negative retention keeps finished sandboxes forever.
func (m *Manager) RunPruner(ctx context.Context, interval, retention time.Duration) {
	if retention < 0 {
		return
	}
	m.every(ctx, interval, func() {
		if gone, err := m.PruneFinished(ctx, retention); err != nil {
			m.log.Warn("prune finished sandboxes", "err", err, "pruned", len(gone))
		} else if len(gone) > 0 {
			m.log.Info("finished sandboxes pruned", "count", len(gone))
		}
	})
}
