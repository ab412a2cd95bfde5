package image

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

func TestBusyboxBase(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	cache := t.TempDir()
	s, _ := newTestStore(t, BaseConfig{CacheDir: cache})

	start := time.Now()
	im, err := s.EnsureBase(ctx, "busybox", tWriter{t})
	must(t, err)
	t.Logf("busybox build: %v, image %s, %d bytes", time.Since(start), im.ID, im.Size)
	if len(im.Names) != 1 || im.Names[0] != "busybox" || im.Config.Workdir != "/" {
		t.Fatalf("got %+v, want the busybox image with workdir /", im)
	}
	again, err := s.EnsureBase(ctx, "busybox", nil)
	if err != nil || again.ID != im.ID {
		t.Fatalf("second EnsureBase: got %s, %v; want %s", again.ID, err, im.ID)
	}

	t.Run("import from cache", func(t *testing.T) {
		s2, _ := newTestStore(t, BaseConfig{CacheDir: cache})
		start := time.Now()
		im2, err := s2.EnsureBase(ctx, "busybox", nil)
		must(t, err)
		t.Logf("busybox import from cache: %v", time.Since(start))
		if im2.ID != im.ID {
			t.Fatalf("got %s, want %s", im2.ID, im.ID)
		}
	})
	t.Run("reproducible without cache", func(t *testing.T) {
		s3, _ := newTestStore(t, BaseConfig{})
		im3, err := s3.EnsureBase(ctx, "busybox", nil)
		must(t, err)
		if im3.ID != im.ID {
			t.Fatalf("a second build: got %s, want %s", im3.ID, im.ID)
		}
	})
	t.Run("bad cache entry is rebuilt", func(t *testing.T) {
		entries, _ := filepath.Glob(filepath.Join(cache, "base", "busybox-*", "layer.tar"))
		if len(entries) != 1 {
			t.Fatalf("cache holds %d busybox entries, want 1", len(entries))
		}
		f, err := os.OpenFile(entries[0], os.O_WRONLY, 0)
		must(t, err)
		f.WriteAt([]byte("corrupt!"), 4000) // inside bin/busybox's body
		f.Close()
		s4, _ := newTestStore(t, BaseConfig{CacheDir: cache})
		im4, err := s4.EnsureBase(ctx, "busybox", nil)
		must(t, err)
		if im4.ID != im.ID {
			t.Fatalf("after rebuilding: got %s, want %s", im4.ID, im.ID)
		}
		if n := storedLayers(t, s4); n != 1 {
			t.Errorf("after a bad import: %d layers stored, want 1", n)
		}
	})
	t.Run("unknown base", func(t *testing.T) {
		if _, err := s.EnsureBase(ctx, "alpine", nil); err == nil {
			t.Fatal("got no error for an unknown base image")
		}
	})

	t.Run("mount", func(t *testing.T) {
		dir := t.TempDir()
		upper, work, target := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
		t.Cleanup(func() { UnmountRootfs(target) })
		must(t, s.MountRootfs(ctx, im.Layers, upper, work, target))
		if !isMounted(t, target) {
			t.Fatalf("%s is not in /proc/self/mountinfo after MountRootfs", target)
		}
		for _, p := range []string{"bin/sh", "bin/busybox", "etc/passwd"} {
			if _, err := os.Lstat(filepath.Join(target, p)); err != nil {
				t.Errorf("rootfs: %v", err)
			}
		}
		if fi, err := os.Stat(filepath.Join(target, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
			t.Errorf("tmp: got %v, %v; want mode 1777", fi, err)
		}
		layer := s.LayerPath(im.Layers[0])
		must(t, os.WriteFile(filepath.Join(target, "tmp/new"), []byte("x"), 0o644))
		must(t, os.WriteFile(filepath.Join(target, "etc/passwd"), []byte("changed"), 0o644))
		if _, err := os.Stat(filepath.Join(upper, "tmp/new")); err != nil {
			t.Errorf("write did not reach upper: %v", err)
		}
		if _, err := os.Stat(filepath.Join(layer, "tmp/new")); !os.IsNotExist(err) {
			t.Errorf("write reached the layer: %v", err)
		}
		if b, _ := os.ReadFile(filepath.Join(layer, "etc/passwd")); string(b) == "changed" {
			t.Errorf("layer's etc/passwd was changed")
		}
		if got := treeDigest(t, layer); got != im.Layers[0] {
			t.Errorf("layer after use: digest %s, want %s", got, im.Layers[0])
		}
		must(t, UnmountRootfs(target))
		if isMounted(t, target) {
			t.Errorf("%s still mounted after UnmountRootfs", target)
		}
		if err := UnmountRootfs(target); err != nil {
			t.Errorf("second UnmountRootfs: %v", err)
		}
		if err := UnmountRootfs(filepath.Join(dir, "missing")); err != nil {
			t.Errorf("UnmountRootfs of a missing path: %v", err)
		}
	})

	t.Run("mount p50", func(t *testing.T) {
		dir := t.TempDir()
		var took []time.Duration
		for i := 0; i < 21; i++ {
			d := filepath.Join(dir, fmt.Sprint(i))
			target := filepath.Join(d, "rootfs")
			t.Cleanup(func() { UnmountRootfs(target) })
			start := time.Now()
			must(t, s.MountRootfs(ctx, im.Layers, filepath.Join(d, "upper"), filepath.Join(d, "work"), target))
			took = append(took, time.Since(start))
			must(t, UnmountRootfs(target))
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		t.Logf("MountRootfs p50 %v (min %v, max %v)", took[len(took)/2], took[0], took[len(took)-1])
	})
}

func TestMountStackedWhiteouts(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, _ := newTestStore(t, BaseConfig{})
	low, err := s.AddLayerFromTar(ctx, buildTar(t,
		reg("etc/gone", "x"), reg("etc/kept", "x"), reg("opq/old", "x")))
	must(t, err)
	high, err := s.AddLayerFromTar(ctx, buildTar(t,
		reg("etc/.wh.gone", ""),
		entry{hdr: tar.Header{Name: "opq/", Typeflag: tar.TypeDir, Mode: 0o755}},
		reg("opq/.wh..wh..opq", ""), reg("opq/new", "y")))
	must(t, err)
	target := mountForTest(t, s, []Digest{low, high})
	for p, want := range map[string]bool{"etc/gone": false, "etc/kept": true, "opq/old": false, "opq/new": true} {
		_, err := os.Stat(filepath.Join(target, p))
		if got := err == nil; got != want {
			t.Errorf("%s: exists %v, want %v", p, got, want)
		}
	}
}

// TestMountManyLayers mounts more layers than mount(2)'s one-page option
// string can name by full path, through both mount routes.
func TestMountManyLayers(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, _ := newTestStore(t, BaseConfig{})
	var layers []Digest
	for i := 0; i < 60; i++ {
		d, err := s.AddLayerFromTar(ctx, buildTar(t, reg(fmt.Sprintf("f%02d", i), "x")))
		must(t, err)
		layers = append(layers, d)
	}
	var lowers []string
	for i := len(layers) - 1; i >= 0; i-- {
		lowers = append(lowers, s.LayerPath(layers[i]))
	}
	if n := len(legacyOptions(lowers, "/u", "/w")); n < os.Getpagesize() {
		t.Fatalf("option string is %d bytes, want more than a page for this test", n)
	}
	check := func(t *testing.T, target string) {
		ents, err := os.ReadDir(target)
		must(t, err)
		if len(ents) != 60 {
			t.Fatalf("got %d entries, want 60", len(ents))
		}
	}
	t.Run("new mount API", func(t *testing.T) {
		check(t, mountForTest(t, s, layers))
	})
	t.Run("mount(2) with fd paths", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "rootfs")
		for _, d := range []string{"upper", "work", "rootfs"} {
			must(t, os.Mkdir(filepath.Join(dir, d), 0o755))
		}
		t.Cleanup(func() { UnmountRootfs(target) })
		must(t, mountLegacy(lowers, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), target))
		check(t, target)
	})
}
