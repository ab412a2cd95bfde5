package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// keptXattr reports whether an extended attribute travels in layer tars.
func keptXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "security.capability"
}

// writeCanonicalTar writes the canonical tar of the tree at dir to w (the
// package comment defines it) and returns the number of bytes written.
// It reads dir without following symlinks.
func writeCanonicalTar(ctx context.Context, dir string, w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	links := map[[2]uint64]string{} // (dev, ino) -> first name
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		return writeEntry(tw, p, filepath.ToSlash(rel), links)
	})
	if err != nil {
		return cw.n, fmt.Errorf("tar %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return cw.n, fmt.Errorf("tar %s: %w", dir, err)
	}
	return cw.n, nil
}

func writeEntry(tw *tar.Writer, p, rel string, links map[[2]uint64]string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
	}
	xattrs, err := readXattrs(p)
	if err != nil {
		return err
	}
	for k, v := range xattrs {
		if keptXattr(k) {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	var body *os.File
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := links[key]; ok && st.Nlink > 1 {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			break
		}
		if st.Nlink > 1 {
			links[key] = rel
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
		if body, err = os.Open(p); err != nil {
			return err
		}
		defer body.Close()
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		if hdr.Linkname, err = os.Readlink(p); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		if hdr.Typeflag == tar.TypeChar && st.Rdev == 0 {
			// An overlay whiteout: written as the OCI ".wh.NAME" file.
			dir, base := splitRel(rel)
			hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeReg, 0, 0
			hdr.Name = dir + whiteoutPrefix + base
		}
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default: // sockets do not travel
		return nil
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if body != nil {
		n, err := io.Copy(tw, body)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if n != st.Size {
			return fmt.Errorf("%s: changed size while being read", rel)
		}
	}
	if hdr.Typeflag == tar.TypeDir && xattrs[opaqueXattr] == "y" {
		return tw.WriteHeader(&tar.Header{
			Name: rel + "/" + opaqueMarker, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0),
		})
	}
	return nil
}

// splitRel splits a slash-separated relative path into "dir/" (or "") and base.
func splitRel(rel string) (string, string) {
	i := strings.LastIndexByte(rel, '/')
	return rel[:i+1], rel[i+1:]
}

// readXattrs returns the extended attributes of p (not following symlinks).
func readXattrs(p string) (map[string]string, error) {
	buf := make([]byte, 1024)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = unix.Llistxattr(p, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Llistxattr(p, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) || n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	out := make(map[string]string, len(names))
	for _, name := range names {
		if !keptXattr(name) && name != opaqueXattr {
			continue
		}
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		val := make([]byte, sz)
		if sz, err = unix.Lgetxattr(p, name, val); err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		out[name] = string(val[:sz])
	}
	return out, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
