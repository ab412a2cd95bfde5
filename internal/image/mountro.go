package image

import (
	"context"
	"fmt"
	"os"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// ImageDir returns a directory showing the tree of the image made of layers
// (lowest first), read-only, for a sandbox to mount copy-on-write. One layer
// is its own directory (nothing is mounted; target is unused); several are
// merged by a read-only overlayfs mounted on target (created if missing),
// which UnmountRootfs removes. The store's directories are never written to.
func (s *Store) ImageDir(ctx context.Context, layers []Digest, target string) (string, error) {
	if len(layers) == 0 {
		return "", errdefs.Invalid("image dir: no layers")
	}
	dirs := make([]string, 0, len(layers)) // highest first
	for i := len(layers) - 1; i >= 0; i-- {
		if err := layers[i].Validate(); err != nil {
			return "", err
		}
		p := s.LayerPath(layers[i])
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			return "", errdefs.NotFound("image dir: layer %s not found", layers[i])
		}
		dirs = append(dirs, p)
	}
	if len(dirs) == 1 {
		return dirs[0], nil
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", fmt.Errorf("image dir: %w", err)
	}
	if err := mountLowerOnly(dirs, target); err != nil {
		return "", fmt.Errorf("image dir on %s: %w", target, err)
	}
	return target, nil
}
