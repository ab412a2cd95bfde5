package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// ImageMount is an image mounted at a path of a sandbox. Writes under Path
// stay private to the sandbox (copy-on-write); the stored image never
// changes.
type ImageMount struct {
	Image   string `json:"image"`              // the reference the caller gave
	Path    string `json:"path"`               // absolute, not "/"
	ImageID string `json:"image_id,omitempty"` // what Image resolved to at create
	// Live: the create took a warm pool sandbox, whose engine was up
	// already, so the image was mounted as a live mount (recorded among
	// the sandbox's live mounts) instead of by the engine at start.
	// Restores of its memory snapshots stage it with the live mounts.
	Live bool `json:"live,omitempty"`
}

// ImageUsers returns, for every image that sandboxes not yet finished use (as
// their root, mounted at create or mounted while running; warm pool
// sandboxes included) or that memory snapshots need to be restored, the ids
// of those sandboxes and snapshots, sorted.
func (m *Manager) ImageUsers(ctx context.Context) (map[string][]string, error) {
	sbs, _, err := m.repo.unfinished(ctx)
	if err != nil {
		return nil, err
	}
	users := map[string][]string{}
	add := func(img, sb string) {
		if img == "" {
			return
		}
		for _, s := range users[img] {
			if s == sb {
				return
			}
		}
		users[img] = append(users[img], sb)
	}
	for _, sb := range sbs {
		add(sb.ImageID, sb.ID)
		for _, mt := range sb.Spec.Mounts {
			add(mt.ImageID, sb.ID)
		}
	}
	for id, img := range m.poolImages() {
		add(img, id)
	}
	live, err := m.repo.liveMountUsers(ctx)
	if err != nil {
		return nil, err
	}
	for img, ids := range live {
		for _, id := range ids {
			add(img, id)
		}
	}
	// A memory snapshot restores onto the layers of its image and mounts.
	rows, err := m.repo.db.QueryContext(ctx, `SELECT id, record_json FROM snapshots`)
	if err != nil {
		return nil, fmt.Errorf("image users: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, js string
		if err := rows.Scan(&id, &js); err != nil {
			return nil, fmt.Errorf("image users: %w", err)
		}
		var rec snapshotRecord
		if json.Unmarshal([]byte(js), &rec) != nil {
			continue
		}
		add(rec.ImageID, id)
		for _, mt := range rec.Spec.Mounts {
			add(mt.ImageID, id)
		}
		for _, lm := range rec.LiveMounts {
			add(lm.ImageID, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("image users: %w", err)
	}
	for _, ids := range users {
		sort.Strings(ids)
	}
	return users, nil
}

// DeleteImage deletes the image ref names (a name or an im- id) unless a
// sandbox that has not finished uses it: that is ErrFailedPrecondition naming
// the sandboxes. Layers shared with other images stay. Unknown ref:
// ErrNotFound.
//
// A sandbox being created from the image at the same moment may pass the
// check before it is recorded; its creation then fails (ErrNotFound) and
// nothing breaks for running sandboxes.
func (m *Manager) DeleteImage(ctx context.Context, ref string) error {
	b, ok := m.images.(ImageBuilder)
	if !ok {
		return errdefs.FailedPrecondition("this image store cannot delete images")
	}
	img, err := m.images.ResolveImage(ctx, ref)
	if err != nil {
		return err
	}
	users, err := m.ImageUsers(ctx)
	if err != nil {
		return err
	}
	if ids := users[img.ID]; len(ids) > 0 {
		return errdefs.FailedPrecondition("image %s is in use by %s: terminate those sandboxes and delete those snapshots first", ref, strings.Join(ids, ", "))
	}
	if err := b.DeleteImage(ctx, img.ID); err != nil {
		return err
	}
	m.log.Info("image deleted", "image", img.ID)
	return nil
}

// CollectImages deletes the expired images no unfinished sandbox uses and
// returns their ids.
func (m *Manager) CollectImages(ctx context.Context) ([]string, error) {
	b, ok := m.images.(ImageBuilder)
	if !ok {
		return nil, nil
	}
	users, err := m.ImageUsers(ctx)
	if err != nil {
		return nil, err
	}
	return b.CollectExpired(ctx, func(id string) bool { return len(users[id]) > 0 })
}

// RunImageCollector calls CollectImages every interval (on the manager's
// clock) until ctx ends. Errors are logged.
func (m *Manager) RunImageCollector(ctx context.Context, interval time.Duration) {
	m.every(ctx, interval, func() {
		if gone, err := m.CollectImages(ctx); err != nil {
			m.log.Warn("collect expired images", "err", err, "deleted", len(gone))
		} else if len(gone) > 0 {
			m.log.Info("expired images collected", "images", fmt.Sprint(gone))
		}
	})
}

// every calls f every interval of the manager's clock until ctx ends.
func (m *Manager) every(ctx context.Context, interval time.Duration, f func()) {
	for {
		tick := make(chan struct{})
		t := m.clock.AfterFunc(interval, func() { close(tick) })
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-tick:
		}
		f()
	}
}
