package image

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Image lifetimes. An image with an IdleTTL expires IdleTTL after its last
// use (creating it, creating a sandbox from it, mounting it: whatever calls
// TouchLastUsed); one without never expires. Base images have none.
// Expired images are removed by CollectExpired, which the daemon calls
// periodically and which skips images still in use.

// CreateImageWithTTL is CreateImage for images that may expire: a new image
// gets idleTTL (zero: never expires) and counts as used now. When an
// identical image exists already, the longer life wins (no expiry beats
// any), so that asking for a shorter one never cuts another owner's image
// short.
func (s *Store) CreateImageWithTTL(ctx context.Context, layers []Digest, cfg ImageConfig, source string, idleTTL time.Duration) (Image, error) {
	if idleTTL < 0 {
		return Image{}, errdefs.Invalid("image ttl %v is negative", idleTTL)
	}
	// One transaction (a snapshot's small case counts its statements).
	return s.createImage(ctx, layers, cfg, source, func(tx *sql.Tx, id string, inserted bool) error {
		ttl := int64(idleTTL)
		if !inserted {
			var old int64
			if err := tx.QueryRowContext(ctx, `SELECT idle_ttl FROM images WHERE id = ?`, id).Scan(&old); err != nil {
				return fmt.Errorf("set image ttl: %w", err)
			}
			if old == 0 || (ttl != 0 && old > ttl) {
				ttl = old
			}
		}
		now := s.clock.Now().UnixNano()
		expires := int64(0)
		if ttl > 0 {
			expires = now + ttl
		}
		if _, err := tx.ExecContext(ctx, `UPDATE images SET idle_ttl = ?, last_used = ?, expires_at = ? WHERE id = ?`,
			ttl, now, expires, id); err != nil {
			return fmt.Errorf("set image ttl: %w", err)
		}
		return nil
	})
}

// Expired returns the images whose expiry has passed, oldest first.
func (s *Store) Expired(ctx context.Context) ([]Image, error) {
	ims, err := s.query(ctx, `WHERE expires_at != 0 AND expires_at <= ?`, s.clock.Now().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("expired images: %w", err)
	}
	return ims, nil
}

// CollectExpired deletes the expired images for which inUse (may be nil)
// reports false, and returns their ids. An image deleted meanwhile is no
// error; other errors stop the collection and are returned with what was
// deleted so far.
func (s *Store) CollectExpired(ctx context.Context, inUse func(id string) bool) ([]string, error) {
	ims, err := s.Expired(ctx)
	if err != nil {
		return nil, err
	}
	var gone []string
	for _, im := range ims {
		if inUse != nil && inUse(im.ID) {
			continue
		}
		err := s.Delete(ctx, im.ID)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		if err != nil {
			return gone, fmt.Errorf("collect expired images: %w", err)
		}
		s.log.Info("expired image deleted", "image", im.ID, "source", im.Source,
			"last_used", im.LastUsed, "idle_ttl", im.IdleTTL)
		gone = append(gone, im.ID)
	}
	return gone, nil
}
