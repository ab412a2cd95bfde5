package sandbox

import (
	"context"
	"fmt"
	"path"
	"sort"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// MountRequest is an image the engine mounts at Path when it brings a
// sandbox up: the image's layers, shown copy-on-write, replacing what the
// path held (and creating it if missing).
type MountRequest struct {
	Path  string
	Image ImageInfo
}

// MaxMounts bounds the images one sandbox may mount.
const MaxMounts = 16

// checkMounts validates the mounts of a create request and cleans their
// paths in place: absolute, not "/", outside the engine's mounts, distinct
// and not nested in one another.
func checkMounts(ms []ImageMount) error {
	if len(ms) > MaxMounts {
		return errdefs.Invalid("%d mounts: at most %d", len(ms), MaxMounts)
	}
	for i := range ms {
		if ms[i].Image == "" {
			return errdefs.Invalid("mount at %q: no image", ms[i].Path)
		}
		if err := CheckMountPath(ms[i].Path); err != nil {
			return fmt.Errorf("mount %s: %w", ms[i].Image, err)
		}
		ms[i].Path = path.Clean(ms[i].Path)
	}
	sorted := append([]ImageMount(nil), ms...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for i := 1; i < len(sorted); i++ {
		if within(sorted[i].Path, sorted[i-1].Path) {
			return errdefs.Invalid("mounts at %s and %s overlap", sorted[i-1].Path, sorted[i].Path)
		}
	}
	return nil
}

// resolveMounts checks spec's mounts, resolves their images (which counts as
// a use of each) and records the resolved ids in spec. Unknown images are
// ErrNotFound. A mount that already has an id (a spec kept by a memory
// snapshot) resolves by that id, not by its reference: a name moved to
// another image since must not change what a restored sandbox finds, and
// runsc refuses to restore onto other content anyway.
func (m *Manager) resolveMounts(ctx context.Context, spec *Spec) ([]MountRequest, error) {
	if len(spec.Mounts) == 0 {
		return nil, nil
	}
	if err := checkMounts(spec.Mounts); err != nil {
		return nil, err
	}
	out := make([]MountRequest, 0, len(spec.Mounts))
	for i, mt := range spec.Mounts {
		ref := mt.Image
		if mt.ImageID != "" {
			ref = mt.ImageID
		}
		img, err := m.images.ResolveImage(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("mount at %s: %w", mt.Path, err)
		}
		spec.Mounts[i].ImageID = img.ID
		if mt.Live {
			continue // a live mount: its record stages it (ImageMount.Live)
		}
		out = append(out, MountRequest{Path: mt.Path, Image: img})
	}
	return out, nil
}
