// Package secret stores named secrets: sets of key/values that sandboxes and
// execs reference by name. Values leave this package only through Values, for
// the environment of a sandbox; they never reach a log line, a listing or an
// error message.
package secret

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)
var keyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Secret is a secret's public face: its name and keys, never its values.
type Secret struct {
	Name      string
	Keys      []string
	CreatedAt time.Time
}

// Store keeps secrets in the metadata database. Safe for concurrent use.
type Store struct {
	db    *sql.DB
	clock clock.Clock
}

// New returns a Store over db.
func New(db *sql.DB, c clock.Clock) *Store { return &Store{db: db, clock: c} }

// Put creates or replaces the secret name.
func (s *Store) Put(ctx context.Context, name string, values map[string]string) (Secret, error) {
	if !nameRE.MatchString(name) {
		return Secret{}, errdefs.Invalid("bad secret name %q: use letters, digits, '.', '_' or '-' (at most 63)", name)
	}
	if len(values) == 0 {
		return Secret{}, errdefs.Invalid("secret %q has no values", name)
	}
	for k := range values {
		if !keyRE.MatchString(k) {
			return Secret{}, errdefs.Invalid("secret %q: bad key %q: must be an environment variable name", name, k)
		}
	}
	b, _ := json.Marshal(values)
	now := s.clock.Now()
	_, err := s.db.ExecContext(ctx, `INSERT INTO secrets (name, values_json, created_at) VALUES (?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET values_json = excluded.values_json, created_at = excluded.created_at`,
		name, string(b), now.UnixNano())
	if err != nil {
		return Secret{}, fmt.Errorf("store secret %q: %w", name, errdefs.ErrInternal)
	}
	return Secret{Name: name, Keys: sortedKeys(values), CreatedAt: now}, nil
}

// Values returns the key/values of the named secrets, later names overriding
// earlier ones. An unknown name is ErrNotFound.
func (s *Store) Values(ctx context.Context, names []string) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		var js string
		err := s.db.QueryRowContext(ctx, `SELECT values_json FROM secrets WHERE name = ?`, n).Scan(&js)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errdefs.NotFound("secret %q not found", n)
		}
		if err != nil {
			return nil, fmt.Errorf("read secret %q: %w", n, errdefs.ErrInternal)
		}
		var m map[string]string
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			return nil, fmt.Errorf("decode secret %q: %w", n, errdefs.ErrInternal)
		}
		for k, v := range m {
			out[k] = v
		}
	}
	return out, nil
}

// List returns all secrets, by name.
func (s *Store) List(ctx context.Context) ([]Secret, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, values_json, created_at FROM secrets ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	defer rows.Close()
	var out []Secret
	for rows.Next() {
		var name, js string
		var at int64
		if err := rows.Scan(&name, &js, &at); err != nil {
			return nil, fmt.Errorf("list secrets: %w", err)
		}
		var m map[string]string
		json.Unmarshal([]byte(js), &m)
		out = append(out, Secret{Name: name, Keys: sortedKeys(m), CreatedAt: time.Unix(0, at)})
	}
	return out, rows.Err()
}

// Delete removes a secret. Sandboxes already started keep their values.
func (s *Store) Delete(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM secrets WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete secret: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("secret %q not found", name)
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
