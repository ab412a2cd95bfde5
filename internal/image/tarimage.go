package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/erofs"
)

// Layer images around a tar. A sandbox's root filesystem diff is a tar the
// sentry writes into a file (see TarFile); the store takes that file over
// as the new layer's image: the tar is its data area (tar contents are
// 512-byte aligned, so the image has 512-byte blocks), the metadata goes
// after it and the superblock into the 4 KiB left free before it. Nothing
// of the files' contents is copied; the daemon reads the tar's headers and
// hashes the contents (for the digest) from the page cache. Copying 200 MiB
// of 16 KiB files out of the tar into an image cost the daemon 0.9 s of CPU
// here, and on a 2-core machine slowed the sentry's tar from 0.1 s to
// 0.5-1 s.
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

// newTarImage takes over the file tf's tar is written into and returns a
// builder making a layer image around it; under is the directory whose
// tree is the layer ("" for all).
func (s *Store) newTarImage(tf TarFile, under string) (*imageBuilder, error) {
	f, start, err := tf.TakeFile()
	if err != nil {
		return nil, err
	}
	if start < 4096 || start%4096 != 0 {
		f.Close()
		return nil, fmt.Errorf("layer image: the tar starts at %d, want a multiple of 4096", start)
	}
	w, err := erofs.NewWriterOpts(f, erofs.Options{BlockBits: tarImageBlockBits})
	if err != nil {
		f.Close()
		return nil, err
	}
	b := &imageBuilder{f: f, w: w, tarData: true, dataStart: start, under: under}
	b.sd = newStreamDigest(under)
	b.sd.readFrom(int(f.Fd()))
	return b, nil
}

// imageFile finishes b's image and returns a path naming it under tmp/:
// the image's own file, or for an image around a tar (a nameless file) a
// link made to it, or a copy of it where no link can be made.
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
	if !b.tarData {
		return b.f.Name(), nil
	}
	if b.linked != "" {
		return b.linked, nil
	}
	tmp, err := os.CreateTemp(s.tmpDir(), "tar-*"+imageSuffix)
	if err != nil {
		return "", err
	}
	p := tmp.Name()
	tmp.Close()
	os.Remove(p)
	err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(b.f.Fd())), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.EXDEV) { // the tar's file is on another filesystem
		err = copyWhole(b.f, p)
	}
	if err != nil {
		return "", fmt.Errorf("link layer image: %w", err)
	}
	b.linked = p
	return p, nil
}

// copyWhole copies the file f to a new file p.
func copyWhole(f *os.File, p string) error {
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, io.NewSectionReader(f, 0, 1<<62))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
	}
	return err
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

// discard closes b's file and removes what names it under tmp/ unless it
// was stored (renamed away).
func (b *imageBuilder) discard() {
	name := b.f.Name()
	b.f.Close()
	if b.tarData {
		if b.linked != "" {
			os.Remove(b.linked)
		}
		return
	}
	os.Remove(name)
}

// addLayerFromTarFile is AddLayerFromUpperTar for a tar the store can take
// over (see TarFile).
func (s *Store) addLayerFromTarFile(ctx context.Context, tf TarFile, keep func(string) bool) (Digest, error) {
	st := s.newStages()
	b, err := s.newTarImage(tf, "")
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	defer b.discard()
	defer b.sd.stop()
	err = convertUpper(ctx, tf, keep, b.add)
	b.close()
	st.mark("extract")
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	d, err := s.storeImage(ctx, b, st)
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	st.log(ctx, s.log, "layer from upper tar", "layer", d, "route", "tar image")
	return d, nil
}
