package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeTarFile is a TarFile over a complete tar in a file of its own, as
// the provisioner's stream is over the sentry's: the tar starts at 4096.
// Seek(0) starts again with a new file (as a new tar from the sentry).
type fakeTarFile struct {
	t        *testing.T
	data     []byte
	f        *os.File
	off, end int64
	mirror   *os.File
}

func newFakeTarFile(t *testing.T, data []byte) *fakeTarFile {
	ft := &fakeTarFile{t: t, data: data}
	ft.start()
	return ft
}

func (ft *fakeTarFile) start() {
	f, err := os.CreateTemp(ft.t.TempDir(), "fake-tar-")
	if err != nil {
		ft.t.Fatal(err)
	}
	ft.t.Cleanup(func() { f.Close() })
	if _, err := f.WriteAt(ft.data, 4096); err != nil {
		ft.t.Fatal(err)
	}
	ft.f, ft.off, ft.end, ft.mirror = f, 4096, 4096+int64(len(ft.data)), nil
}

func (ft *fakeTarFile) Read(p []byte) (int, error) {
	if ft.off >= ft.end {
		return 0, io.EOF
	}
	n, err := ft.f.ReadAt(p[:min(int64(len(p)), ft.end-ft.off)], ft.off)
	ft.off += int64(n)
	if n > 0 {
		return n, nil
	}
	return 0, err
}

// MirrorTo copies the whole tar at once, then scribbles over its own
// file: the store must use its copy only.
func (ft *fakeTarFile) MirrorTo(f *os.File) (int64, error) {
	if _, err := f.WriteAt(ft.data, 4096); err != nil {
		return 0, err
	}
	ft.mirror = f
	if _, err := ft.f.WriteAt(bytes.Repeat([]byte{0xee}, len(ft.data)), 4096); err != nil {
		return 0, err
	}
	ft.f = f
	return 4096, nil
}

func (ft *fakeTarFile) Skip(n int64) (int64, error) {
	if ft.off+n > ft.end {
		m := ft.end - ft.off
		ft.off = ft.end
		return m, io.ErrUnexpectedEOF
	}
	ft.off += n
	return n, nil
}

func (ft *fakeTarFile) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		ft.t.Fatalf("fakeTarFile: Seek(%d, %d)", offset, whence)
	}
	ft.start()
	return 0, nil
}

// forEachUpperForm runs test with the diff read from memory and from a
// TarFile (whose file becomes the layer image where images are stored).
func forEachUpperForm(t *testing.T, test func(*testing.T, func(*testing.T, []byte) io.Reader)) {
	t.Run("reader", func(t *testing.T) {
		test(t, func(_ *testing.T, b []byte) io.Reader { return bytes.NewReader(b) })
	})
	t.Run("tar file", func(t *testing.T) {
		test(t, func(t *testing.T, b []byte) io.Reader { return newFakeTarFile(t, b) })
	})
}

// A directory snapshot that uses little of a big diff is copied out of it:
// its layer does not keep the rest of the diff.
func TestTarImageWasteCopiedOut(t *testing.T) {
	requireRoot(t)
	mt := time.Unix(1_700_000_000, 0)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
		{Name: "./0ther/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
		{Name: "./0ther/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2 << 20, ModTime: mt},
		{Name: "./new/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
		{Name: "./new/small", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3, ModTime: mt},
	} {
		must(t, tw.WriteHeader(h))
		tw.Write(bytes.Repeat([]byte("b"), int(h.Size)))
	}
	must(t, tw.Close())
	for _, c := range []struct {
		waste      int64
		bigImage   bool
		copiedDesc string
	}{
		{64 << 20, true, "kept around the tar"},
		{1 << 20, false, "copied out"},
	} {
		t.Run(c.copiedDesc, func(t *testing.T) {
			defer func(w int64) { wasteMin = w }(wasteMin)
			wasteMin = c.waste
			s, _ := newTestStore(t, BaseConfig{})
			if !s.images {
				t.Skip("layers are trees here")
			}
			ctx := context.Background()
			base, err := s.AddLayerFromDir(ctx, makeTree(t))
			must(t, err)
			d, err := s.AddDirLayer(ctx, []Digest{base}, newFakeTarFile(t, buf.Bytes()), "/new")
			must(t, err)
			got, err := os.ReadFile(filepath.Join(s.LayerPath(d), "small"))
			if err != nil || string(got) != "bbb" {
				t.Fatalf("small: got %q, %v", got, err)
			}
			fi, err := os.Stat(s.layerImagePath(d))
			must(t, err)
			if big := fi.Size() > 2<<20; big != c.bigImage {
				t.Errorf("image of %d bytes; want it bigger than the unused 2 MiB: %v", fi.Size(), c.bigImage)
			}
		})
	}
}
