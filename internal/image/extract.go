package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// extractor unpacks a layer tar into a directory it alone writes to. Every
// parent directory is opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
// and every leaf is created relative to that descriptor without following a
// symlink, so no entry can reach outside the directory, whatever it names.
type extractor struct {
	root   string
	rootfd int
	// One cached parent descriptor: tar entries come grouped by directory.
	cacheDir string
	cacheFd  int
	// The group a file made in the cached parent (cacheGid) or in the root
	// (rootGid) gets; -1 when unknown.
	cacheGid, rootGid int
	// What a file made with open(2) gets without help: the process's owner
	// and mode mask (read once).
	euid     int
	umask    uint32
	dirTimes []dirTime
	// buf carries file contents from the tar to the files (one buffer for
	// the whole extraction instead of one per file).
	buf *[]byte
	// whiteouts and opaques record the overlay markers made (clean relative
	// paths), so that a caller turning the tree into a standalone one finds
	// them without a walk.
	whiteouts, opaques []string
	// files records the regular files made, up to fsyncMax (see plan);
	// unsyncable is set when something else was made (a symlink, a device,
	// a fifo: no fsync reaches their inodes) or files overflowed.
	files      []string
	unsyncable bool
	// fileXattrs is set once a non-directory got an extended attribute.
	fileXattrs bool
	// sd, when set, digests the tree while it is made (see streamDigest).
	sd *streamDigest
}

// copyBufSize is the size of the buffer file contents go through.
const copyBufSize = 1 << 20

type dirTime struct {
	rel string
	mt  time.Time
}

// extractTar unpacks the tar read from r into dir (which must exist and be
// empty), turning OCI whiteouts into overlay whiteouts. Entries that would
// escape dir are refused with an ErrInvalidArgument error.
func extractTar(ctx context.Context, r io.Reader, dir string) error {
	x, err := newExtractor(dir)
	if err != nil {
		return err
	}
	defer x.close()
	if err := x.readTar(ctx, r); err != nil {
		return err
	}
	return x.finishDirs()
}

// readTar extracts every entry of the layer tar read from r.
func (x *extractor) readTar(ctx context.Context, r io.Reader) error {
	return readLayerTar(ctx, r, x.add)
}

// readLayerTar hands every entry of the layer tar read from r to add, with
// its contents.
func readLayerTar(ctx context.Context, r io.Reader, add func(*tar.Header, io.Reader) error) error {
	ts := newTarStream(r)
	defer ts.release()
	tr := tar.NewReader(ts)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errdefs.Invalid("layer tar: %v", err)
		}
		if err := add(hdr, &entryBody{tr: tr, s: ts, n: hdr.Size}); err != nil {
			return err
		}
	}
}

// newExtractor returns an extractor writing into dir (which must exist and
// be empty). The caller calls add for every entry, then finishDirs, and
// close in any case.
func newExtractor(dir string) (*extractor, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	x := &extractor{root: dir, rootfd: fd, cacheFd: -1, euid: os.Geteuid(), umask: processUmask()}
	x.rootGid = newFileGid(fd)
	return x, nil
}

// add extracts one entry of an OCI layer tar; r holds its contents.
func (x *extractor) add(hdr *tar.Header, r io.Reader) error {
	if err := x.entry(hdr, r); err != nil {
		return fmt.Errorf("layer tar entry %q: %w", hdr.Name, err)
	}
	return nil
}

func (x *extractor) close() {
	if x.buf != nil {
		copyBlocks.put(x.buf)
		x.buf = nil
	}
	x.dropCache()
	unix.Close(x.rootfd)
}

func (x *extractor) dropCache() {
	if x.cacheFd >= 0 {
		unix.Close(x.cacheFd)
	}
	x.cacheDir, x.cacheFd, x.cacheGid = "", -1, -1
}

// cleanRel turns a tar name into a clean relative path ("" for the root). It
// refuses absolute names and names that climb out with "..".
func cleanRel(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", errdefs.Invalid("absolute path %q in layer tar", name)
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errdefs.Invalid("path %q escapes the layer", name)
	}
	return c, nil
}

// entryName is what the name of a layer tar's entry says.
type entryName struct {
	// rel is the entry's clean relative path, dir and base its parent and
	// last name; for a whiteout, those of what it hides.
	rel, dir, base string
	whiteout       bool
	opaque         bool // an opaque marker: dir hides what lower layers hold
	skip           bool // nothing to make: the root, a name the OCI spec reserves
}

// parseEntryName reads the name of a layer tar's entry (OCI whiteouts
// included); names that escape the layer are refused.
func parseEntryName(name string) (entryName, error) {
	rel, err := cleanRel(name)
	if err != nil || rel == "" {
		return entryName{skip: true}, err
	}
	dir, base := path.Split(rel)
	e := entryName{rel: rel, dir: strings.TrimSuffix(dir, "/"), base: base}
	if !strings.HasPrefix(base, whiteoutPrefix) {
		return e, nil
	}
	switch {
	case base == opaqueMarker:
		e.opaque = true
		return e, nil
	case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
		e.skip = true // reserved by the OCI spec; nothing to do
		return e, nil
	}
	e.base = strings.TrimPrefix(base, whiteoutPrefix)
	if e.base == "." || e.base == ".." {
		return entryName{}, errdefs.Invalid("bad whiteout name")
	}
	e.rel, e.whiteout = path.Join(e.dir, e.base), true
	return e, nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	e, err := parseEntryName(hdr.Name)
	if err != nil || e.skip {
		return err
	}
	if e.opaque {
		if err := x.markOpaque(e.dir); err != nil {
			return err
		}
		x.sd.markedOpaque(e.dir)
		return nil
	}
	rel, dir, base, whiteout := e.rel, e.dir, e.base, e.whiteout
	pfd, err := x.parent(dir)
	if err != nil {
		return err
	}
	mode := uint32(hdr.Mode & 0o7777)
	if !whiteout && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) {
		return x.writeFile(pfd, dir, base, hdr, mode, r)
	}
	isDir := hdr.Typeflag == tar.TypeDir && !whiteout
	if err := x.clear(pfd, rel, base, isDir); err != nil {
		return err
	}
	switch {
	case whiteout:
		if err = unix.Mknodat(pfd, base, unix.S_IFCHR|mode, 0); err == nil {
			x.whiteouts = append(x.whiteouts, rel)
		}
		x.unsyncable = true
		if err == nil {
			if err = x.setMeta(pfd, base, hdr, mode, false); err == nil {
				x.sd.made(rel, hdr, mode, true)
			}
		}
		return err
	case hdr.Typeflag == tar.TypeDir:
		if x.cacheDir == rel {
			x.cacheGid = -1 // its group or setgid bit may change
		}
		x.dirTimes = append(x.dirTimes, dirTime{rel, hdr.ModTime})
		if err = unix.Mkdirat(pfd, base, 0o700); errors.Is(err, unix.EEXIST) {
			err = nil
		}
		if err == nil {
			if err = x.setMeta(pfd, base, hdr, mode, true); err == nil {
				x.sd.made(rel, hdr, mode, false)
			}
		}
		return err
	case hdr.Typeflag == tar.TypeSymlink:
		err = unix.Symlinkat(hdr.Linkname, pfd, base)
		x.unsyncable = true
	case hdr.Typeflag == tar.TypeLink:
		if err := x.link(pfd, base, hdr.Linkname); err != nil {
			return err
		}
		if target, err := cleanRel(hdr.Linkname); err == nil {
			x.sd.linked(rel, target)
		}
		return nil
	case hdr.Typeflag == tar.TypeChar:
		x.unsyncable = true
		err = unix.Mknodat(pfd, base, unix.S_IFCHR|mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
		if err == nil && hdr.Devmajor == 0 && hdr.Devminor == 0 {
			x.whiteouts = append(x.whiteouts, rel) // what overlayfs reads as one
		}
	case hdr.Typeflag == tar.TypeBlock:
		x.unsyncable = true
		err = unix.Mknodat(pfd, base, unix.S_IFBLK|mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	case hdr.Typeflag == tar.TypeFifo:
		x.unsyncable = true
		err = unix.Mknodat(pfd, base, unix.S_IFIFO|mode, 0)
	case hdr.Typeflag == tar.TypeXGlobalHeader:
		return nil
	default:
		return errdefs.Invalid("unsupported tar entry type %q", hdr.Typeflag)
	}
	if err != nil {
		return err
	}
	if err := x.setMeta(pfd, base, hdr, mode, false); err != nil {
		return err
	}
	x.sd.made(rel, hdr, mode, false)
	return nil
}

// parent returns a descriptor for the directory dir (relative to the root),
// creating missing directories. The descriptor belongs to the extractor.
func (x *extractor) parent(dir string) (int, error) {
	if dir == "" {
		return x.rootfd, nil
	}
	if x.cacheFd >= 0 && x.cacheDir == dir {
		return x.cacheFd, nil
	}
	x.dropCache()
	fd, err := x.openDir(dir, true)
	if err != nil {
		return -1, err
	}
	x.cacheDir, x.cacheFd, x.cacheGid = dir, fd, newFileGid(fd)
	return fd, nil
}

// openDir opens dir beneath the root, refusing symlinks on the way. With
// create, missing directories are made (mode 0755, mtime the epoch).
func (x *extractor) openDir(dir string, create bool) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := unix.Openat2(x.rootfd, dir, how)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		return fd, beneathErr(dir, err)
	}
	cur := ""
	for _, comp := range strings.Split(dir, "/") {
		cur = path.Join(cur, comp)
		pfd := x.rootfd
		if d := path.Dir(cur); d != "." {
			if pfd, err = unix.Openat2(x.rootfd, d, how); err != nil {
				return -1, beneathErr(d, err)
			}
		}
		err = unix.Mkdirat(pfd, comp, 0o755)
		if pfd != x.rootfd {
			unix.Close(pfd)
		}
		if err == nil {
			x.dirTimes = append(x.dirTimes, dirTime{cur, time.Unix(0, 0)})
			x.sd.giveUp(fmt.Sprintf("directory %q made without an entry", cur))
		} else if !errors.Is(err, unix.EEXIST) {
			return -1, err
		}
	}
	fd, err = unix.Openat2(x.rootfd, dir, how)
	return fd, beneathErr(dir, err)
}

func beneathErr(dir string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTDIR):
		return errdefs.Invalid("%q is a symlink or not a directory inside the layer", dir)
	}
	return fmt.Errorf("open %q: %w", dir, err)
}

// clear removes whatever sits at base in pfd, except a directory that is
// about to be described again by a directory entry.
func (x *extractor) clear(pfd int, rel, base string, keepDir bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		x.sd.giveUp(fmt.Sprintf("%q replaced", rel))
		return unix.Unlinkat(pfd, base, 0)
	}
	if keepDir {
		return nil // an entry of the same name: the digest's order check sees it
	}
	x.sd.giveUp(fmt.Sprintf("%q replaced", rel))
	x.dropCache() // the cached parent may lie below what goes away
	return os.RemoveAll(filepath.Join(x.root, rel))
}

func (x *extractor) link(pfd int, base, linkname string) error {
	target, err := cleanRel(linkname)
	if err != nil {
		return err
	}
	if target == "" {
		return errdefs.Invalid("hard link to the layer root")
	}
	tdir, tbase := path.Split(target)
	tfd := x.rootfd
	if tdir != "" {
		if tfd, err = x.openDir(strings.TrimSuffix(tdir, "/"), false); err != nil {
			return err
		}
		defer unix.Close(tfd)
	}
	return unix.Linkat(tfd, tbase, pfd, base, 0)
}

func (x *extractor) markOpaque(dir string) error {
	fd := x.rootfd
	if dir != "" {
		var err error
		if fd, err = x.parent(dir); err != nil {
			return err
		}
	}
	if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
		return err
	}
	x.opaques = append(x.opaques, dir)
	return nil
}

// setMeta applies ownership, mode, xattrs (directories) and mtime to base.
// Directory mtimes are applied at the end, once their entries exist.
func (x *extractor) setMeta(pfd int, base string, hdr *tar.Header, mode uint32, isDir bool) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// Mode after chown: chown clears setuid and setgid bits.
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return err
		}
	}
	if isDir {
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return setXattrs(fd, hdr)
	}
	return utimes(pfd, base, hdr.ModTime)
}

func setXattrs(fd int, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !keptXattr(name) {
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

func utimes(dirfd int, base string, mt time.Time) error {
	ts := unix.NsecToTimespec(mt.Truncate(time.Second).UnixNano())
	return unix.UtimesNanoAt(dirfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// finishDirs applies directory mtimes, deepest last-made first.
func (x *extractor) finishDirs() error {
	x.dropCache()
	for i := len(x.dirTimes) - 1; i >= 0; i-- {
		dt := x.dirTimes[i]
		dir, base := path.Split(dt.rel)
		pfd := x.rootfd
		if dir != "" {
			fd, err := x.openDir(strings.TrimSuffix(dir, "/"), false)
			if err != nil {
				continue // replaced by a later entry
			}
			pfd = fd
		}
		err := utimes(pfd, base, dt.mt)
		if pfd != x.rootfd {
			unix.Close(pfd)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("set mtime of %q: %w", dt.rel, err)
		}
	}
	return nil
}
