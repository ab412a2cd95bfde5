package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/fsutil"
)

// The engine's floor under an exec: a process started and waited for
// INSIDE a gVisor sandbox, with no sandboxd in the way. The bench binary
// (static) is copied into the raw root and run by `runsc run` as
// `spawn-floor N`: it spawns /bin/true N times with os/exec (vfork+exec,
// as the agent does) and prints each round trip in nanoseconds. Beside it,
// the same loop on the host.

const spawnFloorCmd = "spawn-floor"

// spawnFloorMain is the bench binary's `spawn-floor N` mode.
func spawnFloorMain(args []string) {
	n := 50
	if len(args) > 0 {
		n, _ = strconv.Atoi(args[0])
	}
	for range n {
		t := time.Now()
		if err := exec.Command("/bin/true").Run(); err != nil {
			fmt.Fprintln(os.Stderr, "spawn-floor:", err)
			os.Exit(1)
		}
		fmt.Println(time.Since(t).Nanoseconds())
	}
}

// spawnFloor runs spawnFloorMain inside a raw runsc sandbox and returns its
// round trips (the first few, warm-up, dropped).
func spawnFloor(ctx context.Context, r *raw, n int) ([]time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	in := filepath.Join(r.rootfs, ".sbbench")
	if err := fsutil.CopyFile(self, in, 0o755); err != nil {
		return nil, err
	}
	defer os.Remove(in)
	out, err := r.runOutput(ctx, "/.sbbench", spawnFloorCmd, strconv.Itoa(n+5))
	if err != nil {
		return nil, err
	}
	var ds []time.Duration
	for i, l := range strings.Fields(out) {
		v, err := strconv.ParseInt(l, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("spawn-floor output %q: %v", l, err)
		}
		if i >= 5 {
			ds = append(ds, time.Duration(v))
		}
	}
	if len(ds) != n {
		return nil, fmt.Errorf("spawn-floor: got %d samples, want %d:\n%s", len(ds), n, out)
	}
	return ds, nil
}

// runOutput runs argv in a new raw container in the foreground and returns
// its stdout (through a file: see ENGINE-NOTES on runsc and pipes).
func (r *raw) runOutput(ctx context.Context, argv ...string) (string, error) {
	id := r.newID("o")
	bundle, flags, err := r.bundle(id, argv...)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(filepath.Join(r.dir, id))
	outf, err := os.CreateTemp(r.dir, "stdout-")
	if err != nil {
		return "", err
	}
	defer os.Remove(outf.Name())
	defer outf.Close()
	cmd := r.command(append(flags, "run", "--bundle", bundle, id)...)
	cmd.Stdout = outf
	var stderr strings.Builder
	cmd.Stderr = &stderr
	r.ids[id] = true
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("runsc run %v: %v: %s", argv, err, stderr.String())
	}
	delete(r.ids, id) // a foreground run deletes its container
	b, err := os.ReadFile(outf.Name())
	return string(b), err
}
