package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mountForTest mounts layers with a fresh upper and work directory and
// unmounts in t.Cleanup (even on failure). It returns the mount point.
func mountForTest(t *testing.T, s *Store, layers []Digest) string {
	t.Helper()
	dir := t.TempDir()
	target := filepath.Join(dir, "rootfs")
	t.Cleanup(func() {
		if err := UnmountRootfs(target); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := s.MountRootfs(context.Background(), layers, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), target); err != nil {
		t.Fatal(err)
	}
	return target
}

func isMounted(t *testing.T, target string) bool {
	t.Helper()
	ms, err := MountPointsUnder(target)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m == target {
			return true
		}
	}
	return false
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/a\040b\134c`); got != `/a b\c` {
		t.Fatalf("got %q, want %q", got, `/a b\c`)
	}
}

func TestLegacyOptionsFitAPage(t *testing.T) {
	if s := legacyOptions([]string{"/a", "/b"}, "/u", "/w"); !strings.HasPrefix(s, "lowerdir=/a:/b,") {
		t.Fatalf("got %q", s)
	}
}

var _ = os.Getpagesize
