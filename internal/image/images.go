package image

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// ImageConfig holds the process defaults an image gives its sandboxes.
type ImageConfig struct {
	Env     []string `json:"env,omitempty"`     // KEY=value
	Workdir string   `json:"workdir,omitempty"` // absolute; empty means "/"
}

// Image is an ordered list of layers and a config.
type Image struct {
	ID        string   // im-<hex>
	Layers    []Digest // lowest first
	Config    ImageConfig
	Source    string // where it came from, free text ("base:busybox", ...)
	Size      int64  // sum of the layers' tar sizes
	CreatedAt time.Time
	LastUsed  time.Time // zero: never
	Names     []string  // sorted
	// IdleTTL is how long the image lives after its last use (its creation
	// counts as one); zero: no expiry. ExpiresAt follows from it (zero: never).
	IdleTTL   time.Duration
	ExpiresAt time.Time
	// Durable: all its layers are on disk. A new layer is recorded before
	// it reaches the disk (see WaitDurable); a machine crash before that
	// loses the image (Startup drops it).
	Durable bool
}

const idPrefix = "im-"

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]{0,127}$`)

// manifest is what an image id is the hash of: source, times and names are
// not part of an image's identity.
type manifest struct {
	Layers []Digest    `json:"layers"`
	Config ImageConfig `json:"config"`
}

func (c ImageConfig) validate() error {
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return errdefs.Invalid("image env %q: want KEY=value", e)
		}
	}
	if c.Workdir != "" && !path.IsAbs(c.Workdir) {
		return errdefs.Invalid("image workdir %q: want an absolute path", c.Workdir)
	}
	return nil
}

// CreateImage records an image made of layers (lowest first), all of which
// the store must hold (ErrNotFound otherwise). Creating an image identical to
// one that exists returns the existing one unchanged. Safe for concurrent use.
func (s *Store) CreateImage(ctx context.Context, layers []Digest, cfg ImageConfig, source string) (Image, error) {
	return s.createImage(ctx, layers, cfg, source, nil)
}

// createImage records the image made of layers and cfg as CreateImage says,
// then calls then, when not nil, in the same transaction (with the image's
// id, and whether it is new or was there already), and returns the image.
func (s *Store) createImage(ctx context.Context, layers []Digest, cfg ImageConfig, source string, then func(tx *sql.Tx, id string, inserted bool) error) (Image, error) {
	if len(layers) == 0 {
		return Image{}, errdefs.Invalid("create image: no layers")
	}
	if err := cfg.validate(); err != nil {
		return Image{}, err
	}
	for _, d := range layers {
		if err := d.Validate(); err != nil {
			return Image{}, err
		}
	}
	id, err := imageID(layers, cfg)
	if err != nil {
		return Image{}, err
	}
	layersJSON, _ := json.Marshal(layers)
	cfgJSON, _ := json.Marshal(cfg)

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Image{}, fmt.Errorf("create image: %w", err)
	}
	defer tx.Rollback()
	var size int64
	for _, d := range layers {
		var n int64
		err := tx.QueryRowContext(ctx, `SELECT size FROM layers WHERE digest = ?`, string(d)).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			return Image{}, errdefs.NotFound("create image: layer %s not found", d)
		}
		if err != nil {
			return Image{}, fmt.Errorf("create image: %w", err)
		}
		size += n
	}
	res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO images (id, layers_json, config_json, source, size, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`, id, string(layersJSON), string(cfgJSON), source, size, s.clock.Now().UnixNano())
	if err != nil {
		return Image{}, fmt.Errorf("create image: %w", err)
	}
	if then != nil {
		n, err := res.RowsAffected()
		if err != nil {
			return Image{}, fmt.Errorf("create image: %w", err)
		}
		if err := then(tx, id, n > 0); err != nil {
			return Image{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return Image{}, fmt.Errorf("create image: %w", err)
	}
	return s.Get(ctx, id)
}

// imageID returns the id of the image made of layers and cfg.
func imageID(layers []Digest, cfg ImageConfig) (string, error) {
	m, err := json.Marshal(manifest{Layers: layers, Config: cfg})
	if err != nil {
		return "", fmt.Errorf("image id: %w", err)
	}
	sum := sha256.Sum256(m)
	return idPrefix + hex.EncodeToString(sum[:]), nil
}

// SetName points name at image id, moving it if it named another image.
// Names look like "busybox" or "team/tool:1" and never start with "im-".
func (s *Store) SetName(ctx context.Context, name, id string) error {
	if !nameRE.MatchString(name) || strings.HasPrefix(name, idPrefix) {
		return errdefs.Invalid("image name %q: want [a-z0-9][a-z0-9._/:-]*, at most 128 characters, not starting with %q", name, idPrefix)
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO image_names (name, image_id)
		SELECT ?, id FROM images WHERE id = ?
		ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id`, name, id)
	if err != nil {
		return fmt.Errorf("set image name %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("image %q not found", id)
	}
	return nil
}

// Resolve returns the image that ref (a name or an "im-" id) points at, or an
// ErrNotFound error naming ref.
func (s *Store) Resolve(ctx context.Context, ref string) (Image, error) {
	if strings.HasPrefix(ref, idPrefix) {
		return s.Get(ctx, ref)
	}
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT image_id FROM image_names WHERE name = ?`, ref).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, errdefs.NotFound("image %q not found", ref)
	}
	if err != nil {
		return Image{}, fmt.Errorf("resolve image %q: %w", ref, err)
	}
	return s.Get(ctx, id)
}

// Get returns the image with the given id, or an ErrNotFound error.
func (s *Store) Get(ctx context.Context, id string) (Image, error) {
	ims, err := s.query(ctx, `WHERE id = ?`, id)
	if err != nil {
		return Image{}, fmt.Errorf("get image %q: %w", id, err)
	}
	if len(ims) == 0 {
		return Image{}, errdefs.NotFound("image %q not found", id)
	}
	return ims[0], nil
}

// List returns every image, oldest first.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	ims, err := s.query(ctx, ``)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return ims, nil
}

func (s *Store) query(ctx context.Context, where string, args ...any) ([]Image, error) {
	// durable: none of the image's layers is waiting for its flush.
	rows, err := s.db.QueryContext(ctx, `SELECT id, layers_json, config_json, source, size, created_at, last_used,
		idle_ttl, expires_at, NOT EXISTS (SELECT 1 FROM json_each(images.layers_json) AS j
			JOIN layers AS l ON l.digest = j.value WHERE l.durable = 0)
		FROM images `+where+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ims []Image
	for rows.Next() {
		var im Image
		var layersJSON, cfgJSON string
		var created, used, ttl, expires int64
		if err := rows.Scan(&im.ID, &layersJSON, &cfgJSON, &im.Source, &im.Size, &created, &used, &ttl, &expires, &im.Durable); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(layersJSON), &im.Layers); err != nil {
			return nil, fmt.Errorf("image %s layers: %w", im.ID, err)
		}
		if err := json.Unmarshal([]byte(cfgJSON), &im.Config); err != nil {
			return nil, fmt.Errorf("image %s config: %w", im.ID, err)
		}
		im.CreatedAt = time.Unix(0, created)
		if used != 0 {
			im.LastUsed = time.Unix(0, used)
		}
		im.IdleTTL = time.Duration(ttl)
		if expires != 0 {
			im.ExpiresAt = time.Unix(0, expires)
		}
		ims = append(ims, im)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	return ims, s.fillNames(ctx, ims)
}

func (s *Store) fillNames(ctx context.Context, ims []Image) error {
	if len(ims) == 0 {
		return nil
	}
	byID := make(map[string]*Image, len(ims))
	for i := range ims {
		byID[ims[i].ID] = &ims[i]
	}
	rows, err := s.db.QueryContext(ctx, `SELECT name, image_id FROM image_names`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name, id string
		if err := rows.Scan(&name, &id); err != nil {
			return err
		}
		if im := byID[id]; im != nil {
			im.Names = append(im.Names, name)
		}
	}
	for _, im := range ims {
		sort.Strings(im.Names)
	}
	return rows.Err()
}

// TouchLastUsed records that image id was just used (for collectors): an
// image with an IdleTTL then expires IdleTTL from now.
func (s *Store) TouchLastUsed(ctx context.Context, id string) error {
	now := s.clock.Now().UnixNano()
	res, err := s.db.ExecContext(ctx, `UPDATE images SET last_used = ?,
		expires_at = CASE WHEN idle_ttl > 0 THEN ? + idle_ttl ELSE expires_at END WHERE id = ?`, now, now, id)
	if err != nil {
		return fmt.Errorf("touch image %q: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("image %q not found", id)
	}
	return nil
}

// Delete removes the image ref points at (a name or an id) with all its
// names, then the layers no other image uses: metadata first, files after.
// The caller makes sure no sandbox still has the image mounted. A layer
// shared with an image being created at the same moment may go with it; that
// CreateImage then fails with ErrNotFound and can be retried.
func (s *Store) Delete(ctx context.Context, ref string) error {
	im, err := s.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete image %s: %w", im.ID, err)
	}
	defer tx.Rollback()
	if err := deleteImageRows(ctx, tx, im.ID); err != nil {
		return fmt.Errorf("delete image %s: %w", im.ID, err)
	}
	used, err := usedLayers(ctx, tx)
	if err != nil {
		return fmt.Errorf("delete image %s: %w", im.ID, err)
	}
	var gone []Digest
	for _, d := range im.Layers {
		if used[d] {
			continue
		}
		used[d] = true // a layer listed twice goes once
		if _, err := tx.ExecContext(ctx, `DELETE FROM layers WHERE digest = ?`, string(d)); err != nil {
			return fmt.Errorf("delete image %s: %w", im.ID, err)
		}
		gone = append(gone, d)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete image %s: %w", im.ID, err)
	}
	if err := s.removeLayerDirs(gone); err != nil {
		// The rows are gone: Startup finishes the job.
		s.log.Warn("removing layer directories", "image", im.ID, "err", err)
	}
	return nil
}

func deleteImageRows(ctx context.Context, tx *sql.Tx, id string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM image_names WHERE image_id = ?`, id); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id)
	return err
}

// usedLayers returns the layers the images recorded in tx use.
func usedLayers(ctx context.Context, tx *sql.Tx) (map[Digest]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT layers_json FROM images`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	used := map[Digest]bool{}
	for rows.Next() {
		var js string
		var ls []Digest
		if err := rows.Scan(&js); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(js), &ls); err != nil {
			return nil, err
		}
		for _, d := range ls {
			used[d] = true
		}
	}
	return used, rows.Err()
}
