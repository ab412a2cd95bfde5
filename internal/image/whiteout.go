package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// ConvertUpperTar copies the tar of an overlay upper layer read from r (as
// `runsc tar rootfs-upper` writes it) to w as an OCI layer tar that
// AddLayerFromTar accepts:
//
//   - a character device 0/0 NAME (an overlay whiteout: NAME was deleted)
//     becomes an empty regular file ".wh.NAME";
//   - a directory carrying trusted.overlay.opaque=y (it replaced the lower
//     directory of that name) loses the xattr and is followed by an empty
//     ".wh..wh..opq" entry;
//   - other trusted.* xattrs are dropped; the root entry ("./") is dropped;
//   - names lose their "./" prefix.
//
// keep, when not nil, decides for every entry (by its clean relative path,
// e.g. "etc/passwd") whether it goes in; a dropped directory drops
// everything below it. A hard link whose target was dropped is dropped too.
//
// A file in the upper layer whose own name starts with ".wh." cannot be told
// from a whiteout once in OCI form: it is refused with ErrFailedPrecondition
// naming it. w is not closed.
func ConvertUpperTar(ctx context.Context, r io.Reader, w io.Writer, keep func(rel string) bool) error {
	tw := tar.NewWriter(w)
	err := convertUpper(ctx, r, keep, func(hdr *tar.Header, body io.Reader) error {
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("layer tar %s: %w", hdr.Name, err)
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				return fmt.Errorf("layer tar %s: %w", hdr.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// convertUpper reads the overlay upper tar from r and hands each entry, in
// the OCI form ConvertUpperTar writes, to emit, with its contents (regular
// files) or nil. emit must be done with body when it returns.
func convertUpper(ctx context.Context, r io.Reader, keep func(rel string) bool, emit func(hdr *tar.Header, body io.Reader) error) error {
	ts := newTarStream(r)
	defer ts.release()
	tr := tar.NewReader(ts)
	var droppedDirs []string // prefixes "dir/" of dropped directories
	dropped := map[string]bool{}
	under := func(rel string) bool {
		for _, d := range droppedDirs {
			if strings.HasPrefix(rel, d) {
				return true
			}
		}
		return false
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("upper tar: %w", err)
		}
		rel, err := cleanRel(hdr.Name)
		if err != nil {
			return fmt.Errorf("upper tar: %w", err)
		}
		if rel == "" || hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if under(rel) || (keep != nil && !keep(rel)) {
			dropped[rel] = true
			if hdr.Typeflag == tar.TypeDir {
				droppedDirs = append(droppedDirs, rel+"/")
			}
			continue
		}
		dir, base := splitRel(rel)
		if strings.HasPrefix(base, whiteoutPrefix) {
			return errdefs.FailedPrecondition("%q: names starting with %q are reserved for whiteouts in layers", "/"+rel, whiteoutPrefix)
		}
		out := &tar.Header{
			Name: rel, Typeflag: hdr.Typeflag, Mode: hdr.Mode, Uid: hdr.Uid, Gid: hdr.Gid,
			ModTime: hdr.ModTime, Linkname: hdr.Linkname, Size: hdr.Size,
			Devmajor: hdr.Devmajor, Devminor: hdr.Devminor, Format: tar.FormatPAX,
		}
		opaque := false
		for k, v := range hdr.PAXRecords {
			name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
			switch {
			case !ok:
			case name == opaqueXattr:
				opaque = v == "y"
			case keptXattr(name):
				if out.PAXRecords == nil {
					out.PAXRecords = map[string]string{}
				}
				out.PAXRecords[k] = v
			}
		}
		switch hdr.Typeflag {
		case tar.TypeChar:
			if hdr.Devmajor == 0 && hdr.Devminor == 0 {
				out = &tar.Header{Name: dir + whiteoutPrefix + base, Typeflag: tar.TypeReg, ModTime: hdr.ModTime, Format: tar.FormatPAX}
			}
		case tar.TypeDir:
			out.Name += "/"
		case tar.TypeLink:
			target, err := cleanRel(hdr.Linkname)
			if err != nil {
				return fmt.Errorf("upper tar: %w", err)
			}
			if dropped[target] || under(target) {
				dropped[rel] = true
				continue
			}
			out.Linkname = target
		}
		var body io.Reader
		if (out.Typeflag == tar.TypeReg || out.Typeflag == tar.TypeRegA) && out.Size > 0 {
			body = &entryBody{tr: tr, s: ts, n: out.Size}
		}
		if err := emit(out, body); err != nil {
			return err
		}
		if opaque && hdr.Typeflag == tar.TypeDir {
			if err := emit(&tar.Header{
				Name: rel + "/" + opaqueMarker, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX,
			}, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// KeepExcept returns a keep function for ConvertUpperTar that drops the
// given absolute paths (and what is below them), e.g. the sandbox's reserved
// mount points.
func KeepExcept(paths ...string) func(rel string) bool {
	drop := make([]string, 0, len(paths))
	for _, p := range paths {
		drop = append(drop, strings.TrimPrefix(path.Clean("/"+p), "/"))
	}
	return func(rel string) bool {
		for _, d := range drop {
			if rel == d || strings.HasPrefix(rel, d+"/") {
				return false
			}
		}
		return true
	}
}

// AddLayerFromUpperTar stores the overlay upper tar read from r (see
// ConvertUpperTar, whose keep it takes) as a layer and returns its digest.
// Identical layers are stored once.
//
// It reads r once: entries are converted and extracted as they come, with no
// intermediate tar.
func (s *Store) AddLayerFromUpperTar(ctx context.Context, r io.Reader, keep func(rel string) bool) (Digest, error) {
	if tf, ok := r.(TarFile); ok && s.images {
		return s.addLayerFromTarFile(ctx, tf, keep)
	}
	return s.addLayer(ctx, "layer from upper tar", func(x layerSink) error {
		return convertUpper(ctx, r, keep, x.add)
	})
}
