package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// The files section (issue 3): write then read back of a 1 MiB and a 256 MiB
// file through the SDK file API (Files.WriteFile, Files.Open), in MB/s,
// beside the same copy on the host disk (write to a file beside the raw
// engine's directory with fsync, read it back) and beside the raw engine's
// own way to move a file in and out (runsc exec of cat, stdin or stdout a
// pipe); and the latency of 1 KiB writes and reads. For scale, the host's
// read of the file through one pipe to another process and the sandbox's
// own cat of it to /dev/null. The data is random and every read-back is checked
// against what was written (sha256); a mismatch fails the section.
//
// Files.WriteFile and Files.ReadFile move a file of up to 1 MiB in one
// call (PutFile, GetFile); larger files, and Files.Open, stream.
//
// The sandbox's file lives under / (gVisor's overlay, whose upper layer is
// a directory on the host disk), not /tmp (a tmpfs in the sandbox).
func runFiles(ctx context.Context, e *env) ([]figure, error) {
	sb, err := e.client.Create(ctx, sandboxd.CreateOptions{Image: "busybox", Timeout: time.Hour, MemoryMiB: 2048})
	if err != nil {
		return nil, err
	}
	e.daemon.track(sb.ID)
	defer sb.Terminate(context.WithoutCancel(ctx))
	f := sb.Files()
	if err := f.MkdirAll(ctx, "/bench"); err != nil {
		return nil, err
	}
	host, err := os.MkdirTemp(e.raw.dir, "hostfiles-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(host)
	// The raw engine's own way to move a file in and out: runsc exec of
	// cat, its stdin or stdout a pipe of the bench's, in a plain runsc
	// sandbox.
	rawID, err := e.raw.startDetached(ctx, false, "/bin/sleep", "100000")
	if err != nil {
		return nil, err
	}
	defer e.raw.remove(rawID)

	var figs []figure
	for _, c := range []struct {
		name  string
		size  int
		runs  int
		large bool
	}{
		{"1 MiB", 1 << 20, 5, false},
		{"256 MiB", 256 << 20, 3, true},
	} {
		var w, r, hw, hr, rw, rr, piped dist
		data, back := make([]byte, c.size), make([]byte, c.size)
		sp, hp := "/bench/f", filepath.Join(host, "f")
		// One round of each first, not counted: first stream, page cache.
		for i := range c.runs + 1 {
			rand.Read(data) // fresh bytes each run: a stale file cannot pass
			sum := sha256.Sum256(data)
			ow, or, err := filesCopyOurs(ctx, f, sp, data, back)
			if err != nil {
				return nil, fmt.Errorf("%s, ours: %w", c.name, err)
			}
			if sha256.Sum256(back) != sum {
				return nil, fmt.Errorf("%s, ours: read-back differs from what was written (sha256)", c.name)
			}
			clear(back)
			hostW, hostR, err := filesCopyHost(hp, data, back)
			if err != nil {
				return nil, fmt.Errorf("%s, host: %w", c.name, err)
			}
			if sha256.Sum256(back) != sum {
				return nil, fmt.Errorf("%s, host: read-back differs from what was written (sha256)", c.name)
			}
			clear(back)
			rawW, rawR, err := filesCopyRaw(ctx, e.raw, rawID, "/f", data, back)
			if err != nil {
				return nil, fmt.Errorf("%s, raw runsc: %w", c.name, err)
			}
			if sha256.Sum256(back) != sum {
				return nil, fmt.Errorf("%s, raw runsc: read-back differs from what was written (sha256)", c.name)
			}
			clear(back)
			pipeR, err := hostReadPiped(ctx, hp, back)
			if err != nil {
				return nil, fmt.Errorf("%s, host pipe: %w", c.name, err)
			}
			clear(back)
			if i == 0 {
				continue
			}
			w, r = append(w, mbps(c.size, ow)), append(r, mbps(c.size, or))
			hw, hr = append(hw, mbps(c.size, hostW)), append(hr, mbps(c.size, hostR))
			rw, rr = append(rw, mbps(c.size, rawW)), append(rr, mbps(c.size, rawR))
			piped = append(piped, mbps(c.size, pipeR))
			e.logf("files %s %d/%d: ours write %.1f MB/s read %.1f MB/s; host write+fsync %.1f MB/s read %.1f MB/s (through a pipe %.1f); raw runsc exec cat in %.1f MB/s out %.1f MB/s",
				c.name, i, c.runs, w[i-1], r[i-1], hw[i-1], hr[i-1], piped[i-1], rw[i-1], rr[i-1])
		}
		// For scale: the same file read inside the sandbox, no API between.
		var inside dist
		for range c.runs {
			t0 := time.Now()
			if err := shell(ctx, sb, "cat "+sp+" >/dev/null"); err != nil {
				return nil, err
			}
			inside = append(inside, mbps(c.size, time.Since(t0)))
		}
		if err := f.Remove(ctx, sp); err != nil {
			return nil, err
		}
		if err := os.Remove(hp); err != nil {
			return nil, err
		}
		wf := newFigure("write "+c.name+" (Files.WriteFile)", "MB/s", w).
			against("host write+fsync", hw)
		rf := newFigure("read back "+c.name+" (Files.Open)", "MB/s", r).
			against("host read", hr)
		if c.large {
			wf = wf.atLeast(0.5, ">= 0.5x host")
			rf = rf.atLeast(0.5, ">= 0.5x host")
		}
		figs = append(figs, wf,
			newFigure("  the same writes", "MB/s", w).against("raw runsc exec sh -c 'cat >F' <pipe", rw),
			rf,
			newFigure("  the same reads", "MB/s", r).against("raw runsc exec cat F >pipe", rr),
			newFigure("  (host: the file read through one pipe, cat F | reader)", "MB/s", piped),
			newFigure("  (in-sandbox exec cat "+c.name+" >/dev/null)", "MB/s", inside))
	}

	// Small files: 1 KiB written then read back, the same file each time.
	nSmall := max(100, 5*e.n)
	var sw, sr, hsw, hsr []time.Duration
	small, back := make([]byte, 1024), make([]byte, 1024)
	for i := range nSmall + 5 {
		rand.Read(small)
		sum := sha256.Sum256(small)
		t0 := time.Now()
		if err := f.WriteFile(ctx, "/bench/small", small, nil); err != nil {
			return nil, fmt.Errorf("1 KiB write: %w", err)
		}
		t1 := time.Now()
		got, err := f.ReadFile(ctx, "/bench/small")
		if err != nil {
			return nil, fmt.Errorf("1 KiB read: %w", err)
		}
		t2 := time.Now()
		if sha256.Sum256(got) != sum {
			return nil, errors.New("1 KiB, ours: read-back differs from what was written (sha256)")
		}
		hostW, hostR, err := filesCopyHost(filepath.Join(host, "small"), small, back)
		if err != nil {
			return nil, fmt.Errorf("1 KiB, host: %w", err)
		}
		if sha256.Sum256(back) != sum {
			return nil, errors.New("1 KiB, host: read-back differs from what was written (sha256)")
		}
		if i >= 5 { // warm-up
			sw, sr = append(sw, t1.Sub(t0)), append(sr, t2.Sub(t1))
			hsw, hsr = append(hsw, hostW), append(hsr, hostR)
		}
	}
	e.logf("files 1 KiB: write p50 %.2f ms, read p50 %.2f ms over %d", durations(sw).pct(50), durations(sr).pct(50), len(sw))
	swf := newFigure("write 1 KiB (Files.WriteFile)", "ms", durations(sw)).
		against("host write+fsync", durations(hsw)).under(5, "p50 < 5 ms")
	srf := newFigure("read 1 KiB (Files.ReadFile)", "ms", durations(sr)).
		against("host read", durations(hsr)).under(5, "p50 < 5 ms")
	return append(figs, swf, srf), nil
}

// filesCopyOurs writes data to the sandbox's file p and reads it back into
// back (of the same length), timing each half.
func filesCopyOurs(ctx context.Context, f *sandboxd.Files, p string, data, back []byte) (w, r time.Duration, err error) {
	t0 := time.Now()
	if err := f.WriteFile(ctx, p, data, nil); err != nil {
		return 0, 0, fmt.Errorf("write: %w", err)
	}
	t1 := time.Now()
	rd, err := f.Open(ctx, p)
	if err != nil {
		return 0, 0, fmt.Errorf("open: %w", err)
	}
	defer rd.Close()
	if err := readExactly(rd, back); err != nil {
		return 0, 0, err
	}
	return t1.Sub(t0), time.Since(t1), nil
}

// filesCopyHost writes data to the host file p with fsync and reads it back
// into back (of the same length), timing each half.
func filesCopyHost(p string, data, back []byte) (w, r time.Duration, err error) {
	t0 := time.Now()
	hf, err := os.Create(p)
	if err != nil {
		return 0, 0, err
	}
	_, err = hf.Write(data)
	if err == nil {
		err = hf.Sync()
	}
	if cerr := hf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, 0, err
	}
	t1 := time.Now()
	hf, err = os.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer hf.Close()
	if err := readExactly(hf, back); err != nil {
		return 0, 0, err
	}
	return t1.Sub(t0), time.Since(t1), nil
}

// filesCopyRaw writes data to the file p of the raw sandbox id with
// `runsc exec id sh -c 'cat >p'` (stdin a pipe the bench writes) and reads
// it back into back with `runsc exec id cat p` (stdout a pipe the bench
// reads), timing each half: the raw engine's own way to move a file.
func filesCopyRaw(ctx context.Context, r *raw, id, p string, data, back []byte) (w, rd time.Duration, err error) {
	t0 := time.Now()
	in := r.command("--root", r.root, "exec", id, "/bin/sh", "-c", "cat >"+p)
	in.Stdin = bytes.NewReader(data)
	if out, err := in.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("runsc exec cat >%s: %v: %s", p, err, bytes.TrimSpace(out))
	}
	t1 := time.Now()
	if err := readOutput(r.command("--root", r.root, "exec", id, "/bin/cat", p), back); err != nil {
		return 0, 0, fmt.Errorf("runsc exec cat %s: %w", p, err)
	}
	return t1.Sub(t0), time.Since(t1), nil
}

// hostReadPiped reads the host file p into back through one pipe (a host
// `cat p` whose stdout the bench reads): what a single hand-off between two
// processes costs on the host, the least a file API across processes pays.
func hostReadPiped(ctx context.Context, p string, back []byte) (time.Duration, error) {
	t0 := time.Now()
	if err := readOutput(exec.CommandContext(ctx, "cat", p), back); err != nil {
		return 0, fmt.Errorf("cat %s: %w", p, err)
	}
	return time.Since(t0), nil
}

// readOutput runs cmd and reads its standard output into back, which it
// must fill exactly.
func readOutput(cmd *exec.Cmd, back []byte) error {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pr, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	rerr := readExactly(pr, back)
	if err := cmd.Wait(); err != nil || rerr != nil {
		return fmt.Errorf("%v, %v: %s", rerr, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// readExactly fills buf from r and checks that r then ends.
func readExactly(r io.Reader, buf []byte) error {
	if n, err := io.ReadFull(r, buf); err != nil {
		return fmt.Errorf("read back: %d of %d bytes: %w", n, len(buf), err)
	}
	var one [1]byte
	if n, err := r.Read(one[:]); n > 0 || (err != nil && err != io.EOF) {
		if err == nil {
			err = errors.New("longer than written")
		}
		return fmt.Errorf("read back: %w", err)
	}
	return nil
}

// mbps is size bytes in d, in MB/s (10^6 bytes per second).
func mbps(size int, d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }

// atLeast sets a target on the ratio for a figure where more is better
// (a throughput): met when Ratio >= limit.
func (f figure) atLeast(limit float64, words string) figure {
	f.Target = words
	met := f.Ratio >= limit
	f.Met = &met
	return f
}

// under sets an absolute target on the p50: met when P50 < limit (in the
// figure's unit).
func (f figure) under(limit float64, words string) figure {
	f.Target = words
	met := f.P50 < limit
	f.Met = &met
	return f
}
