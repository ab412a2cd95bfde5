package sandbox

import (
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Filesystem and directory snapshots: a running sandbox's files become an
// image (im-...) that new sandboxes start from or mount. The sandbox keeps
// running.

// DefaultDirSnapshotTTL is how long a directory snapshot lives after its last
// use when the caller names no TTL.
const DefaultDirSnapshotTTL = 30 * 24 * time.Hour

// RootfsDiff is the change a sandbox made to its root filesystem: the tar of
// its overlay's upper layer (overlayfs form: whiteouts are character devices
// 0/0, replaced directories carry trusted.overlay.opaque=y).
type RootfsDiff struct {
	Tar io.ReadCloser
	// Exclude lists absolute paths that are the engine's, not the sandbox's
	// (the agent's mount points): they must not go into an image.
	Exclude []string
}

// RootfsDiffer is an optional ability of a Provisioner.
type RootfsDiffer interface {
	// RootfsDiff returns the change the running sandbox h made to its root
	// filesystem so far. The caller closes the Tar.
	RootfsDiff(ctx context.Context, h Handle) (RootfsDiff, error)
}

// ImageBuilder is an optional ability of Images: it makes images from
// sandboxes' changes and removes images.
type ImageBuilder interface {
	// ImageFromDiff stores diff (minus diff.Exclude) as a layer and records
	// the image made of base's layers plus that layer, with base's config.
	ImageFromDiff(ctx context.Context, base ImageInfo, diff RootfsDiff, source string, o ImageOptions) (ImageInfo, error)
	// ImageFromDir records a one-layer image holding the tree at dir (an
	// absolute path) of the root made of base's layers with diff on top, at
	// the image's root, with an empty config.
	ImageFromDir(ctx context.Context, base ImageInfo, diff RootfsDiff, dir, source string, o ImageOptions) (ImageInfo, error)
	// DeleteImage deletes image id and the layers no other image uses.
	DeleteImage(ctx context.Context, id string) error
	// CollectExpired deletes the expired images inUse reports false for.
	CollectExpired(ctx context.Context, inUse func(id string) bool) ([]string, error)
}

// ImageOptions tune how an ImageBuilder records an image.
type ImageOptions struct {
	// TTL is the image's life after its last use (zero: no expiry).
	TTL time.Duration
	// WaitDurable: return once the image's new layer is on disk. Without,
	// the image is recorded, and usable, as soon as its layer is stored;
	// the layer reaches the disk in the background, and a machine crash
	// before that loses the image.
	WaitDurable bool
}

// SnapshotOptions tune a snapshot.
type SnapshotOptions struct {
	// TTL is the image's life after its last use. Nil takes the default
	// (filesystem snapshots: no expiry; directory snapshots: 30 days); a zero
	// TTL means no expiry.
	TTL *time.Duration
	// WaitDurable: return only once the image survives a machine crash
	// (its new layer is on disk); see ImageOptions.
	WaitDurable bool
}

// imageOptions returns what o asks of the ImageBuilder, with def as the TTL
// when o names none.
func (o SnapshotOptions) imageOptions(def time.Duration) (ImageOptions, error) {
	out := ImageOptions{TTL: def, WaitDurable: o.WaitDurable}
	if o.TTL == nil {
		return out, nil
	}
	if *o.TTL < 0 {
		return ImageOptions{}, errdefs.Invalid("ttl %v is negative", *o.TTL)
	}
	out.TTL = *o.TTL
	return out, nil
}

// snapshotDeps returns the abilities snapshots need, or ErrFailedPrecondition
// naming what is missing.
func (m *Manager) snapshotDeps() (RootfsDiffer, ImageBuilder, error) {
	d, ok := m.prov.(RootfsDiffer)
	if !ok {
		return nil, nil, errdefs.FailedPrecondition("this engine cannot read sandboxes' filesystem changes")
	}
	b, ok := m.images.(ImageBuilder)
	if !ok {
		return nil, nil, errdefs.FailedPrecondition("this image store cannot make images")
	}
	return d, b, nil
}

// rootfsDiff reads the running sandbox id's root filesystem change and
// returns it with the sandbox's image. The engine starts writing the change
// first; the records (sb when the caller has it, and the image) are read
// meanwhile.
func (m *Manager) rootfsDiff(ctx context.Context, id string, d RootfsDiffer, sb *Sandbox) (RootfsDiff, ImageInfo, error) {
	l, err := m.running(ctx, id)
	if err != nil {
		return RootfsDiff{}, ImageInfo{}, err
	}
	diff, err := d.RootfsDiff(ctx, l.handle)
	if err != nil {
		return RootfsDiff{}, ImageInfo{}, fmt.Errorf("read filesystem of sandbox %s: %w", id, err)
	}
	if sb == nil {
		if sb, err = m.Get(ctx, id); err != nil {
			diff.Tar.Close()
			return RootfsDiff{}, ImageInfo{}, err
		}
	}
	base, err := m.images.ResolveImage(ctx, sb.ImageID)
	if err != nil {
		diff.Tar.Close()
		return RootfsDiff{}, ImageInfo{}, fmt.Errorf("image of sandbox %s: %w", id, err)
	}
	return diff, base, nil
}

// SnapshotFilesystem records the running sandbox id's whole root filesystem
// as a new image: the sandbox's image layers plus one layer holding what the
// sandbox changed (files added or changed, deletions as whiteouts, modes,
// ownership, symlinks, hard links). Identical snapshots give the same image.
// What lives in other mounts (the /tmp tmpfs, mounted images) is not part of
// it. The image's new layer reaches the disk after this returns, unless
// o.WaitDurable. Errors: ErrNotFound (no such sandbox), ErrFailedPrecondition
// (not running), ErrInvalidArgument (bad TTL).
func (m *Manager) SnapshotFilesystem(ctx context.Context, id string, o SnapshotOptions) (ImageInfo, error) {
	opts, err := o.imageOptions(0)
	if err != nil {
		return ImageInfo{}, err
	}
	d, b, err := m.snapshotDeps()
	if err != nil {
		return ImageInfo{}, err
	}
	start := m.clock.Now()
	diff, base, err := m.rootfsDiff(ctx, id, d, nil)
	if err != nil {
		return ImageInfo{}, err
	}
	defer diff.Tar.Close()
	opened := m.clock.Now()
	img, err := b.ImageFromDiff(ctx, base, diff, "snapshot-fs:"+id, opts)
	if err != nil {
		return ImageInfo{}, m.snapshotFailed(ctx, id, fmt.Errorf("snapshot filesystem of %s: %w", id, err))
	}
	m.log.Info("filesystem snapshot", "sandbox_id", id, "image", img.ID, "took", m.clock.Now().Sub(start), "diff_open", opened.Sub(start),
		"wait_durable", opts.WaitDurable)
	return img, nil
}

// SnapshotDirectory records the tree at dir (absolute, not "/") in the
// running sandbox id as a new one-layer image holding that tree at its root,
// independent of the sandbox's image. Only the root filesystem is read: dir
// must not lie in another mount (/tmp, /dev, /proc, /sys, the agent's
// directories, mounted images). Errors as for SnapshotFilesystem; a bad dir is
// ErrInvalidArgument.
func (m *Manager) SnapshotDirectory(ctx context.Context, id, dir string, o SnapshotOptions) (ImageInfo, error) {
	if err := CheckMountPath(dir); err != nil {
		return ImageInfo{}, err
	}
	opts, err := o.imageOptions(DefaultDirSnapshotTTL)
	if err != nil {
		return ImageInfo{}, err
	}
	d, b, err := m.snapshotDeps()
	if err != nil {
		return ImageInfo{}, err
	}
	start := m.clock.Now()
	sb, err := m.Get(ctx, id)
	if err == nil {
		for _, mt := range sb.Spec.Mounts {
			if within(dir, mt.Path) || within(mt.Path, dir) {
				return ImageInfo{}, errdefs.Invalid("%s: overlaps the image mounted at %s; snapshot the mount itself or a directory beside it", dir, mt.Path)
			}
		}
	} else {
		sb = nil // rootfsDiff reports why
	}
	diff, base, err := m.rootfsDiff(ctx, id, d, sb)
	if err != nil {
		return ImageInfo{}, err
	}
	defer diff.Tar.Close()
	opened := m.clock.Now()
	img, err := b.ImageFromDir(ctx, base, diff, path.Clean(dir), "snapshot-dir:"+id+":"+path.Clean(dir), opts)
	if err != nil {
		return ImageInfo{}, m.snapshotFailed(ctx, id, fmt.Errorf("snapshot directory %s of %s: %w", dir, id, err))
	}
	m.log.Info("directory snapshot", "sandbox_id", id, "dir", dir, "image", img.ID, "took", m.clock.Now().Sub(start), "diff_open", opened.Sub(start),
		"wait_durable", opts.WaitDurable)
	return img, nil
}

// snapshotFailed returns err, the failure of a snapshot of sandbox id, or,
// when the sandbox stopped running meanwhile (terminated, timed out: the
// engine's tar then breaks off mid-stream), an ErrFailedPrecondition that
// says so, with err's text.
func (m *Manager) snapshotFailed(ctx context.Context, id string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	if _, rerr := m.running(context.WithoutCancel(ctx), id); rerr != nil {
		return errdefs.FailedPrecondition("sandbox %s stopped running during the snapshot (%v)", id, err)
	}
	return err
}

// reservedPaths are the mounts every sandbox has: no image is mounted on or
// under them, and no directory snapshot is taken from them.
var reservedPaths = []string{"/.sandboxd", "/proc", "/sys", "/dev", "/tmp"}

// CheckMountPath returns ErrInvalidArgument unless p is an absolute path
// other than "/" outside the reserved mounts (/.sandboxd, /proc, /sys, /dev,
// /tmp).
func CheckMountPath(p string) error {
	switch {
	case p == "":
		return errdefs.Invalid("empty path: want an absolute path")
	case !strings.HasPrefix(p, "/"):
		return errdefs.Invalid("path %q is relative: want an absolute path", p)
	case strings.ContainsRune(p, 0):
		return errdefs.Invalid("path holds a NUL byte")
	case path.Clean(p) == "/":
		return errdefs.Invalid("path %q is the root: mounting on or snapshotting / is not allowed (use a filesystem snapshot)", p)
	}
	for _, r := range reservedPaths {
		if within(path.Clean(p), r) {
			return errdefs.Invalid("path %q lies in %s, which the sandbox's engine owns", p, r)
		}
	}
	return nil
}

// within reports whether clean absolute path p is dir or lies below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}
