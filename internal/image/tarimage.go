package image

import (
	"context"
	"fmt"
	"os"

	"github.com/sandboxd/sandboxd/internal/erofs"
)

// Layer images around a tar. A sandbox's root filesystem diff is a tar the
// sentry writes into a file (see TarFile); the stream has the kernel copy
// it, as it comes, into the new layer's image file, where it is the data
// area (tar contents are 512-byte aligned, so the image has 512-byte
// blocks): the metadata goes after it, the superblock into the 4 KiB left
// free before it. No file's contents pass through the daemon's memory: it
// reads the tar's headers, and hashes the contents (for the digest) from
// the page cache. Copying 200 MiB of 16 KiB files out of the tar into an
// image file by file cost the daemon 0.9 s of CPU here, and on a 2-core
// machine slowed the sentry's tar from 0.1 s to 0.5-1 s.
//
// The copy is the daemon's own: the sentry, which a sandbox that broke out
// of its processes may control, can go on writing into its file after the
// tar, but cannot change a layer once it is digested, nor the filesystem
// image the host's kernel mounts.
//
// What the layer does not use stays in the image: the paths a snapshot
// leaves out, and for a directory snapshot the rest of the diff. When that
// is more than the layer uses (and over wasteMin), the layer is copied out
// into an image of its own instead (see storeImage).

// tarImageBlockBits gives 512-byte blocks: a tar's alignment.
const tarImageBlockBits = 9

// wasteMin is how much of a tar a layer may leave unused in its image
// before it is copied out instead (a variable for tests).
var wasteMin int64 = 64 << 20

// newTarImage makes a layer image under tmp/ and has tf's tar copied into
// it as it comes (see TarFile); it returns a builder making the image
// around it. under is the directory whose tree is the layer ("" for all).
func (s *Store) newTarImage(tf TarFile, under string) (*imageBuilder, error) {
	f, err := os.CreateTemp(s.tmpDir(), "tar-*"+imageSuffix)
	if err != nil {
		return nil, err
	}
	start, err := tf.MirrorTo(f)
	if err == nil && (start < 4096 || start%4096 != 0) {
		err = fmt.Errorf("the tar starts at %d, want a multiple of 4096", start)
	}
	var w *erofs.Writer
	if err == nil {
		w, err = erofs.NewWriterOpts(f, erofs.Options{BlockBits: tarImageBlockBits})
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("layer image: %w", err)
	}
	b := &imageBuilder{f: f, w: w, tarData: true, dataStart: start, under: under}
	b.digest(under)
	return b, nil
}

// imageFile finishes b's image and returns its path (under tmp/).
func (s *Store) imageFile(b *imageBuilder) (string, error) {
	if b.tarData {
		fi, err := b.f.Stat()
		if err != nil {
			return "", err
		}
		b.tarBytes = fi.Size() - b.dataStart
	}
	if _, err := b.finish(); err != nil {
		return "", fmt.Errorf("write image: %w", err)
	}
	return b.f.Name(), nil
}

// wasteful reports whether b's image, around a tar, leaves more of it
// unused than the layer uses (and over wasteMin).
func (b *imageBuilder) wasteful() bool {
	waste := b.tarBytes - b.refBytes
	return b.tarData && waste > wasteMin && waste > b.refBytes
}

// copyOut stores the tree of the image at img (mounted for the copy) as a
// layer of its own (AddLayerFromDir).
func (s *Store) copyOut(ctx context.Context, img string) (Digest, error) {
	mnt, err := os.MkdirTemp(s.tmpDir(), "copy-")
	if err != nil {
		return "", err
	}
	defer os.Remove(mnt)
	if err := erofs.Mount(img, mnt); err != nil {
		return "", err
	}
	defer UnmountRootfs(mnt)
	return s.AddLayerFromDir(ctx, mnt)
}

// discard closes b's file and removes it unless it was stored (renamed
// away).
func (b *imageBuilder) discard() {
	b.f.Close()
	os.Remove(b.f.Name())
}

// addLayerFromTarFile is AddLayerFromUpperTar for a tar the store can take
// over (see TarFile).
func (s *Store) addLayerFromTarFile(ctx context.Context, tf TarFile, keep func(string) bool) (Digest, error) {
	st := s.newStages()
	b, err := s.newTarImage(tf, "")
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	return s.fillImage(ctx, b, st, func() error { return convertUpper(ctx, tf, keep, b.add) }, "layer from upper tar", "route", "tar image")
}
