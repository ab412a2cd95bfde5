package image

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// legacyCanonicalTar is writeCanonicalTar as it was before it prepared
// entries ahead of the writer (one filepath.WalkDir, one entry at a time):
// the reference whose bytes the faster writer must match exactly, or every
// stored digest would change.
func legacyCanonicalTar(ctx context.Context, dir string, w io.Writer) (int64, error) {
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
		return legacyEntry(tw, p, filepath.ToSlash(rel), links)
	})
	if err != nil {
		return cw.n, fmt.Errorf("tar %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return cw.n, fmt.Errorf("tar %s: %w", dir, err)
	}
	return cw.n, nil
}

func legacyEntry(tw *tar.Writer, p, rel string, links map[[2]uint64]string) error {
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
