package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/fsutil"
)

// builder makes the tree of one base image.
type builder interface {
	// cacheKey names the builder's version and every input of the build, so
	// that two builds with the same key are interchangeable.
	cacheKey(ctx context.Context) (string, error)
	// build fills the empty directory dir, writing progress lines to
	// progress, and returns the image's config.
	build(ctx context.Context, dir string, progress io.Writer) (ImageConfig, error)
}

// BaseNames lists the base images EnsureBase can build.
func BaseNames() []string { return []string{"busybox", "debian-slim"} }

func (s *Store) builder(name string) (builder, error) {
	switch name {
	case "busybox":
		bin := s.bases.BusyboxPath
		if bin == "" {
			bin = "/bin/busybox"
		}
		return busyboxBuilder{bin: bin}, nil
	case "debian-slim":
		apt := s.bases.AptDir
		if apt == "" {
			apt = "/etc/apt"
		}
		return debianBuilder{mirror: s.bases.Mirror, aptDir: apt, suite: "bookworm"}, nil
	}
	return nil, errdefs.NotFound("no base image named %q (known: %v)", name, BaseNames())
}

// cacheManifest describes one builder cache entry (a directory holding it
// and layer.tar).
type cacheManifest struct {
	Key     string      `json:"key"`
	Digest  Digest      `json:"digest"`
	Config  ImageConfig `json:"config"`
	BuiltAt time.Time   `json:"built_at"`
}

// EnsureBase makes sure the base image name exists and returns it: if the
// name resolves already it is returned as it is; else the layer is imported
// from the builder cache when an entry for the same inputs exists (its digest
// checked); else it is built (and the cache filled). progress receives
// human-readable lines (may be nil). Idempotent; concurrent calls are
// serialised.
func (s *Store) EnsureBase(ctx context.Context, name string, progress io.Writer) (Image, error) {
	if progress == nil {
		progress = io.Discard
	}
	if im, err := s.Resolve(ctx, name); !errors.Is(err, errdefs.ErrNotFound) {
		return im, err
	}
	b, err := s.builder(name)
	if err != nil {
		return Image{}, err
	}
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	if im, err := s.Resolve(ctx, name); !errors.Is(err, errdefs.ErrNotFound) {
		return im, err
	}
	start := s.clock.Now()
	key, err := b.cacheKey(ctx)
	if err != nil {
		return Image{}, fmt.Errorf("base image %s: %w", name, err)
	}
	entry := ""
	if s.bases.CacheDir != "" {
		sum := sha256.Sum256([]byte(key))
		entry = filepath.Join(s.bases.CacheDir, "base", name+"-"+hex.EncodeToString(sum[:8]))
		if m, ok := s.importCached(ctx, entry, key, progress); ok {
			s.log.Info("base image imported from cache", "name", name, "layer", m.Digest, "took", s.clock.Now().Sub(start))
			return s.createBase(ctx, name, m)
		}
	}
	fmt.Fprintf(progress, "building base image %s\n", name)
	m, err := s.buildBase(ctx, b, key, entry, progress)
	if err != nil {
		return Image{}, fmt.Errorf("base image %s: %w", name, err)
	}
	s.log.Info("base image built", "name", name, "layer", m.Digest, "took", s.clock.Now().Sub(start))
	return s.createBase(ctx, name, m)
}

// createBase records base image name made of layer m.Digest, once the layer
// is durable: a base image is made once and every snapshot of its sandboxes
// builds on it, and the wait is short beside its build or import.
func (s *Store) createBase(ctx context.Context, name string, m cacheManifest) (Image, error) {
	if err := s.WaitDurable(ctx, m.Digest); err != nil {
		return Image{}, err
	}
	im, err := s.CreateImage(ctx, []Digest{m.Digest}, m.Config, "base:"+name)
	if err != nil {
		return Image{}, err
	}
	if err := s.SetName(ctx, name, im.ID); err != nil {
		return Image{}, err
	}
	return s.Get(ctx, im.ID)
}

// importCached adds the layer of cache entry dir if the entry is there, was
// made for key, and its tar has the digest it was recorded with. A bad entry
// is removed.
func (s *Store) importCached(ctx context.Context, dir, key string, progress io.Writer) (cacheManifest, bool) {
	var m cacheManifest
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return m, false
	}
	f, err := os.Open(filepath.Join(dir, "layer.tar"))
	if err == nil {
		defer f.Close()
	}
	if err != nil || json.Unmarshal(raw, &m) != nil || m.Key != key {
		s.log.Warn("discarding unusable base image cache entry", "entry", dir)
		os.RemoveAll(dir)
		return m, false
	}
	fmt.Fprintf(progress, "importing base image layer %s from %s\n", m.Digest, dir)
	d, err := s.AddLayerFromTar(ctx, f)
	if err != nil || d != m.Digest {
		s.log.Warn("discarding base image cache entry", "entry", dir, "want", m.Digest, "got", d, "err", err)
		os.RemoveAll(dir)
		if d != "" {
			if err := s.DropLayerIfUnused(ctx, d); err != nil {
				s.log.Warn("removing the layer of a bad cache entry", "layer", d, "err", err)
			}
		}
		return m, false
	}
	return m, true
}

// buildBase runs b in a scratch directory and adds the result as a layer.
// With a cache entry path, the layer's tar is written there first (temp
// directory, fsync, rename) and the layer is added from it.
func (s *Store) buildBase(ctx context.Context, b builder, key, entry string, progress io.Writer) (cacheManifest, error) {
	dir, err := os.MkdirTemp(s.tmpDir(), "build-")
	if err != nil {
		return cacheManifest{}, err
	}
	defer removeTree(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return cacheManifest{}, err
	}
	cfg, err := b.build(ctx, dir, progress)
	if err != nil {
		return cacheManifest{}, err
	}
	m := cacheManifest{Key: key, Config: cfg, BuiltAt: s.clock.Now().UTC()}
	if entry == "" {
		m.Digest, err = s.AddLayerFromDir(ctx, dir)
		return m, err
	}
	fmt.Fprintf(progress, "writing layer to the builder cache %s\n", entry)
	if err := os.MkdirAll(filepath.Dir(entry), 0o700); err != nil {
		return m, err
	}
	ctmp, err := os.MkdirTemp(filepath.Dir(entry), ".tmp-")
	if err != nil {
		return m, err
	}
	defer os.RemoveAll(ctmp)
	tarPath := filepath.Join(ctmp, "layer.tar")
	if err := writeTarFile(ctx, dir, tarPath); err != nil {
		return m, err
	}
	f, err := os.Open(tarPath)
	if err != nil {
		return m, err
	}
	defer f.Close()
	if m.Digest, err = s.AddLayerFromTar(ctx, f); err != nil {
		return m, err
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := fsutil.WriteFile(filepath.Join(ctmp, "manifest.json"), raw, 0o600); err != nil {
		return m, err
	}
	os.RemoveAll(entry) // an unusable old entry, if any
	if err := os.Rename(ctmp, entry); err != nil {
		// Another process filled the entry meanwhile; ours is not needed.
		s.log.Warn("builder cache entry not stored", "entry", entry, "err", err)
		return m, nil
	}
	if err := fsutil.SyncDir(filepath.Dir(entry)); err != nil {
		s.log.Warn("builder cache entry not synced", "entry", entry, "err", err)
	}
	return m, nil
}

func writeTarFile(ctx context.Context, dir, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := writeCanonicalTar(ctx, dir, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// removeTree unmounts whatever is mounted below dir (a killed debootstrap
// leaves proc and sys mounted in its target), then removes dir.
func removeTree(dir string) error {
	mounts, err := MountPointsUnder(dir) // deepest first
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := UnmountRootfs(m); err != nil {
			return err
		}
	}
	return os.RemoveAll(dir)
}
