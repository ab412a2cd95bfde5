package e2e

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// TestFilesThroughput measures the file API for issue 3's benchmark: write
// then read back 1 MiB and 256 MiB files (MB/s) beside the same copy on the
// host disk, and the p50 of 1 KiB writes and reads. It only logs figures;
// run it with SANDBOXD_FILES_BENCH=1 (it moves half a gigabyte).
func TestFilesThroughput(t *testing.T) {
	if os.Getenv("SANDBOXD_FILES_BENCH") == "" {
		t.Skip("set SANDBOXD_FILES_BENCH=1 to measure")
	}
	sb := create(t, sandboxd.CreateOptions{})
	f := sb.Files()
	ctx := ctxT(t)
	mbps := func(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
	for _, size := range []int64{1 << 20, 256 << 20} {
		data := make([]byte, size)
		rand.Read(data)
		start := time.Now()
		if err := f.WriteFile(ctx, "/tmp/bench", data, nil); err != nil {
			t.Fatal(err)
		}
		w := time.Since(start)
		start = time.Now()
		r, err := f.Open(ctx, "/tmp/bench")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		r.Close()
		if err != nil || n != size {
			t.Fatalf("read: %d, %v", n, err)
		}
		rd := time.Since(start)
		// The same on the host disk: write the file, then read it back.
		hp := filepath.Join(t.TempDir(), "bench")
		start = time.Now()
		hf, _ := os.Create(hp)
		hf.Write(data)
		hf.Sync()
		hf.Close()
		hw := time.Since(start)
		start = time.Now()
		hb, _ := os.ReadFile(hp)
		hr := time.Since(start)
		if !bytes.Equal(hb, data) {
			t.Fatal("host copy differs")
		}
		t.Logf("%4d MiB: sandbox write %7.1f MB/s read %7.1f MB/s | host write(+fsync) %7.1f MB/s read %7.1f MB/s",
			size>>20, mbps(size, w), mbps(size, rd), mbps(size, hw), mbps(size, hr))
		// For comparison, the same bytes through an exec's output stream.
		start = time.Now()
		p, err := sb.Exec(ctx, []string{"cat", "/tmp/bench"}, &sandboxd.ExecOptions{Stdout: io.Discard, Stderr: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		p.Wait(ctx)
		t.Logf("%4d MiB: exec cat (output stream) %7.1f MB/s", size>>20, mbps(size, time.Since(start)))
		f.Remove(ctx, "/tmp/bench")
	}
	small := make([]byte, 1024)
	var ws, rs []time.Duration
	for i := 0; i < 200; i++ {
		start := time.Now()
		if err := f.WriteFile(ctx, "/tmp/small", small, nil); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, time.Since(start))
		start = time.Now()
		if _, err := f.ReadFile(ctx, "/tmp/small"); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, time.Since(start))
	}
	slices.Sort(ws)
	slices.Sort(rs)
	t.Logf("1 KiB: write p50 %v p99 %v | read p50 %v p99 %v", ws[len(ws)/2], ws[len(ws)*99/100], rs[len(rs)/2], rs[len(rs)*99/100])
}
