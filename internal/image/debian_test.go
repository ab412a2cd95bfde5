package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAptMirror(t *testing.T) {
	cases := []struct {
		name, file, body, want string
	}{
		{"deb822", "sources.list.d/debian.sources",
			"Types: deb\n# comment\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n" +
				"Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n", "http://mirror.test/debian"},
		{"deb822 other suite first", "sources.list.d/x.sources",
			"Types: deb\nURIs: http://sec.test/\nSuites: bookworm-security\n\nTypes: deb deb-src\nURIs: http://m.test/d\nSuites: bookworm\n", "http://m.test/d"},
		{"deb822 disabled", "sources.list.d/x.sources",
			"Enabled: no\nTypes: deb\nURIs: http://off.test/\nSuites: bookworm\n", ""},
		{"one-line", "sources.list",
			"# x\ndeb-src http://src.test/ bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://list.test/debian bookworm main\n", "http://list.test/debian"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755)
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := aptMirror(dir, "bookworm")
			if tc.want == "" {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestDebianSlim builds debian-slim with debootstrap (about a minute, needs
// the Debian mirror), so it runs only with SANDBOXD_TEST_DEBIAN=1. The
// builder cache is SANDBOXD_TEST_CACHE, else /var/cache/sandboxd; a second
// store then imports the layer from it.
func TestDebianSlim(t *testing.T) {
	if os.Getenv("SANDBOXD_TEST_DEBIAN") != "1" {
		t.Skip("set SANDBOXD_TEST_DEBIAN=1 to build debian-slim (about a minute, needs the Debian mirror)")
	}
	requireRoot(t)
	cache := os.Getenv("SANDBOXD_TEST_CACHE")
	if cache == "" {
		cache = "/var/cache/sandboxd"
	}
	ctx := context.Background()
	s, _ := newTestStore(t, BaseConfig{CacheDir: cache})
	start := time.Now()
	progress := writerFunc(func(p []byte) (int, error) {
		t.Logf("%6.1fs %s", time.Since(start).Seconds(), strings.TrimRight(string(p), "\n"))
		return len(p), nil
	})
	im, err := s.EnsureBase(ctx, "debian-slim", progress)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debian-slim first EnsureBase: %v, image %s, size %d bytes", time.Since(start), im.ID, im.Size)

	s2, _ := newTestStore(t, BaseConfig{CacheDir: cache})
	start = time.Now()
	im2, err := s2.EnsureBase(ctx, "debian-slim", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debian-slim from cache: %v", time.Since(start))
	if im2.ID != im.ID {
		t.Errorf("second store: got image %s, want %s", im2.ID, im.ID)
	}

	target := mountForTest(t, s2, im2.Layers)
	for _, p := range []string{"bin/bash", "usr/bin/apt-get", "etc/debian_version"} {
		if _, err := os.Stat(filepath.Join(target, p)); err != nil {
			t.Errorf("debian-slim root: %v", err)
		}
	}
	if debs, _ := filepath.Glob(filepath.Join(target, "var/cache/apt/archives/*.deb")); len(debs) > 0 {
		t.Errorf("apt cache left in the tree: %d .deb files", len(debs))
	}
}

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{w: writerFunc(func(p []byte) (int, error) { got = append(got, string(p)); return len(p), nil })}
	for _, chunk := range []string{"I: one", "\nI: two\nI: th", "ree\n", "tail"} {
		w.Write([]byte(chunk))
	}
	w.Flush()
	want := []string{"I: one\n", "I: two\n", "I: three\n", "tail\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
