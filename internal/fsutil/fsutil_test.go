package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

// Both replacements leave exactly the new content with the given mode
// and no temporary file; CopyFile copies bytes and sets the mode exactly.
func TestReplaceAndCopy(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, w := range []func(string, []byte, os.FileMode) error{WriteFileAtomic, ReplaceFile} {
		if err := os.WriteFile(p, []byte("old content"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := w(p, []byte("new"), 0o600); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if string(b) != "new" || fi.Mode().Perm() != 0o600 {
			t.Errorf("got %q mode %v, want %q mode 0600", b, fi.Mode().Perm(), "new")
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("left %d entries in the dir, want 1", len(entries))
		}
	}
	q := filepath.Join(dir, "copy")
	if err := os.WriteFile(q, []byte("longer old content"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CopyFile(p, q, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(q)
	fi, _ := os.Stat(q)
	if string(b) != "new" || fi.Mode().Perm() != 0o755 {
		t.Errorf("copy: got %q mode %v, want %q mode 0755", b, fi.Mode().Perm(), "new")
	}
	if err := CopyFile(filepath.Join(dir, "missing"), q, 0o644); err == nil {
		t.Error("copy of a missing file succeeded")
	}
}
