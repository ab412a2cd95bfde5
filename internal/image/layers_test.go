package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// makeTree writes a small tree with a fixed mtime everywhere.
func makeTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "a/b"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "a/b/file"), []byte("hello"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "top"), []byte("top"), 0o600))
	must(t, os.Link(filepath.Join(dir, "top"), filepath.Join(dir, "a/hard")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "abs-link")))
	must(t, os.Symlink("../top", filepath.Join(dir, "a/rel-link")))
	must(t, zeroMtimes(dir))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func treeDigest(t *testing.T, dir string) Digest {
	t.Helper()
	d, _, err := walkDigest(context.Background(), dir, canonOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDigestDeterministic(t *testing.T) {
	a, b := makeTree(t), makeTree(t)
	if da, db := treeDigest(t, a), treeDigest(t, b); da != db {
		t.Fatalf("same tree twice: got %s and %s, want equal", da, db)
	}
	base := treeDigest(t, a)
	changes := []struct {
		name   string
		change func(dir string) error
	}{
		{"mode", func(dir string) error { return os.Chmod(filepath.Join(dir, "a/b/file"), 0o755) }},
		{"content", func(dir string) error { return os.WriteFile(filepath.Join(dir, "a/b/file"), []byte("hellO"), 0o644) }},
		{"mtime", func(dir string) error {
			return os.Chtimes(filepath.Join(dir, "top"), time.Unix(5, 0), time.Unix(5, 0))
		}},
		{"symlink target", func(dir string) error {
			p := filepath.Join(dir, "abs-link")
			os.Remove(p)
			return os.Symlink("/etc/group", p)
		}},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			dir := makeTree(t)
			must(t, c.change(dir))
			if got := treeDigest(t, dir); got == base {
				t.Fatalf("after a %s change: got the same digest %s, want a different one", c.name, got)
			}
		})
	}
}

func TestAddLayerFromDirRoundTrip(t *testing.T) {
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	dir := makeTree(t)
	d, err := s.AddLayerFromDir(ctx, dir)
	must(t, err)
	if want := treeDigest(t, dir); d != want {
		t.Fatalf("got digest %s, want the source tree's %s", d, want)
	}
	// Reading the stored layer back gives its digest.
	if got := treeDigest(t, s.LayerPath(d)); got != d {
		t.Fatalf("stored layer reads back as %s, want %s", got, d)
	}
	// The hard link survived as a link.
	a, _ := os.Stat(filepath.Join(s.LayerPath(d), "top"))
	b, _ := os.Stat(filepath.Join(s.LayerPath(d), "a/hard"))
	if !os.SameFile(a, b) {
		t.Errorf("a/hard is not a hard link of top in the stored layer")
	}
	// Dedupe: the same tree again adds no row and no directory.
	d2, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	if d2 != d {
		t.Fatalf("same tree again: got %s, want %s", d2, d)
	}
	s.trash.wait() // the duplicate's extraction goes in the background
	var n int
	must(t, s.db.QueryRow(`SELECT COUNT(*) FROM layers`).Scan(&n))
	tmp, _ := os.ReadDir(s.tmpDir())
	if stored := storedLayers(t, s); n != 1 || stored != 1 || len(tmp) != 0 {
		t.Fatalf("got %d rows, %d layers stored, %d tmp entries; want 1, 1, 0", n, stored, len(tmp))
	}
}

type entry struct {
	hdr  tar.Header
	body string
}

func buildTar(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		must(t, tw.WriteHeader(&h))
		if e.body != "" {
			tw.Write([]byte(e.body))
		}
	}
	must(t, tw.Close())
	return &buf
}

func reg(name, body string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}

func TestAddLayerFromTarRefusesEscapes(t *testing.T) {
	outside := t.TempDir()
	cases := []struct {
		name    string
		entries []entry
	}{
		{"dotdot", []entry{reg("../x", "evil")}},
		{"dotdot inside", []entry{reg("a/../../x", "evil")}},
		{"absolute", []entry{reg("/tmp/x", "evil")}},
		{"through symlink", []entry{
			{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside}},
			reg("link/x", "evil"),
		}},
		{"through relative symlink", []entry{
			{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../" + outside}},
			reg("link/x", "evil"),
		}},
		{"hard link out", []entry{{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}}},
		{"hard link through symlink", []entry{
			{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}},
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "link/passwd"}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t, BaseConfig{})
			_, err := s.AddLayerFromTar(context.Background(), buildTar(t, tc.entries...))
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("got error %v, want ErrInvalidArgument", err)
			}
			t.Logf("refused: %v", err)
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("a file was written outside the layer: %v", ents)
			}
			if _, err := os.Stat("/tmp/x"); err == nil {
				t.Fatalf("/tmp/x exists")
			}
			ents, _ := os.ReadDir(s.layersDir())
			tmp, _ := os.ReadDir(s.tmpDir())
			if len(ents)+len(tmp) != 0 {
				t.Fatalf("refused layer left %d layer dirs and %d tmp entries", len(ents), len(tmp))
			}
		})
	}
}

func TestAddLayerFromTarWhiteouts(t *testing.T) {
	requireRoot(t) // character devices and trusted.* xattrs
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	tarball := buildTar(t,
		entry{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		reg("etc/.wh.gone", ""),
		entry{hdr: tar.Header{Name: "opq/", Typeflag: tar.TypeDir, Mode: 0o755}},
		reg("opq/.wh..wh..opq", ""),
		reg("opq/kept", "x"),
	)
	d, err := s.AddLayerFromTar(ctx, tarball)
	must(t, err)
	fi, err := os.Lstat(filepath.Join(s.LayerPath(d), "etc/gone"))
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("etc/gone: got %v, %v; want a character device (overlay whiteout)", fi, err)
	}
	xs, err := readXattrs(filepath.Join(s.LayerPath(d), "opq"))
	must(t, err)
	if xs[opaqueXattr] != "y" {
		t.Fatalf("opq: got xattrs %v, want %s=y", xs, opaqueXattr)
	}
	// Written back, whiteouts are OCI entries again.
	var buf bytes.Buffer
	_, err = s.WriteLayerTar(ctx, d, &buf)
	must(t, err)
	names := map[string]bool{}
	tr := tar.NewReader(&buf)
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		names[h.Name] = true
	}
	for _, want := range []string{"etc/.wh.gone", "opq/.wh..wh..opq", "opq/kept"} {
		if !names[want] {
			t.Errorf("layer tar lacks %q (has %v)", want, names)
		}
	}
}

func TestStartupRemovesLeftovers(t *testing.T) {
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	d, err := s.AddLayerFromDir(ctx, makeTree(t))
	must(t, err)
	_, err = s.CreateImage(ctx, []Digest{d}, ImageConfig{}, "test")
	must(t, err)
	stray := filepath.Join(s.layersDir(), "0000000000000000000000000000000000000000000000000000000000000000")
	must(t, os.MkdirAll(filepath.Join(stray, "x"), 0o755))
	must(t, os.MkdirAll(filepath.Join(s.tmpDir(), "layer-123", "half"), 0o755))
	must(t, s.Startup(ctx))
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Errorf("unrecorded layer dir: got %v, want it removed", err)
	}
	if ents, _ := os.ReadDir(s.tmpDir()); len(ents) != 0 {
		t.Errorf("tmp: got %d entries, want 0", len(ents))
	}
	if _, err := os.Stat(s.LayerPath(d)); err != nil {
		t.Errorf("recorded layer: %v", err)
	}
	// A recorded layer whose directory is gone takes its images with it.
	removeLayerOnDisk(t, s, d)
	must(t, s.Startup(ctx))
	if ims, _ := s.List(ctx); len(ims) != 0 {
		t.Errorf("images on a lost layer: got %d, want 0", len(ims))
	}
}
