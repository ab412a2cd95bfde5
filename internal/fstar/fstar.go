// Package fstar archives a file or directory tree as a tar stream and
// extracts such a stream, keeping modes, modification times and symlinks.
// Both ends of a copy into or out of a sandbox use it: the agent inside the
// sandbox and the SDK on the caller's machine.
//
// Layout: the archived path itself is the entry "."; a tree's other entries
// are "./rel/path" (directories end with "/"). Symlinks are archived as links
// and never followed. Extract makes entry "." the destination path and
// confines every other entry beneath it: names with ".." or a leading "/",
// and entries reached through a symlink that points out of the destination,
// are refused (os.Root), so an archive from an untrusted source cannot write
// outside the destination.
//
// Ownership is not kept: extracted files belong to the extracting user.
// Hard links are archived as separate files. Sockets are skipped.
package fstar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Write writes a tar archive of src (a file, symlink or directory tree) to
// w. It does not close w.
func Write(w io.Writer, src string) error {
	tw := tar.NewWriter(w)
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		if err := writeEntry(tw, src, ".", fi); err != nil {
			return err
		}
		return tw.Close()
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		name := "."
		if rel != "." {
			name = "./" + filepath.ToSlash(rel)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return writeEntry(tw, p, name, fi)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, p, name string, fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil
	}
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("archive %s: %w", p, err)
	}
	hdr.Name = name
	if fi.IsDir() && name != "." {
		hdr.Name += "/"
	}
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
	hdr.Format = tar.FormatPAX
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	// Copy exactly the size announced, even if the file changes meanwhile.
	n, err := io.Copy(tw, io.LimitReader(f, hdr.Size))
	if err != nil {
		return err
	}
	if n < hdr.Size { // shrank while archived: pad with zeros
		_, err = io.CopyN(tw, zeros{}, hdr.Size-n)
	}
	return err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Stats counts what Extract wrote.
type Stats struct {
	Entries int64
	Bytes   int64
}

// Extract reads a tar archive in Write's layout from r and makes its entry
// "." the path dest: a directory is made with its parents when missing (an
// existing one is merged into), a file or symlink replaces what is there.
// The parent of a non-directory dest must exist. Entries are confined
// beneath dest (see the package doc): an entry that would leave it fails the
// extraction (with fs.ErrPermission for a bad name, os.Root's error for a
// path through an escaping symlink); what was extracted before stays.
func Extract(r io.Reader, dest string) (Stats, error) {
	var st Stats
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err == io.EOF {
		return st, errors.New("extract: empty archive")
	}
	if err != nil {
		return st, fmt.Errorf("extract: %w", err)
	}
	if n, err := entryName(hdr.Name); err != nil || n != "." {
		return st, fmt.Errorf("extract: first entry is %q, want \".\"", hdr.Name)
	}
	if hdr.Typeflag != tar.TypeDir {
		st.Entries++
		n, err := extractTop(tr, hdr, dest)
		st.Bytes += n
		return st, err
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return st, err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return st, err
	}
	defer root.Close()
	type dirTime struct {
		name string
		mode fs.FileMode
		mt   time.Time
	}
	dirs := []dirTime{{".", modeOf(hdr), hdr.ModTime}}
	st.Entries++
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("extract: %w", err)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return st, err
		}
		if name == "." {
			continue
		}
		st.Entries++
		mode := modeOf(hdr)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return st, err
			}
			dirs = append(dirs, dirTime{name, mode, hdr.ModTime})
		case tar.TypeReg:
			n, err := writeFile(root, name, mode, tr)
			st.Bytes += n
			if err != nil {
				return st, err
			}
			root.Chtimes(name, hdr.ModTime, hdr.ModTime)
		case tar.TypeSymlink:
			if err := replace(root, name); err != nil {
				return st, err
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return st, err
			}
		case tar.TypeLink:
			target, err := entryName(hdr.Linkname)
			if err != nil {
				return st, err
			}
			if err := replace(root, name); err != nil {
				return st, err
			}
			if err := root.Link(target, name); err != nil {
				return st, err
			}
		default: // devices, fifos: not recreated
			st.Entries--
		}
	}
	// Modes and times of directories last: a read-only directory must be
	// filled first, and filling it changes its mtime.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := root.Chmod(d.name, d.mode); err != nil {
			return st, err
		}
		root.Chtimes(d.name, d.mt, d.mt)
	}
	return st, nil
}

// modeOf returns the permission, setuid, setgid and sticky bits of hdr.
func modeOf(hdr *tar.Header) fs.FileMode {
	return hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// entryName cleans a tar entry name into a path relative to the destination,
// refusing absolute names and names that climb out of it.
func entryName(name string) (string, error) {
	n := path.Clean("./" + strings.TrimPrefix(name, "./"))
	if strings.HasPrefix(name, "/") || n == ".." || strings.HasPrefix(n, "../") {
		return "", fmt.Errorf("extract: entry %q: %w", name, fs.ErrPermission)
	}
	return n, nil
}

// replace removes name if it exists and is not a directory.
func replace(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return &fs.PathError{Op: "extract", Path: name, Err: errors.New("is a directory")}
	}
	return root.Remove(name)
}

func writeFile(root *os.Root, name string, mode fs.FileMode, r io.Reader) (int64, error) {
	// A symlink in name's place is replaced, not written through.
	if fi, err := root.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := root.Remove(name); err != nil {
			return 0, err
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// extractTop writes a non-directory entry "." at dest.
func extractTop(tr *tar.Reader, hdr *tar.Header, dest string) (int64, error) {
	mode := modeOf(hdr)
	switch hdr.Typeflag {
	case tar.TypeReg:
		if fi, err := os.Lstat(dest); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			os.Remove(dest)
		}
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(f, tr)
		if err == nil {
			err = f.Chmod(mode)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			os.Chtimes(dest, hdr.ModTime, hdr.ModTime)
		}
		return n, err
	case tar.TypeSymlink:
		if fi, err := os.Lstat(dest); err == nil {
			if fi.IsDir() {
				return 0, &fs.PathError{Op: "extract", Path: dest, Err: errors.New("is a directory")}
			}
			if err := os.Remove(dest); err != nil {
				return 0, err
			}
		}
		return 0, os.Symlink(hdr.Linkname, dest)
	}
	return 0, fmt.Errorf("extract: entry \".\" has unsupported type %q", hdr.Typeflag)
}
