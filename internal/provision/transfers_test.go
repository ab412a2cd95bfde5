package provision

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

func TestRemoveTransfers(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{".xfer-0123", ".xfer-ff", "img-1", ".other"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, ".xfer-dir"), 0o755) // not a transfer file: kept
	os.Mkdir(filepath.Join(dir, "image"), 0o755)
	if err := removeTransfers(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	sort.Strings(got)
	want := []string{".other", ".xfer-dir", "image", "img-1"}
	if len(got) != len(want) {
		t.Fatalf("left: got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("left: got %v, want %v", got, want)
		}
	}
	if err := removeTransfers(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("a missing staging dir: got %v, want nil", err)
	}
}
