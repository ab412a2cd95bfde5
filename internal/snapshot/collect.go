package snapshot

import (
	"context"
	"fmt"
	"sync"

	"github.com/sandboxd/sandboxd/internal/clock"
)

// Collect deletes the snapshots that have expired, except those being
// restored from (a later run takes them). It returns how many it deleted.
func (s *Store) Collect(ctx context.Context) (int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM snapshots WHERE expires_at <= ?`, s.now().UnixNano())
	if err != nil {
		return 0, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	n := 0
	for _, id := range ids {
		s.mu.Lock()
		if s.inUse[id] == 0 {
			if err := s.deleteLocked(ctx, id); err != nil {
				s.mu.Unlock()
				return n, err
			}
			n++
			s.log.Info("snapshot expired and deleted", "snapshot_id", id)
		}
		s.mu.Unlock()
	}
	if err := s.pruneOrigins(ctx); err != nil {
		return n, err
	}
	return n, nil
}

// pruneOrigins forgets where finished (or forgotten) sandboxes came from:
// an origin only serves snapshots of a sandbox still running (their
// inherited expiry).
func (s *Store) pruneOrigins(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM sandbox_origins WHERE sandbox_id NOT IN
		(SELECT id FROM sandboxes WHERE state != 'finished')`)
	if err != nil {
		return fmt.Errorf("prune sandbox origins: %w", err)
	}
	return nil
}

// StartCollector runs Collect every CollectInterval of the store's clock
// until stop is called. A run in progress when stop is called sees its
// context canceled and ends at its next query.
func (s *Store) StartCollector() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var t clock.Timer
	var run func()
	run = func() {
		if _, err := s.Collect(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("snapshot collector", "err", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() == nil {
			t = s.clock.AfterFunc(s.cfg.CollectInterval, run)
		}
	}
	mu.Lock()
	t = s.clock.AfterFunc(s.cfg.CollectInterval, run)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		cancel()
		t.Stop()
	}
}
