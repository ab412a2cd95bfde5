package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/erofs"
)

// Image layers. A layer is stored in one of two forms, told apart by what
// layers/sha256/ holds for it:
//
//   - an image: HEX.erofs, one EROFS image file (see imageBuilder), mounted
//     read-only (file-backed, no loop device) on the directory HEX while
//     the store is open. Every new layer takes this form when the kernel
//     mounts such images (Linux 6.12 and later with
//     CONFIG_EROFS_FS_BACKED_BY_FILE; Startup probes);
//   - a tree: the directory HEX, extracted file by file (older kernels, and
//     layers stored before images existed).
//
// Either way LayerPath(d), the directory, shows the layer's tree, and
// everything that reads layers (overlay mounts, digests, directory
// snapshots) reads it there.

// imageSuffix names a layer's image file.
const imageSuffix = ".erofs"

// layerImagePath returns the image file of layer d (which may be a tree).
func (s *Store) layerImagePath(d Digest) string { return s.LayerPath(d) + imageSuffix }

// UseTreeLayers makes the store keep new layers as trees even where images
// work (see above). Call before Startup.
func (s *Store) UseTreeLayers() { s.treeLayers = true }

// chooseFormat decides, at Startup, the form of new layers.
func (s *Store) chooseFormat() {
	if s.treeLayers {
		return
	}
	if err := erofs.Probe(s.tmpDir()); err != nil {
		s.log.Info("layers stored as trees of files: this kernel does not mount EROFS images from files", "err", err)
		return
	}
	s.images = true
	s.log.Debug("new layers stored as EROFS images")
}

// mountLayerImage mounts layer d's image on its directory (made if missing).
func (s *Store) mountLayerImage(d Digest) error {
	dir := s.LayerPath(d)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := erofs.Mount(s.layerImagePath(d), dir); err != nil {
		return fmt.Errorf("mount layer image: %w", err)
	}
	return nil
}

// unmountLayers unmounts every layer image mounted under layers/ (those of
// an earlier run included). A layer a running sandbox's overlay still uses
// is detached: the overlay keeps it until it goes.
func (s *Store) unmountLayers() error {
	mps, err := MountPointsUnder(s.layersDir())
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		errs = append(errs, UnmountRootfs(mp))
	}
	return errors.Join(errs...)
}

// addLayerImage makes a new image under tmp/, has fill add a layer's
// entries to it and stores the result as a layer (see commitLayer): the
// image form of addLayer.
func (s *Store) addLayerImage(ctx context.Context, what string, fill func(b *imageBuilder) error) (Digest, error) {
	st := s.newStages()
	b, err := s.newLayerImage()
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	b.digest("")
	return s.fillImage(ctx, b, st, func() error { return fill(b) }, what)
}

// fillImage has fill add a layer's entries to b, stores the image (see
// storeImage) and logs the stages under what (with args); b is discarded
// after.
func (s *Store) fillImage(ctx context.Context, b *imageBuilder, st *stages, fill func() error, what string, args ...any) (Digest, error) {
	defer b.discard()
	defer b.sd.stop()
	err := fill()
	b.close()
	st.mark("extract")
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	d, err := s.storeImage(ctx, b, st)
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	st.log(ctx, s.log, what, append([]any{"layer", d}, args...)...)
	return d, nil
}

// newLayerImage creates an empty image file under tmp/ and a builder
// writing into it.
func (s *Store) newLayerImage() (*imageBuilder, error) {
	f, err := os.CreateTemp(s.tmpDir(), "layer-*"+imageSuffix)
	if err != nil {
		return nil, err
	}
	return newImageBuilder(f), nil
}

// storeImage finishes b's image and stores it as a layer: its flush to disk
// starts, its digest is taken (streamed while it was built, or by walking
// it mounted), then it is renamed into place, mounted and recorded as not
// durable, as storeTree does for a tree. An image around a tar that leaves
// most of it unused is copied out instead (see tarimage.go).
func (s *Store) storeImage(ctx context.Context, b *imageBuilder, st *stages) (Digest, error) {
	img, err := s.imageFile(b)
	if err != nil {
		return "", err
	}
	st.mark("image_meta")
	if b.wasteful() {
		b.sd.stop()
		st.add("copied_out", b.tarBytes-b.refBytes)
		return s.copyOut(ctx, img)
	}
	fl, err := s.startFileFlush(b.f)
	if err != nil {
		return "", err
	}
	return s.storeLayer(ctx, img, fl, b.sd, func() (Digest, int64, error) { return s.walkImage(ctx, img, b.canonOptions()) }, st)
}

// walkImage returns the digest of the tree in the image file img (mounted
// for the walk on a directory beside it) and its canonical tar's size.
func (s *Store) walkImage(ctx context.Context, img string, o canonOptions) (Digest, int64, error) {
	mnt, err := os.MkdirTemp(s.tmpDir(), "walk-")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(mnt)
	if err := erofs.Mount(img, mnt); err != nil {
		return "", 0, err
	}
	defer UnmountRootfs(mnt)
	return walkDigest(ctx, mnt, o)
}

// startFileFlush flushes the file f to disk in the background (through a
// duplicate of its descriptor, so that it goes on wherever f is renamed
// to). The caller ends it as startFlush's.
func (s *Store) startFileFlush(f *os.File) (*flush, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("flush %s: %w", f.Name(), err)
	}
	fl := &flush{stop: make(chan struct{}), synced: make(chan error, 1), done: make(chan struct{}),
		start: s.clock.Now(), eachFile: true}
	s.bg.Go(func() {
		var err error
		if !stopped(fl.stop) {
			if err = unix.Fdatasync(fd); err != nil {
				err = &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
		}
		unix.Close(fd)
		fl.took = s.clock.Now().Sub(fl.start)
		fl.synced <- err
	})
	return fl, nil
}

// placeLayer puts the complete layer src (an image file, or a tree's
// directory) in place as layer d, under s.mu: an image is renamed to
// HEX.erofs and mounted on HEX; a tree is renamed to HEX. Leftovers of an
// unrecorded earlier copy are removed first.
func (s *Store) placeLayer(src string, d Digest) error {
	dst := s.LayerPath(d)
	if err := UnmountRootfs(dst); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.Remove(s.layerImagePath(d)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if !strings.HasSuffix(src, imageSuffix) {
		return os.Rename(src, dst)
	}
	if err := os.Rename(src, s.layerImagePath(d)); err != nil {
		return err
	}
	if err := s.mountLayerImage(d); err != nil {
		os.Remove(s.layerImagePath(d))
		os.Remove(dst)
		return err
	}
	return nil
}

// isLayerImage reports whether layer d is stored as an image.
func (s *Store) isLayerImage(d Digest) bool {
	_, err := os.Lstat(s.layerImagePath(d))
	return err == nil
}

// syncLayerImage flushes layer d's image file to disk.
func (s *Store) syncLayerImage(d Digest) error {
	f, err := os.Open(s.layerImagePath(d))
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// layerEntryName splits a name of layers/sha256/ into the layer's hex and
// whether it is an image file.
func layerEntryName(name string) (hex string, isImage bool) {
	if h, ok := strings.CutSuffix(name, imageSuffix); ok {
		return h, true
	}
	return name, false
}

// removeLayerFiles moves what holds layer d (its image and its directory,
// unmounted first) into gone, a directory under tmp/ for the trash.
func (s *Store) removeLayerFiles(d Digest, gone string) error {
	if err := UnmountRootfs(s.LayerPath(d)); err != nil {
		return err
	}
	var errs []error
	if err := os.Rename(s.LayerPath(d), filepath.Join(gone, "layer")); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := os.Rename(s.layerImagePath(d), filepath.Join(gone, "layer"+imageSuffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
