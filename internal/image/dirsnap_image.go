package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/erofs"
)

// addDirLayerImage is AddDirLayer where new layers are images: the part of
// upper on the way to rel and below it is built into an image in memory.
// When that tree is all there is at rel (see coveredDir), the image, rooted
// at rel and without overlay markers, is the layer: no file is made on disk
// but the image. Otherwise the image of the diff is mounted over lowers and
// rel's tree is copied out of the merged view (AddLayerFromDir). tmp is the
// caller's scratch directory (trashed after).
func (s *Store) addDirLayerImage(ctx context.Context, tmp string, lowers []Digest, upper io.Reader, rel string, st *stages) (Digest, error) {
	// rel's tree may turn out to be the layer as built: digest it on the
	// way.
	b, err := s.dirImageBuilder(upper, rel)
	if err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	defer b.discard()
	defer b.sd.stop()
	err = convertUpper(ctx, upper, onPathTo(rel), b.add)
	b.close()
	st.mark("extract")
	if err != nil {
		return "", fmt.Errorf("directory layer: %w", err)
	}
	if n, covers := b.coveredDir(rel); covers && (n.opaque || s.lowersLack(lowers, rel)) {
		b.adopt(n.node, rel)
		if err := b.w.SetRoot(n.node); err != nil {
			return "", fmt.Errorf("directory layer: %w", err)
		}
		st.mark("adopt")
		d, err := s.storeImage(ctx, b, st)
		if err != nil {
			return "", fmt.Errorf("directory layer: %w", err)
		}
		st.log(ctx, s.log, "directory layer", "layer", d, "route", "adopt", "tar_image", b.tarData)
		return d, nil
	}
	b.sd.stop() // the layer is copied out of the merged view instead
	src, done, err := s.mergeImage(tmp, "1", b, lowers, rel)
	if err != nil {
		return "", err
	}
	if src != filepath.Join(tmp, "1", "merged", rel) {
		// rel is reached through a symlink, which may lead anywhere:
		// everything of upper is needed.
		done()
		if err := rewindUpper(upper, rel); err != nil {
			return "", err
		}
		b2, err := s.dirImageBuilder(upper, "")
		if err != nil {
			return "", fmt.Errorf("directory layer: %w", err)
		}
		defer b2.discard()
		b2.sd.stop()
		err = convertUpper(ctx, upper, nil, b2.add)
		b2.close()
		if err != nil {
			return "", fmt.Errorf("directory layer: %w", err)
		}
		if src, done, err = s.mergeImage(tmp, "2", b2, lowers, rel); err != nil {
			return "", err
		}
	}
	defer done()
	return s.AddLayerFromDir(ctx, src)
}

// dirImageBuilder returns a builder for the diff upper: around its tar when
// the store can take its file over (see TarFile), else a new image.
func (s *Store) dirImageBuilder(upper io.Reader, under string) (*imageBuilder, error) {
	if tf, ok := upper.(TarFile); ok {
		return s.newTarImage(tf, under)
	}
	b, err := s.newLayerImage()
	if err != nil {
		return nil, err
	}
	b.digest(under)
	return b, nil
}

// mergeImage finishes the diff image b, mounts it at tmp/name/diff and that
// over lowers at tmp/name/merged, and resolves rel there (see mountMerged).
// done unmounts both.
func (s *Store) mergeImage(tmp, name string, b *imageBuilder, lowers []Digest, rel string) (string, func(), error) {
	diff, merged := filepath.Join(tmp, name, "diff"), filepath.Join(tmp, name, "merged")
	for _, d := range []string{diff, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", nil, fmt.Errorf("directory layer: %w", err)
		}
	}
	img, err := s.imageFile(b)
	if err != nil {
		return "", nil, fmt.Errorf("directory layer: %w", err)
	}
	if err := erofs.Mount(img, diff); err != nil {
		return "", nil, fmt.Errorf("directory layer: %w", err)
	}
	src, done, err := s.mountMerged(diff, merged, lowers, rel)
	if err != nil {
		UnmountRootfs(diff)
		return "", nil, err
	}
	return src, func() {
		done()
		UnmountRootfs(diff)
	}, nil
}

// coveredNode is the directory at the end of coveredDir's way.
type coveredNode struct {
	node *erofs.Node
	// opaque: it or a directory on the way to it is opaque: nothing of the
	// lower layers shows through.
	opaque bool
}

// coveredDir finds rel in the tree built: ok when every name on the way
// is a directory of the tree (no symlink, nothing missing).
func (b *imageBuilder) coveredDir(rel string) (coveredNode, bool) {
	n := b.w.Root()
	var c coveredNode
	for _, comp := range strings.Split(rel, "/") {
		if n = n.Lookup(comp); n == nil || !n.IsDir() {
			return coveredNode{}, false
		}
		if n.Meta().Xattrs[opaqueXattr] == "y" {
			c.opaque = true
		}
	}
	c.node = n
	return c, true
}

// adopt makes the tree at n (the directory rel) a layer of its own: the
// overlay markers within it go (whiteouts, opaque xattrs), and n gets the
// status of a layer's root, as adoptDiffDir does on disk.
func (b *imageBuilder) adopt(n *erofs.Node, rel string) {
	for _, w := range b.whiteouts {
		if !within(w, rel) || w == rel {
			continue
		}
		dir, base := path.Split(w)
		if p, err := b.lookupDir(strings.TrimSuffix(dir, "/")); err == nil {
			if c := p.Lookup(base); c != nil && isWhiteoutMeta(c.Meta()) {
				p.Remove(base)
			}
		}
	}
	for _, o := range b.opaques {
		if !within(o, rel) {
			continue
		}
		if d, err := b.lookupDir(o); err == nil {
			m := d.Meta()
			if _, ok := m.Xattrs[opaqueXattr]; ok {
				x := make(map[string]string, len(m.Xattrs))
				for k, v := range m.Xattrs {
					if k != opaqueXattr {
						x[k] = v
					}
				}
				m.Xattrs = x
				d.SetMeta(m)
			}
		}
	}
	m := n.Meta()
	m.Mode, m.Uid, m.Gid = unix.S_IFDIR|0o755, 0, 0
	n.SetMeta(m)
}

// isWhiteoutMeta reports whether m is that of an overlay whiteout (a
// character device; Mknod made it 0/0 when it came from a whiteout entry).
func isWhiteoutMeta(m erofs.Meta) bool {
	return m.Mode&unix.S_IFMT == unix.S_IFCHR
}
