package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func TestAddDirLayer(t *testing.T) { forEachUpperForm(t, testAddDirLayer) }

func testAddDirLayer(t *testing.T, mk func(*testing.T, []byte) io.Reader) {
	requireRoot(t)
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	// The image: /a/b/file, /top, /a/hard, /abs-link, /a/rel-link.
	base, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	mt := time.Unix(1_700_000_000, 0)
	upper := func(extra ...*tar.Header) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		hdrs := append([]*tar.Header{
			{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700, ModTime: mt},
			{Name: "./a/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
			{Name: "./a/new", Typeflag: tar.TypeReg, Mode: 0o640, Size: 3, ModTime: mt},
			{Name: "./a/hard", Typeflag: tar.TypeChar, ModTime: mt}, // deleted
			{Name: "./elsewhere", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3, ModTime: mt},
			{Name: "./link", Typeflag: tar.TypeSymlink, Linkname: "/a", ModTime: mt},
		}, extra...)
		for _, h := range hdrs {
			must(t, tw.WriteHeader(h))
			tw.Write(bytes.Repeat([]byte("n"), int(h.Size)))
		}
		must(t, tw.Close())
		return buf.Bytes()
	}
	tree := func(t *testing.T, d Digest) map[string]string {
		got := map[string]string{}
		filepath.Walk(s.LayerPath(d), func(p string, fi os.FileInfo, err error) error {
			rel, _ := filepath.Rel(s.LayerPath(d), p)
			if rel != "." {
				got[rel] = fi.Mode().String()
			}
			return nil
		})
		return got
	}
	want := map[string]string{
		"b": "drwxr-xr-x", "b/file": "-rw-r--r--", "new": "-rw-r-----", "rel-link": "Lrwxrwxrwx",
	}
	for _, dir := range []string{"/a", "/link"} { // /link resolves inside the sandbox's tree
		d, err := s.AddDirLayer(ctx, []Digest{base}, mk(t, upper()), dir)
		must(t, err)
		got := tree(t, d)
		if len(got) != len(want) {
			t.Errorf("%s: got %v, want %v", dir, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s: got %q, want %q", dir, k, got[k], v)
			}
		}
	}
	for _, c := range []struct {
		dir   string
		class error
	}{
		{"/missing", errdefs.ErrNotFound},
		{"/top", errdefs.ErrInvalidArgument},
		{"/", errdefs.ErrInvalidArgument},
	} {
		_, err := s.AddDirLayer(ctx, []Digest{base}, mk(t, upper()), c.dir)
		if !errors.Is(err, c.class) {
			t.Errorf("%s: got %v, want %v", c.dir, err, c.class)
		}
	}
	if left, _ := MountPointsUnder(s.tmpDir()); len(left) > 0 {
		t.Errorf("mounts left under tmp: %v", left)
	}
}

// A directory the sandbox made (or replaced whole) is taken from the diff
// without a second copy; overlay markers do not reach the layer.
func TestAddDirLayerOwnDirectory(t *testing.T) { forEachUpperForm(t, testAddDirLayerOwnDirectory) }

func testAddDirLayerOwnDirectory(t *testing.T, mk func(*testing.T, []byte) io.Reader) {
	requireRoot(t)
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	base, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	mt := time.Unix(1_700_000_000, 0)
	opaque := map[string]string{"SCHILY.xattr." + opaqueXattr: "y"}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700, ModTime: mt},
		{Name: "./a/", Typeflag: tar.TypeDir, Mode: 0o700, ModTime: mt, PAXRecords: opaque}, // replaced whole
		{Name: "./a/f", Typeflag: tar.TypeReg, Mode: 0o640, Size: 3, ModTime: mt, Uid: 5},
		{Name: "./a/sub/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, PAXRecords: opaque},
		{Name: "./a/sub/gone", Typeflag: tar.TypeChar, ModTime: mt},
		{Name: "./a/sub/g", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3, ModTime: mt},
	} {
		h.Format = tar.FormatPAX
		must(t, tw.WriteHeader(h))
		tw.Write(bytes.Repeat([]byte("n"), int(h.Size)))
	}
	must(t, tw.Close())
	d, err := s.AddDirLayer(ctx, []Digest{base}, mk(t, buf.Bytes()), "/a")
	must(t, err)

	// The same tree built by hand gives the same digest.
	want := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(want, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(want, "f"), []byte("nnn"), 0o640))
	must(t, os.Chown(filepath.Join(want, "f"), 5, 0))
	must(t, os.WriteFile(filepath.Join(want, "sub/g"), []byte("nnn"), 0o644))
	for _, p := range []string{"f", "sub/g", "sub"} {
		must(t, os.Chtimes(filepath.Join(want, p), mt, mt))
	}
	if wd := treeDigest(t, want); d != wd {
		t.Errorf("got digest %s, want %s (the tree without overlay markers)", d, wd)
	}
	if left, _ := MountPointsUnder(s.tmpDir()); len(left) > 0 {
		t.Errorf("mounts left under tmp: %v", left)
	}
}
