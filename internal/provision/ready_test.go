package provision

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWaitInitOutput(t *testing.T) {
	tests := []struct {
		name    string
		writeAt time.Duration // <0: never
		limit   time.Duration
		cancel  bool
		want    bool
		atMost  time.Duration
	}{
		{"output already there", 0, time.Second, false, true, 200 * time.Millisecond},
		{"output later", 30 * time.Millisecond, time.Second, false, true, 500 * time.Millisecond},
		{"no output: limit", -1, 50 * time.Millisecond, false, false, 500 * time.Millisecond},
		{"no output: canceled", -1, 10 * time.Second, true, false, 500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "init.log")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.writeAt >= 0 {
				time.AfterFunc(tc.writeAt, func() { os.WriteFile(path, []byte("agent serving\n"), 0o600) })
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				time.AfterFunc(20*time.Millisecond, cancel)
			}
			start := time.Now()
			got := waitInitOutput(ctx, path, tc.limit)
			if took := time.Since(start); got != tc.want || took > tc.atMost {
				t.Errorf("got %v after %v, want %v within %v", got, took, tc.want, tc.atMost)
			}
		})
	}
}
