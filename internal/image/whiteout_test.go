package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// upperTar builds a tar shaped like `runsc tar rootfs-upper` output.
func upperTar(t *testing.T, extra ...*tar.Header) []byte {
	t.Helper()
	mt := time.Unix(1_700_000_000, 0)
	opaque := map[string]string{"SCHILY.xattr." + opaqueXattr: "y"}
	hdrs := []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700, ModTime: mt},
		{Name: "./sl", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd", Mode: 0o777, ModTime: mt},
		{Name: "./w/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, PAXRecords: opaque},
		{Name: "./w/a", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 2, ModTime: mt, Uid: 7, Gid: 8},
		{Name: "./w/b", Typeflag: tar.TypeLink, Linkname: "./w/a", ModTime: mt},
		{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
		{Name: "./bin/ls", Typeflag: tar.TypeChar, ModTime: mt},
		{Name: "./.sandboxd/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
		{Name: "./.sandboxd/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2, ModTime: mt},
		{Name: "./.sandboxdx", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2, ModTime: mt},
	}
	hdrs = append(hdrs, extra...)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(bytes.Repeat([]byte("z"), int(h.Size)))
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

func TestConvertUpperTar(t *testing.T) {
	var out bytes.Buffer
	err := ConvertUpperTar(context.Background(), bytes.NewReader(upperTar(t)), &out, KeepExcept("/.sandboxd"))
	must(t, err)
	var got []string
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, err)
		line := h.Name + " " + string(h.Typeflag)
		if h.Linkname != "" {
			line += " -> " + h.Linkname
		}
		for k := range h.PAXRecords {
			if strings.Contains(k, "xattr") {
				line += " xattr " + k
			}
		}
		got = append(got, line)
	}
	want := []string{
		"sl 2 -> /etc/passwd",
		"w/ 5", "w/.wh..wh..opq 0", "w/a 0", "w/b 1 -> w/a",
		"bin/ 5", "bin/.wh.ls 0",
		".sandboxdx 0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("converted entries:\ngot\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	t.Run("reserved name refused", func(t *testing.T) {
		in := upperTar(t, &tar.Header{Name: "./w/.wh.evil", Typeflag: tar.TypeReg, Mode: 0o644})
		err := ConvertUpperTar(context.Background(), bytes.NewReader(in), io.Discard, nil)
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("got %v, want ErrFailedPrecondition", err)
		}
	})
	t.Run("hard link into a dropped dir is dropped", func(t *testing.T) {
		in := upperTar(t, &tar.Header{Name: "./hl", Typeflag: tar.TypeLink, Linkname: "./.sandboxd/x"})
		var out bytes.Buffer
		must(t, ConvertUpperTar(context.Background(), bytes.NewReader(in), &out, KeepExcept("/.sandboxd")))
		if strings.Contains(out.String(), "hl") {
			t.Errorf("the link to a dropped file was kept")
		}
	})
}

func TestAddLayerFromUpperTar(t *testing.T) { forEachUpperForm(t, testAddLayerFromUpperTar) }

func testAddLayerFromUpperTar(t *testing.T, mk func(*testing.T, []byte) io.Reader) {
	requireRoot(t)
	s, _ := newTestStore(t, BaseConfig{})
	ctx := context.Background()
	d, err := s.AddLayerFromUpperTar(ctx, mk(t, upperTar(t)), KeepExcept("/.sandboxd"))
	must(t, err)
	dir := s.LayerPath(d)
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dir, "bin/ls"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("bin/ls: got mode %o rdev %d, want an overlay whiteout (char 0/0)", st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(dir, "w"), opaqueXattr, buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("w: got opaque xattr %q, %v; want y", buf[:n], err)
	}
	var a, b unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dir, "w/a"), &a))
	must(t, unix.Lstat(filepath.Join(dir, "w/b"), &b))
	if a.Ino != b.Ino || a.Mode&0o7777 != 0o4755 || a.Uid != 7 || a.Gid != 8 {
		t.Errorf("w/a, w/b: got inodes %d/%d mode %o owner %d:%d, want one inode, 4755, 7:8", a.Ino, b.Ino, a.Mode&0o7777, a.Uid, a.Gid)
	}
	if _, err := os.Lstat(filepath.Join(dir, ".sandboxd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".sandboxd: got %v, want it left out", err)
	}
	again, err := s.AddLayerFromUpperTar(ctx, mk(t, upperTar(t)), KeepExcept("/.sandboxd"))
	if err != nil || again != d {
		t.Errorf("same diff again: got %s, %v; want %s (stored once)", again, err, d)
	}
}

// Converting and extracting in one pass stores what converting to an OCI
// tar, then adding that tar stores.
func TestAddLayerFromUpperTarOnePass(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	in := upperTar(t, &tar.Header{Name: "./big", Typeflag: tar.TypeReg, Mode: 0o600, Size: 3 << 20, ModTime: time.Unix(1_700_000_001, 0)})
	s1, _ := newTestStore(t, BaseConfig{})
	one, err := s1.AddLayerFromUpperTar(ctx, bytes.NewReader(in), KeepExcept("/.sandboxd"))
	must(t, err)
	// Taken over as the layer image's data area, the same.
	s3, _ := newTestStore(t, BaseConfig{})
	three, err := s3.AddLayerFromUpperTar(ctx, newFakeTarFile(t, in), KeepExcept("/.sandboxd"))
	must(t, err)
	if three != one {
		t.Fatalf("tar taken over: got %s, want %s", three, one)
	}
	var oci bytes.Buffer
	must(t, ConvertUpperTar(ctx, bytes.NewReader(in), &oci, KeepExcept("/.sandboxd")))
	s2, _ := newTestStore(t, BaseConfig{})
	two, err := s2.AddLayerFromTar(ctx, &oci)
	must(t, err)
	if one != two {
		t.Fatalf("one pass: got %s, want %s (convert, then add)", one, two)
	}
	if got := treeDigest(t, s1.LayerPath(one)); got != one {
		t.Fatalf("stored layer reads back as %s, want %s", got, one)
	}
}
