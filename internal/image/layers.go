package image

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// AddLayerFromTar extracts the uncompressed tar read from r as a layer and
// records it. OCI whiteouts (".wh.NAME", ".wh..wh..opq") become overlay
// whiteouts. Entries naming absolute paths, climbing out with "..", or
// passing through a symlink are refused with ErrInvalidArgument, and nothing
// is kept. The digest is that of the extracted tree's canonical tar, not of
// r's bytes. Adding a layer the store holds already returns its digest and
// stores nothing new. Safe for concurrent use.
func (s *Store) AddLayerFromTar(ctx context.Context, r io.Reader) (Digest, error) {
	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed into place
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	if err := extractTar(ctx, r, tmp); err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	h := sha256.New()
	size, err := writeCanonicalTar(ctx, tmp, h)
	if err != nil {
		return "", fmt.Errorf("add layer: digest: %w", err)
	}
	d := digestFromSum(h.Sum(nil))
	if err := syncfs(tmp); err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	if err := s.commitLayer(ctx, tmp, d, size); err != nil {
		return "", fmt.Errorf("add layer %s: %w", d, err)
	}
	return d, nil
}

// commitLayer renames the extracted tree tmp to its place and records it,
// unless the store has the layer already.
func (s *Store) commitLayer(ctx context.Context, tmp string, d Digest, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst := s.LayerPath(d)
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM layers WHERE digest = ?`, string(d)).Scan(&n); err != nil {
		return err
	}
	if _, err := os.Lstat(dst); n > 0 && err == nil {
		return nil // stored once already; tmp is removed by the caller
	}
	if err := os.RemoveAll(dst); err != nil { // an unrecorded leftover
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	if err := fsyncDir(s.layersDir()); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO layers (digest, size, created_at) VALUES (?, ?, ?)`,
		string(d), size, s.clock.Now().UnixNano())
	return err
}

// AddLayerFromDir stores a copy of the tree at dir as a layer (dir is left as
// it is) and returns its digest. See AddLayerFromTar.
func (s *Store) AddLayerFromDir(ctx context.Context, dir string) (Digest, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", errdefs.Invalid("add layer: %q is not a directory", dir)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := writeCanonicalTar(ctx, dir, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	d, err := s.AddLayerFromTar(ctx, pr)
	pr.CloseWithError(errors.New("reader closed"))
	if werr := <-done; werr != nil && err == nil {
		err = fmt.Errorf("add layer: %w", werr)
	}
	return d, err
}

// WriteLayerTar writes the canonical tar of layer d to w and returns its size.
// Its SHA-256 is d, unless the layer directory was tampered with.
func (s *Store) WriteLayerTar(ctx context.Context, d Digest, w io.Writer) (int64, error) {
	if err := d.Validate(); err != nil {
		return 0, err
	}
	if ok, err := s.hasLayer(ctx, d); err != nil {
		return 0, err
	} else if !ok {
		return 0, errdefs.NotFound("layer %s not found", d)
	}
	return writeCanonicalTar(ctx, s.LayerPath(d), w)
}

func (s *Store) hasLayer(ctx context.Context, d Digest) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM layers WHERE digest = ?`, string(d)).Scan(&n)
	return n > 0, err
}

// syncfs flushes the filesystem holding dir: one call instead of an fsync per
// extracted file.
func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}

func fsyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// removeLayerDirs moves the given layers' directories into tmp/ and deletes
// them there; a crash midway leaves only tmp/ debris, which Startup clears.
func (s *Store) removeLayerDirs(ds []Digest) error {
	var errs []error
	for _, d := range ds {
		trash, err := os.MkdirTemp(s.tmpDir(), "gone-")
		if err != nil {
			return err
		}
		if err := os.Rename(s.LayerPath(d), filepath.Join(trash, "layer")); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		errs = append(errs, os.RemoveAll(trash))
	}
	return errors.Join(errs...)
}

func lutimesEpoch(p string) error {
	ts := unix.NsecToTimespec(0)
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// dropLayerIfUnused forgets layer d and removes its directory unless an image
// uses it.
func (s *Store) dropLayerIfUnused(ctx context.Context, d Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	used, err := usedLayers(ctx, tx)
	if err != nil || used[d] {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM layers WHERE digest = ?`, string(d)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return s.removeLayerDirs([]Digest{d})
}
