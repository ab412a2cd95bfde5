// Package fsutil is the project's one recipe for writing files that must
// survive a crash: write, fsync, and (for a replacement) rename over the old
// file and fsync the directory.
package fsutil

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes data to path (created or truncated, with mode) and fsyncs
// it. Use it inside a directory that becomes visible later as a whole
// (renamed into place, then SyncDir of its parent).
func WriteFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteFileAtomic replaces path with data: a reader, or a crash, sees the
// old content or the new, never a mix. The new file has mode.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return replace(path, data, mode, true)
}

// SyncDir fsyncs directory dir, making the entries created, renamed or
// removed in it durable.
func SyncDir(dir string) error { return SyncPath(dir) }

// SyncPath fsyncs the file or directory at path.
func SyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// ReplaceFile replaces path with data as WriteFileAtomic does for readers
// (old content or new, never a mix) but without fsync: a crash may lose
// the change. For files that live no longer than the processes they
// configure, where a host crash ends both.
func ReplaceFile(path string, data []byte, mode os.FileMode) error {
	return replace(path, data, mode, false)
}

// replace writes data to a temporary file beside path and renames it over
// path; with durable, the file is fsynced before the rename and the
// directory after it.
func replace(path string, data []byte, mode os.FileMode, durable bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil && durable {
		err = SyncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// CopyFile copies the regular file src to dst (created or truncated) with
// mode exactly (the umask does not apply). Not synced.
func CopyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(mode); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
