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

// Probe reports whether this kernel mounts file-backed EROFS images: it
// builds a tiny image in dir (an existing writable directory), mounts it on
// a directory it makes in dir, checks that a file reads back, unmounts and
// removes what it made. nil means supported.
func Probe(dir string) (err error) {
	const name, content = "probe", "sandboxd erofs probe\n"
	f, err := os.CreateTemp(dir, ".erofs-probe-*.img")
	if err != nil {
		return fmt.Errorf("erofs probe: %w", err)
	}
	defer func() {
		f.Close()
		if rerr := os.Remove(f.Name()); rerr != nil && err == nil {
			err = fmt.Errorf("erofs probe: %w", rerr)
		}
	}()
	w := NewWriter(f)
	_, _, err = w.Create(w.Root(), name, Meta{Mode: 0o644}, int64(len(content)), func(fd int) error {
		_, err := unix.Write(fd, []byte(content))
		return err
	})
	if err != nil {
		w.Close()
		return fmt.Errorf("erofs probe: %w", err)
	}
	if _, err := w.Close(); err != nil {
		return fmt.Errorf("erofs probe: %w", err)
	}
	mnt, err := os.MkdirTemp(dir, ".erofs-probe-mnt-*")
	if err != nil {
		return fmt.Errorf("erofs probe: %w", err)
	}
	defer func() {
		if rerr := os.Remove(mnt); rerr != nil && err == nil {
			err = fmt.Errorf("erofs probe: %w", rerr)
		}
	}()
	if err := Mount(f.Name(), mnt); err != nil {
		return fmt.Errorf("erofs probe: %w", err)
	}
	got, rerr := os.ReadFile(filepath.Join(mnt, name))
	if uerr := unix.Unmount(mnt, 0); uerr != nil {
		// Do not leave a mount behind a failed probe.
		if derr := unix.Unmount(mnt, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("erofs probe: unmount %s: %w", mnt, errors.Join(uerr, derr))
		}
	}
	if rerr != nil {
		return fmt.Errorf("erofs probe: read back: %w", rerr)
	}
	if !bytes.Equal(got, []byte(content)) {
		return fmt.Errorf("erofs probe: read back %q, want %q", got, content)
	}
	return nil
}
