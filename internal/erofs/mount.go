package erofs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Mount mounts the EROFS image file image at target, an existing directory,
// read-only and nodev. The kernel reads the file directly (file-backed
// mount, CONFIG_EROFS_FS_BACKED_BY_FILE); no loop device is involved.
func Mount(image, target string) error {
	if err := unix.Mount(image, target, "erofs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("erofs: mount %s on %s: %w", image, target, err)
	}
	return nil
}

// Probe reports whether this kernel mounts file-backed EROFS images of
// both forms this package writes: it builds in dir (an existing writable
// directory) a tiny image of 4 KiB blocks whose file is written by Create,
// and one of 512-byte blocks whose files' contents were put in the file
// beforehand (at a 4 KiB and at a 512-byte boundary) and added with
// AddData, mounts each on a directory it makes in dir, checks that the
// files read back, unmounts and removes what it made. nil means both work.
func Probe(dir string) error {
	const content = "sandboxd erofs probe\n"
	err := probeImage(dir, Options{}, func(w *Writer, f *os.File) (map[string]string, error) {
		_, _, err := w.Create(w.Root(), "probe", Meta{Mode: 0o644}, int64(len(content)), func(fd int, _ int64) (int64, error) {
			n, err := unix.Write(fd, []byte(content))
			return int64(n), err
		})
		return map[string]string{"probe": content}, err
	})
	if err != nil {
		return fmt.Errorf("erofs probe (4 KiB blocks): %w", err)
	}
	err = probeImage(dir, Options{BlockBits: 9}, func(w *Writer, f *os.File) (map[string]string, error) {
		files := map[string]string{}
		d, err := w.Root().Mkdir("d", Meta{Mode: 0o755})
		if err != nil {
			return nil, err
		}
		for i, off := range []int64{dataStart, dataStart + 512} {
			name := fmt.Sprint("probe", i)
			data := fmt.Sprintf("sandboxd erofs probe %d at %d\n", i, off)
			if err := pwriteAll(int(f.Fd()), []byte(data), off); err != nil {
				return nil, err
			}
			if _, err := w.AddData(d, name, Meta{Mode: 0o644}, int64(len(data)), off); err != nil {
				return nil, err
			}
			files["d/"+name] = data
		}
		return files, nil
	})
	if err != nil {
		return fmt.Errorf("erofs probe (512-byte blocks, contents in place): %w", err)
	}
	return nil
}

// probeImage builds an image in a temporary file in dir with build, which
// returns the files' expected contents by path, mounts it on a temporary
// directory in dir, reads the files back, unmounts and removes both.
func probeImage(dir string, o Options, build func(w *Writer, f *os.File) (map[string]string, error)) (err error) {
	f, err := os.CreateTemp(dir, ".erofs-probe-*.img")
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		if rerr := os.Remove(f.Name()); rerr != nil && err == nil {
			err = rerr
		}
	}()
	w, err := NewWriterOpts(f, o)
	if err != nil {
		return err
	}
	files, err := build(w, f)
	if err != nil {
		w.Close()
		return err
	}
	if _, err := w.Close(); err != nil {
		return err
	}
	mnt, err := os.MkdirTemp(dir, ".erofs-probe-mnt-*")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.Remove(mnt); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err := Mount(f.Name(), mnt); err != nil {
		return err
	}
	var errs []error
	for name, want := range files {
		got, rerr := os.ReadFile(filepath.Join(mnt, name))
		switch {
		case rerr != nil:
			errs = append(errs, fmt.Errorf("read back: %w", rerr))
		case !bytes.Equal(got, []byte(want)):
			errs = append(errs, fmt.Errorf("read back %s: %q, want %q", name, got, want))
		}
	}
	if uerr := unix.Unmount(mnt, 0); uerr != nil {
		// Do not leave a mount behind a failed probe.
		if derr := unix.Unmount(mnt, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmount %s: %w", mnt, errors.Join(uerr, derr))
		}
	}
	return errors.Join(errs...)
}
