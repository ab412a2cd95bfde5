package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestCheckpointArgs(t *testing.T) {
	existing := t.TempDir() // the test's temporary dirs allow O_DIRECT (ext4, tmpfs >= 6.6)
	if !directIOSupported(existing) {
		t.Skipf("%s does not support O_DIRECT", existing)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name string
		dir  string
		opts CheckpointOpts
		want []string
	}{
		{"stop", existing, CheckpointOpts{}, []string{"checkpoint", "--image-path", existing, "sb-1"}},
		{"leave running", existing, CheckpointOpts{LeaveRunning: true},
			[]string{"checkpoint", "--image-path", existing, "--leave-running", "sb-1"}},
		{"direct", existing, CheckpointOpts{LeaveRunning: true, Direct: true},
			[]string{"checkpoint", "--image-path", existing, "--leave-running", "--direct", "sb-1"}},
		// Nothing to probe: runsc makes the dir and writes through the cache.
		{"direct into a missing dir", missing, CheckpointOpts{Direct: true},
			[]string{"checkpoint", "--image-path", missing, "sb-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, f := newFake(t, "sb-1")
			if err := r.Checkpoint(t.Context(), "sb-1", tt.dir, tt.opts); err != nil {
				t.Fatal(err)
			}
			if len(f.calls) != 1 {
				t.Fatalf("got %d runsc calls, want 1", len(f.calls))
			}
			if got := withoutGlobals(f.calls[0]); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	// The probe leaves nothing behind.
	if entries, _ := os.ReadDir(existing); len(entries) != 0 {
		t.Errorf("got %d files left in the image dir, want none", len(entries))
	}
}

func TestRestoreDirect(t *testing.T) {
	withPages, without := t.TempDir(), t.TempDir()
	if !directIOSupported(withPages) {
		t.Skipf("%s does not support O_DIRECT", withPages)
	}
	if err := os.WriteFile(filepath.Join(withPages, "pages.img"), make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir string
		want      []string
	}{
		{"pages file", withPages, []string{"--direct"}},
		{"no pages file (compressed image)", without, nil},
		{"missing dir", filepath.Join(without, "missing"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := restoreDirect(tt.dir); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
