package snapshot

import (
	"encoding/hex"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestFileSum(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"less than a page", 4095},
		{"one page", 4096},
		{"one buffer", sumBuf},
		{"one buffer and a byte", sumBuf + 1},
		{"several buffers and a tail", 3*sumBuf + 123},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, tt.size)
			for i := range b {
				b[i] = byte(rand.IntN(256))
			}
			path := filepath.Join(dir, tt.name)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			n, sum, err := fileSum(path)
			if err != nil {
				t.Fatal(err)
			}
			h := crc32.New(castagnoli)
			h.Write(b)
			want := hex.EncodeToString(h.Sum(nil))
			if n != int64(tt.size) || sum != want {
				t.Errorf("got %d bytes, crc %s; want %d, %s", n, sum, tt.size, want)
			}
		})
	}
	if _, _, err := fileSum(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("missing file: got %v, want a not-exist error", err)
	}
}
