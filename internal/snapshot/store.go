package snapshot

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/fsutil"
)

// Expiry defaults.
const (
	DefaultTTL = 7 * 24 * time.Hour
	MaxTTL     = 30 * 24 * time.Hour
)

// Config configures a Store. Zero values take the defaults above.
type Config struct {
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	// CollectInterval is how often the collector looks for expired
	// snapshots; 0 means one minute.
	CollectInterval time.Duration
}

// Snapshot is the record of one committed snapshot.
type Snapshot struct {
	ID              string
	SourceSandboxID string
	ParentID        string // the snapshot the source sandbox was restored from, or ""
	App             string
	// Record is what the caller needs to restore it; opaque here.
	Record    json.RawMessage
	Size      int64
	Checksum  string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Store keeps snapshots under DATA/snapshots and their rows in the
// database. Safe for concurrent use.
type Store struct {
	cfg   Config
	db    *sql.DB
	dir   string // DATA/snapshots
	clock clock.Clock
	log   *slog.Logger

	mu    sync.Mutex
	inUse map[string]int // snapshot id -> restores reading its files
}

var idRE = regexp.MustCompile(`^sn-[0-9a-f]{16}$`)

// ValidID reports whether s has the form of a snapshot id.
func ValidID(s string) bool { return idRE.MatchString(s) }

// New returns a Store keeping its files under dataDir/snapshots. Call
// Startup before use.
func New(db *sql.DB, dataDir string, c clock.Clock, log *slog.Logger, cfg Config) (*Store, error) {
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = MaxTTL
	}
	if cfg.CollectInterval == 0 {
		cfg.CollectInterval = time.Minute
	}
	if cfg.DefaultTTL > cfg.MaxTTL {
		return nil, errdefs.Invalid("snapshot default TTL %v exceeds the maximum %v", cfg.DefaultTTL, cfg.MaxTTL)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, db: db, dir: filepath.Join(dataDir, "snapshots"), clock: c, log: log, inUse: map[string]int{}}
	if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	return s, nil
}

func (s *Store) tmpDir() string          { return filepath.Join(s.dir, "tmp") }
func (s *Store) pathOf(id string) string { return filepath.Join(s.dir, id) }

// Path returns the directory of snapshot id's files, without checking
// them (Acquire does). For reading only.
func (s *Store) Path(id string) string     { return s.pathOf(id) }
func (s *Store) now() time.Time            { return s.clock.Now() }
func (s *Store) MaxTTL() time.Duration     { return s.cfg.MaxTTL }
func (s *Store) DefaultTTL() time.Duration { return s.cfg.DefaultTTL }

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return "sn-" + hex.EncodeToString(b[:])
}

// Expiry returns when a snapshot taken at now with ttl expires: now+ttl when
// ttl > 0 (at most the maximum, else ErrInvalidArgument); else inherited
// when set (a snapshot of a restored sandbox keeps its parent's expiry),
// else now plus the default TTL.
func (s *Store) Expiry(now time.Time, ttl time.Duration, inherited time.Time) (time.Time, error) {
	switch {
	case ttl < 0:
		return time.Time{}, errdefs.Invalid("negative snapshot TTL %v", ttl)
	case ttl > s.cfg.MaxTTL:
		return time.Time{}, errdefs.Invalid("snapshot TTL %v exceeds the maximum %v", ttl, s.cfg.MaxTTL)
	case ttl > 0:
		return now.Add(ttl), nil
	case !inherited.IsZero():
		if !inherited.After(now) {
			return time.Time{}, errdefs.Expired("the snapshot this sandbox was restored from expired at %s: give a TTL",
				inherited.UTC().Format(time.RFC3339))
		}
		return inherited, nil
	default:
		return now.Add(s.cfg.DefaultTTL), nil
	}
}

// Pending is a snapshot being written. Fill Dir, then Commit or Abort.
type Pending struct {
	ID        string
	Dir       string
	s         *Store
	committed bool
}

// Begin starts a snapshot: a fresh id and an empty directory no reader sees.
func (s *Store) Begin() (*Pending, error) {
	id := newID()
	dir := filepath.Join(s.tmpDir(), id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("begin snapshot: %w", err)
	}
	return &Pending{ID: id, Dir: dir, s: s}, nil
}

// Abort removes the pending directory. Safe to call after Commit (it then
// does nothing), so callers may defer it.
func (p *Pending) Abort() {
	if !p.committed {
		os.RemoveAll(p.Dir)
	}
}

// Commit makes the pending snapshot visible: manifest, fsync, rename, row.
// sn's ID, Size and Checksum are filled in; the rest is the caller's. On
// error nothing of it is left.
func (p *Pending) Commit(ctx context.Context, sn Snapshot) (Snapshot, error) {
	s := p.s
	size, sum, err := writeManifest(p.Dir)
	if err != nil {
		p.Abort()
		return Snapshot{}, fmt.Errorf("commit snapshot: %w", err)
	}
	sn.ID, sn.Size, sn.Checksum = p.ID, size, sum
	final := s.pathOf(p.ID)
	if err := os.Rename(p.Dir, final); err != nil {
		p.Abort()
		return Snapshot{}, fmt.Errorf("commit snapshot: %w", err)
	}
	if err := fsutil.SyncDir(s.dir); err != nil {
		os.RemoveAll(final)
		return Snapshot{}, fmt.Errorf("commit snapshot: %w", err)
	}
	if len(sn.Record) == 0 {
		sn.Record = json.RawMessage("{}")
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO snapshots (id, source_sandbox_id, parent_snapshot_id, app, record_json,
		size, checksum, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?)`,
		sn.ID, sn.SourceSandboxID, sn.ParentID, sn.App, string(sn.Record), sn.Size, sn.Checksum,
		sn.CreatedAt.UnixNano(), sn.ExpiresAt.UnixNano())
	if err != nil {
		os.RemoveAll(final)
		return Snapshot{}, fmt.Errorf("commit snapshot: record: %w", err)
	}
	p.committed, p.Dir = true, final
	return sn, nil
}

const cols = `id, source_sandbox_id, parent_snapshot_id, app, record_json, size, checksum, created_at, expires_at`

type scanner interface{ Scan(...any) error }

func scan(r scanner) (Snapshot, error) {
	var sn Snapshot
	var rec string
	var created, expires int64
	if err := r.Scan(&sn.ID, &sn.SourceSandboxID, &sn.ParentID, &sn.App, &rec, &sn.Size, &sn.Checksum, &created, &expires); err != nil {
		return Snapshot{}, err
	}
	sn.Record = json.RawMessage(rec)
	sn.CreatedAt, sn.ExpiresAt = time.Unix(0, created), time.Unix(0, expires)
	return sn, nil
}

// Get returns a snapshot's record, expired or not. An unknown id is
// ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Snapshot, error) {
	if !ValidID(id) {
		return Snapshot{}, errdefs.Invalid("bad snapshot id %q: want sn- and 16 hex digits", id)
	}
	sn, err := scan(s.db.QueryRowContext(ctx, `SELECT `+cols+` FROM snapshots WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, errdefs.NotFound("snapshot %q not found", id)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("get snapshot: %w", err)
	}
	return sn, nil
}

// List returns every snapshot, newest first.
func (s *Store) List(ctx context.Context) ([]Snapshot, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+cols+` FROM snapshots ORDER BY created_at DESC`)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		sn, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list snapshots: %w", err)
		}
		out = append(out, sn)
	}
	return out, rows.Err()
}

// Acquire returns a snapshot to restore from and its directory, after
// checking that it has not expired (else ErrExpired) and that its files
// match their checksums (else ErrFailedPrecondition). The files stay until
// release is called: Delete refuses and the collector waits meanwhile.
func (s *Store) Acquire(ctx context.Context, id string) (Snapshot, string, func(), error) {
	l, err := s.AcquireUnverified(ctx, id)
	if err != nil {
		return Snapshot{}, "", nil, err
	}
	if err := l.Verify(ctx); err != nil {
		l.Release()
		return Snapshot{}, "", nil, err
	}
	return l.Snapshot, l.Dir, l.Release, nil
}

// Lease is a snapshot held for a restore: its files stay until Release
// (Delete refuses and the collector waits meanwhile).
type Lease struct {
	Snapshot
	Dir     string
	files   manifest
	release func()
}

// AcquireUnverified is Acquire without reading the files: it checks the
// expiry and the manifest against the database's checksum (both cheap) and
// leaves the files' checksums to Lease.Verify. A restore verifies while the
// engine reads the same files (verifying 256 MiB first took 60-100 ms of a
// 2-3 s restore on a busy host) and trusts nothing it restored until
// Verify has returned nil.
func (s *Store) AcquireUnverified(ctx context.Context, id string) (*Lease, error) {
	sn, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !sn.ExpiresAt.After(s.now()) {
		return nil, errdefs.Expired("snapshot %s expired at %s", id, sn.ExpiresAt.UTC().Format(time.RFC3339))
	}
	s.mu.Lock()
	s.inUse[id]++
	s.mu.Unlock()
	var once sync.Once
	l := &Lease{Snapshot: sn, Dir: s.pathOf(id), release: func() {
		once.Do(func() {
			s.mu.Lock()
			if s.inUse[id]--; s.inUse[id] <= 0 {
				delete(s.inUse, id)
			}
			s.mu.Unlock()
		})
	}}
	if l.files, err = readManifest(l.Dir, sn.Checksum); err != nil {
		l.Release()
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	return l, nil
}

// Verify checks the lease's files against the manifest: nil, or
// ErrFailedPrecondition saying what is damaged (ctx's error if canceled).
// Safe to call from another goroutine than the one using the files.
func (l *Lease) Verify(ctx context.Context) error {
	if err := verifyFiles(ctx, l.Dir, l.files); err != nil {
		return fmt.Errorf("snapshot %s: %w", l.ID, err)
	}
	return nil
}

// Release lets the files go. Idempotent.
func (l *Lease) Release() { l.release() }

// Delete removes a snapshot: its row first, its files after. An unknown id
// is ErrNotFound; one being restored from is ErrFailedPrecondition.
func (s *Store) Delete(ctx context.Context, id string) error {
	if _, err := s.Get(ctx, id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inUse[id] > 0 {
		return errdefs.FailedPrecondition("snapshot %s is being restored from; try again", id)
	}
	return s.deleteLocked(ctx, id)
}

func (s *Store) deleteLocked(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete snapshot: %w", err)
	}
	if err := os.RemoveAll(s.pathOf(id)); err != nil {
		// The row is gone: Startup removes the files next time.
		s.log.Warn("remove snapshot files", "snapshot_id", id, "err", err)
	}
	return nil
}

// Usage returns the bytes all snapshots take on disk.
func (s *Store) Usage(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0) FROM snapshots`).Scan(&n); err != nil {
		return 0, fmt.Errorf("snapshot usage: %w", err)
	}
	return n, nil
}

// Startup removes pending directories (a snapshot interrupted by a crash)
// and directories no row knows, and forgets rows whose directory is gone.
func (s *Store) Startup(ctx context.Context) error {
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return fmt.Errorf("snapshot startup: %w", err)
	}
	if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
		return fmt.Errorf("snapshot startup: %w", err)
	}
	list, err := s.List(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, sn := range list {
		known[sn.ID] = true
		if _, err := os.Stat(s.pathOf(sn.ID)); errors.Is(err, os.ErrNotExist) {
			s.log.Warn("snapshot lost: its files are gone", "snapshot_id", sn.ID)
			s.db.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, sn.ID)
		}
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("snapshot startup: %w", err)
	}
	for _, e := range entries {
		if e.Name() != "tmp" && !known[e.Name()] {
			s.log.Info("removing leftover snapshot dir", "name", e.Name())
			os.RemoveAll(filepath.Join(s.dir, e.Name()))
		}
	}
	return nil
}
