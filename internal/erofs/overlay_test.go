package erofs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOverlay uses two images as overlayfs lower layers: a character device
// 0/0 in the upper image is a whiteout hiding the lower image's entry, and
// "trusted.overlay.opaque"="y" on a directory hides the lower directory's
// contents.
func TestOverlay(t *testing.T) { forBlockSizes(t, testOverlay) }

func testOverlay(t *testing.T, bits uint8) {
	requireRoot(t)

	lower := newTestImageBits(t, bits)
	lr := lower.Root()
	ld := lower.mkdir(lr, "d", Meta{Mode: 0o755})
	lower.file(ld, "a", Meta{Mode: 0o644}, []byte("lower a"))
	lower.file(ld, "b", Meta{Mode: 0o644}, []byte("lower b"))
	lower.file(lr, "w", Meta{Mode: 0o644}, []byte("lower w"))
	wd := lower.mkdir(lr, "wdir", Meta{Mode: 0o755})
	lower.file(wd, "x", Meta{Mode: 0o644}, []byte("x"))
	lower.file(lr, "keep", Meta{Mode: 0o644}, []byte("lower keep"))
	tr := lower.mkdir(lr, "t", Meta{Mode: 0o755})
	lower.file(tr, "old", Meta{Mode: 0o644}, []byte("old"))
	lowerMnt := lower.mount()

	upper := newTestImageBits(t, bits)
	ur := upper.Root()
	if _, err := ur.Mknod("w", Meta{Mode: unix.S_IFCHR}, unix.Mkdev(0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := ur.Mknod("wdir", Meta{Mode: unix.S_IFCHR}, 0); err != nil {
		t.Fatal(err)
	}
	ud := upper.mkdir(ur, "d", Meta{Mode: 0o755, Xattrs: map[string]string{"trusted.overlay.opaque": "y"}})
	upper.file(ud, "c", Meta{Mode: 0o644}, []byte("upper c"))
	ut := upper.mkdir(ur, "t", Meta{Mode: 0o755}) // transparent: merged with the lower t
	upper.file(ut, "new", Meta{Mode: 0o644}, []byte("new"))
	upper.file(ur, "new", Meta{Mode: 0o644}, []byte("upper new"))
	upperMnt := upper.mount()

	scratch := t.TempDir()
	up, work, merged := filepath.Join(scratch, "upper"), filepath.Join(scratch, "work"), filepath.Join(scratch, "merged")
	for _, d := range []string{up, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + upperMnt + ":" + lowerMnt + ",upperdir=" + up + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v (dmesg: %s)", err, dmesgTail())
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount overlay: %v", err)
		}
	})

	names := func(dir string) []string { return dirNames(t, filepath.Join(merged, dir)) }
	if got, want := names(""), []string{"d", "keep", "new", "t"}; !slices.Equal(got, want) {
		t.Errorf("merged root: %q, want %q", got, want)
	}
	for _, p := range []string{"w", "wdir", "wdir/x", "d/a", "d/b"} {
		if _, err := os.Lstat(filepath.Join(merged, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want hidden", p, err)
		}
	}
	if got, want := names("d"), []string{"c"}; !slices.Equal(got, want) {
		t.Errorf("opaque d: %q, want %q", got, want)
	}
	if got, want := names("t"), []string{"new", "old"}; !slices.Equal(got, want) {
		t.Errorf("merged t: %q, want %q", got, want)
	}
	for p, want := range map[string]string{"keep": "lower keep", "new": "upper new", "d/c": "upper c", "t/old": "old", "t/new": "new"} {
		if got, err := os.ReadFile(filepath.Join(merged, p)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", p, got, err, want)
		}
	}
	// The merged tree is writable through the upper directory.
	if err := os.WriteFile(filepath.Join(merged, "w"), []byte("again"), 0o644); err != nil {
		t.Errorf("write over a whiteout: %v", err)
	}
}
