package image

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Clock gives the time recorded in the metadata. Tests pass a fake.
type Clock interface {
	Now() time.Time
}

// BaseConfig configures the base image builders.
type BaseConfig struct {
	// CacheDir keeps built base layers (as tars) across data directories,
	// e.g. /var/cache/sandboxd. Empty disables the cache.
	CacheDir string
	// Mirror is the Debian mirror URL for debian-slim. Empty means the first
	// matching URIs of the host's apt sources.
	Mirror string
	// BusyboxPath is the static busybox binary; empty means /bin/busybox.
	BusyboxPath string
	// AptDir is where the host's apt sources live; empty means /etc/apt.
	AptDir string
}

// Store keeps layers and images under one root directory, with metadata in
// SQLite. It is safe for concurrent use by one process; the root must not be
// shared between processes.
type Store struct {
	db    *sql.DB
	root  string
	log   *slog.Logger
	clock Clock
	bases BaseConfig

	// mu serialises the step that renames a layer into place and records it,
	// and guards flushes.
	mu sync.Mutex
	// flushes are the background flushes of the layers recorded but not
	// durable yet, by digest (see storeTree).
	flushes map[Digest]*flush
	// bg runs the goroutines of the flushes; Close waits for them.
	bg group
	// beforeMark (tests) is called when a layer's flush has ended, before
	// the layer is marked durable; it may hold the mark back, or turn the
	// flush's error (nil: success) into another.
	beforeMark func(d Digest, err error) error
	// buildMu serialises EnsureBase.
	buildMu sync.Mutex
	// trash removes the trees under tmp/ nobody needs any more.
	trash *trash
	// streamedDigests counts the layers digested while extracted (see
	// streamDigest); with checkStreamed, each is checked against a walk of
	// the tree.
	streamedDigests atomic.Int64
	checkStreamed   bool
	// images: new layers are stored as EROFS images (see erofslayers.go),
	// decided by Startup; treeLayers keeps them trees whatever the kernel.
	images, treeLayers bool
}

// CheckStreamedDigests has each layer digest computed while extracting (see
// streamDigest) checked against a walk of the extracted tree, which the
// store then does for every layer (tests). Call before Startup.
func (s *Store) CheckStreamedDigests(on bool) { s.checkStreamed = on }

// New returns a store rooted at root (created if needed). db must carry the
// schema of internal/store. Call Startup before serving.
func New(db *sql.DB, root string, log *slog.Logger, clock Clock, bases BaseConfig) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image store root: %w", err)
	}
	s := &Store{db: db, root: root, log: log, clock: clock, bases: bases, trash: newTrash(log), flushes: map[Digest]*flush{}}
	for _, d := range []string{s.layersDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	// Layer directories must be reachable by whoever the overlay's users are.
	for _, d := range []string{root, filepath.Dir(s.layersDir()), s.layersDir()} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	if err := markTopDir(s.tmpDir()); err != nil {
		log.Debug("image store: tmp/ not marked as a top directory", "err", err)
	}
	return s, nil
}

// fsTopDirFL is FS_TOPDIR_FL (chattr +T): "the top of a directory
// hierarchy" for ext2/3/4's Orlov allocator.
const fsTopDirFL = 0x00020000

// markTopDir sets FS_TOPDIR_FL on dir, where layers are extracted. ext4 then
// spreads the directories made in dir over block groups, as it does those of
// a filesystem's root, instead of packing them beside dir. That matters on
// ext4 without a journal (this project's machines): allocating an inode
// there skips, one by one, every free inode of the group that was deleted
// recently, so extracting 12,800 files beside a tree just removed (a
// duplicate layer, a deleted image) cost 230-330 µs a file instead of 30-45.
// Filesystems without the flag refuse it; that is no error for the store.
func markTopDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopDirFL != 0 {
		return err
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags|fsTopDirFL)
}

func (s *Store) layersDir() string { return filepath.Join(s.root, "layers", "sha256") }
func (s *Store) tmpDir() string    { return filepath.Join(s.root, "tmp") }

// LayerPath returns the directory holding layer d. The directory belongs to
// the store and must not be written to.
func (s *Store) LayerPath(d Digest) string { return filepath.Join(s.layersDir(), d.Hex()) }

// Startup decides in which form new layers are stored (see erofslayers.go),
// mounts the layer images, and removes crash leftovers: everything in tmp/,
// and layer directories and images the metadata does not know. Known layers whose directories are gone are
// dropped from the metadata with the images that use them (logged as lost).
// Layers no image uses (a crash between storing a layer and recording its
// image) are removed. Known layers not marked durable (a crash cut their
// flush short) are checked: kept and marked durable if intact, dropped like
// the lost ones otherwise (see checkPending). Call it once, before the
// store is used.
func (s *Store) Startup(ctx context.Context) error {
	// Layer images still mounted by an earlier run that stopped without
	// Close are mounted again below, from their files.
	if err := s.unmountLayers(); err != nil {
		return fmt.Errorf("image startup: %w", err)
	}
	tmp, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("image startup: %w", err)
	}
	for _, e := range tmp {
		if err := removeTree(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return fmt.Errorf("image startup: %w", err)
		}
	}
	s.chooseFormat()
	// Layers no image uses go first, unmounted and unchecked: those of
	// snapshots, image builds or pulls cut off between storing a layer and
	// recording the image (nothing is under way now).
	unused, err := s.dropUnusedLayers(ctx, nil)
	if err != nil {
		return fmt.Errorf("image startup: %w", err)
	}
	for _, d := range unused {
		s.log.Info("removed a layer no image uses", "layer", d)
	}
	known := map[string]bool{} // hex -> durable
	rows, err := s.db.QueryContext(ctx, `SELECT digest, durable FROM layers`)
	if err != nil {
		return fmt.Errorf("image startup: %w", err)
	}
	for rows.Next() {
		var d string
		var durable bool
		if err := rows.Scan(&d, &durable); err != nil {
			rows.Close()
			return fmt.Errorf("image startup: %w", err)
		}
		known[Digest(d).Hex()] = durable
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("image startup: %w", err)
	}
	entries, err := os.ReadDir(s.layersDir())
	if err != nil {
		return fmt.Errorf("image startup: %w", err)
	}
	found := map[string]bool{} // hex -> stored as an image
	for _, e := range entries {
		hex, isImage := layerEntryName(e.Name())
		found[hex] = found[hex] || isImage
	}
	var pending []Digest
	type lostLayer struct {
		unflushed bool
		why       error
	}
	lost := map[Digest]lostLayer{}
	for hex, isImage := range found {
		d := Digest(digestPrefix + hex)
		durable, ok := known[hex]
		if !ok {
			s.log.Info("removing unrecorded layer", "layer", hex)
			if err := errors.Join(os.RemoveAll(s.LayerPath(d)), os.RemoveAll(s.layerImagePath(d))); err != nil {
				return fmt.Errorf("image startup: %w", err)
			}
			continue
		}
		delete(known, hex)
		if isImage {
			if err := s.mountLayerImage(d); err != nil {
				if durable {
					return fmt.Errorf("image startup: layer %s: %w", d, err)
				}
				lost[d] = lostLayer{true, err} // a machine crash cut its write short
				continue
			}
		}
		if !durable {
			pending = append(pending, d)
		}
	}
	for hex, durable := range known {
		lost[Digest(digestPrefix+hex)] = lostLayer{!durable, errors.New("its directory is missing")}
	}
	for d, l := range lost {
		if err := s.dropLostLayer(ctx, d, l.unflushed, l.why); err != nil {
			return fmt.Errorf("image startup: %w", err)
		}
	}
	for _, d := range pending {
		if err := s.checkPending(ctx, d); err != nil {
			return fmt.Errorf("image startup: layer %s: %w", d, err)
		}
	}
	return nil
}

// dropLostLayer forgets a recorded layer that cannot be used (detail says
// why), and the images built on it, then removes its directory if any.
// unflushed says the layer was not durable: the machine stopped before it
// was written to disk, and the loss is logged at error level (else, a
// directory that went missing, at warning level).
func (s *Store) dropLostLayer(ctx context.Context, d Digest, unflushed bool, detail error) error {
	level, why := slog.LevelWarn, "its layer directory is missing"
	if unflushed {
		level, why = slog.LevelError, "the machine stopped before its layer was written to disk"
	}
	imgs, err := s.List(ctx)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var lost []string
	for _, im := range imgs {
		for _, l := range im.Layers {
			if l == d {
				s.log.Log(ctx, level, "image lost: "+why, "image", im.ID, "names", im.Names, "source", im.Source, "layer", d)
				if err := deleteImageRows(ctx, tx, im.ID); err != nil {
					return err
				}
				lost = append(lost, im.ID)
				break
			}
		}
	}
	s.log.Log(ctx, level, "layer lost: "+why, "layer", d, "detail", detail, "images", lost)
	if _, err := tx.ExecContext(ctx, `DELETE FROM layers WHERE digest = ?`, string(d)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return s.removeLayerDirs([]Digest{d})
}
