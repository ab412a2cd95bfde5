package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// The snapshots section (issue 4): for sandboxes holding 16 and 256 MiB of
// touched memory, the frozen time during a snapshot, the whole snapshot
// call, restore to first exec output and the size on disk, beside raw
// `runsc checkpoint --leave-running` and `runsc restore` of the same kind of
// sandbox in the same run. Each iteration uses two fresh sandboxes (one for
// ours, one for raw), so both measure a first checkpoint (the first one
// scans memory for zero pages; later ones are faster).
func runSnapshots(ctx context.Context, e *env) ([]figure, error) {
	sizes, err := snapshotSizes(*snapshotSizesFlag)
	if err != nil {
		return nil, err
	}
	var figs []figure
	n := min(e.n, 5)
	for _, mib := range sizes {
		var frozen, call, restore, prepared, size, rawFrozen, rawCall, rawRestore, rawSize []float64
		for i := range n {
			ours, err := snapOurs(ctx, e, mib)
			if err != nil {
				return nil, fmt.Errorf("%d MiB, ours: %w", mib, err)
			}
			raw, err := snapRaw(ctx, e, mib)
			if err != nil {
				return nil, fmt.Errorf("%d MiB, raw: %w", mib, err)
			}
			frozen, call, restore, size = append(frozen, ours.frozen), append(call, ours.call), append(restore, ours.restore), append(size, ours.size)
			prepared = append(prepared, ours.restorePrepared)
			rawFrozen, rawCall, rawRestore, rawSize = append(rawFrozen, raw.frozen), append(rawCall, raw.call), append(rawRestore, raw.restore), append(rawSize, raw.size)
			e.logf("snapshot %d MiB %d/%d: ours frozen %.0f ms call %.0f ms restore %.0f ms (prepared %.0f ms) size %.0f MiB; raw %.0f / %.0f / %.0f ms, %.0f MiB",
				mib, i+1, n, ours.frozen, ours.call, ours.restore, ours.restorePrepared, ours.size, raw.frozen, raw.call, raw.restore, raw.size)
		}
		frozenFig := newFigure(fmt.Sprintf("snapshot %d MiB: frozen (longest exec gap)", mib), "ms", frozen).
			against("raw runsc checkpoint", rawFrozen)
		if mib == 256 {
			met := frozenFig.P50 < 500
			frozenFig.Target, frozenFig.Met = "< 500 ms", &met
		}
		figs = append(figs, frozenFig,
			newFigure(fmt.Sprintf("snapshot %d MiB: whole call", mib), "ms", call).
				against("raw runsc checkpoint --leave-running", rawCall).atMost(1.2, "<= 1.2x raw"),
			newFigure(fmt.Sprintf("restore %d MiB -> first exec output (cold)", mib), "ms", restore).
				against("raw runsc restore + exec", rawRestore).atMost(1.2, "<= 1.2x raw"),
			newFigure(fmt.Sprintf("restore %d MiB -> first exec output (prepared target)", mib), "ms", prepared).
				against("raw runsc restore + exec", rawRestore).atMost(1.0, "below raw"),
			newFigure(fmt.Sprintf("snapshot %d MiB: size on disk", mib), "MiB", size).
				against("raw runsc image", rawSize),
		)
	}
	return figs, nil
}

// snapshotSizesFlag chooses the memory sizes the snapshots section measures
// (one size alone takes half the time).
var snapshotSizesFlag = flag.String("snapshot-sizes", "16,256", "snapshots section: comma-separated MiB of touched memory to measure")

// snapshotSizes parses a comma-separated list of positive MiB counts.
func snapshotSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-snapshot-sizes %q: want positive MiB counts separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// snapSample is one iteration: ms, ms, ms, ms, MiB. restore is without a
// prepared target (for raw: runsc restore of a new container).
type snapSample struct{ frozen, call, restore, restorePrepared, size float64 }

// filledSandbox creates a busybox sandbox whose background process (started
// by exec) holds mib MiB of random bytes, and returns once it does.
func filledSandbox(ctx context.Context, e *env, mib int) (*sandboxd.Sandbox, error) {
	sb, err := e.client.Create(ctx, sandboxd.CreateOptions{Image: "busybox", MemoryMiB: 2*int64(mib) + 512})
	if err != nil {
		return nil, err
	}
	e.daemon.track(sb.ID)
	bytes := mib << 20
	// Non-zero bytes (zero pages are left out of checkpoints); yes is much
	// faster than /dev/urandom inside gVisor.
	fill := fmt.Sprintf("(yes sandboxd-bench | head -c %d; exec sleep 100000) | tail -c %d >/dev/null 2>&1 &", bytes, bytes)
	if _, err := execOut(ctx, sb, "sh", "-c", fill); err != nil {
		sb.Terminate(context.WithoutCancel(ctx))
		return nil, err
	}
	deadline := time.Now().Add(4 * time.Minute) // about 8 MiB/s through a pipe in gVisor here
	for {
		out, err := execOut(ctx, sb, "sh", "-c", "grep VmRSS /proc/$(pidof tail)/status | tr -dc 0-9")
		kb, _ := strconv.Atoi(strings.TrimSpace(out))
		if err == nil && kb >= bytes/1024 {
			return sb, nil
		}
		if time.Now().After(deadline) {
			sb.Terminate(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("memory fill: %d KiB after 4 minutes, want %d (%v)", kb, bytes/1024, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func execOut(ctx context.Context, sb *sandboxd.Sandbox, argv ...string) (string, error) {
	var out strings.Builder
	p, err := sb.Exec(ctx, argv, &sandboxd.ExecOptions{Stdout: &out, Stderr: io.Discard})
	if err != nil {
		return "", err
	}
	code, err := p.Wait(ctx)
	if err == nil && code != 0 {
		err = fmt.Errorf("%q: exit %d", argv, code)
	}
	return out.String(), err
}

// probeExecTimeout bounds one probe exec: a probe that never completes
// (an exec lost across a snapshot) fails the iteration instead of hanging
// the bench.
const probeExecTimeout = 30 * time.Second

// probe runs `true` through the exec API back to back until stop is
// closed and returns the completion times: the longest gap between two of
// them during a snapshot is how long the sandbox was frozen, as its agent
// (and so a client) saw it, give or take one round trip (about 3-5 ms).
// A failed exec ends it with the error: the gaps would be wrong.
func probe(ctx context.Context, sb *sandboxd.Sandbox, stop <-chan struct{}) ([]time.Time, error) {
	var at []time.Time
	for {
		select {
		case <-stop:
			return at, nil
		default:
		}
		ectx, cancel := context.WithTimeout(ctx, probeExecTimeout)
		_, err := execOut(ectx, sb, "true")
		cancel()
		if err != nil {
			return at, fmt.Errorf("probe exec: %w", err)
		}
		at = append(at, time.Now())
	}
}

// frozenDuring returns the longest gap between probe completions that
// overlaps [from, to], in ms.
func frozenDuring(at []time.Time, from, to time.Time) float64 {
	var longest time.Duration
	for i := 1; i < len(at); i++ {
		if at[i].Before(from) || at[i-1].After(to) {
			continue
		}
		longest = max(longest, at[i].Sub(at[i-1]))
	}
	return float64(longest) / float64(time.Millisecond)
}

// withProbe runs f while probing sb and returns f's duration in ms and the
// frozen time seen.
func withProbe(ctx context.Context, sb *sandboxd.Sandbox, f func() error) (call, frozen float64, err error) {
	stop := make(chan struct{})
	var at []time.Time
	var perr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); at, perr = probe(ctx, sb, stop) }()
	time.Sleep(100 * time.Millisecond) // the probe is in its stride
	t0 := time.Now()
	err = f()
	t1 := time.Now()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err == nil {
		err = perr
	}
	return float64(t1.Sub(t0)) / float64(time.Millisecond), frozenDuring(at, t0, t1), err
}

func snapOurs(ctx context.Context, e *env, mib int) (s snapSample, err error) {
	sb, err := filledSandbox(ctx, e, mib)
	if err != nil {
		return s, err
	}
	defer sb.Terminate(context.WithoutCancel(ctx))
	var sn sandboxd.Snapshot
	s.call, s.frozen, err = withProbe(ctx, sb, func() (err error) {
		sn, err = sb.Snapshot(ctx, time.Hour)
		return err
	})
	if err != nil {
		return s, err
	}
	defer e.client.DeleteSnapshot(context.WithoutCancel(ctx), sn.ID)
	s.size = float64(sn.Size) / (1 << 20)
	// The daemon keeps one restore target (see daemon.go): the snapshot's,
	// then, after a second snapshot, the second one's. So the first
	// snapshot is restored cold and the second into its prepared target,
	// each with nothing else running.
	idA, err := e.daemon.waitTarget(ctx, "")
	if err != nil {
		return s, err
	}
	sn2, err := sb.Snapshot(ctx, time.Hour)
	if err != nil {
		return s, err
	}
	defer e.client.DeleteSnapshot(context.WithoutCancel(ctx), sn2.ID)
	idB, err := e.daemon.waitTarget(ctx, idA)
	if err != nil {
		return s, err
	}
	if s.restorePrepared, err = restoreToOutput(ctx, e, sn2.ID); err != nil {
		return s, err
	}
	idC, err := e.daemon.waitTarget(ctx, idB) // the refill, done before the next restore
	if err != nil {
		return s, err
	}
	if s.restore, err = restoreToOutput(ctx, e, sn.ID); err != nil {
		return s, err
	}
	// And its refill, so that nothing runs behind the raw measurement.
	_, err = e.daemon.waitTarget(ctx, idC)
	return s, err
}

// restoreToOutput restores snapshot id and returns the time until the first
// output of echo in the restored sandbox (ms); it terminates the sandbox.
func restoreToOutput(ctx context.Context, e *env, id string) (float64, error) {
	t0 := time.Now()
	rs, err := e.client.Restore(ctx, id, sandboxd.RestoreOptions{NoName: true})
	if err != nil {
		return 0, err
	}
	e.daemon.track(rs.ID)
	defer rs.Terminate(context.WithoutCancel(ctx))
	w := newFirstByte()
	p, err := rs.Exec(ctx, []string{"echo", "hi"}, &sandboxd.ExecOptions{Stdout: w, Stderr: io.Discard})
	if err != nil {
		return 0, err
	}
	var ms float64
	select {
	case t := <-w.at:
		ms = float64(t.Sub(t0)) / float64(time.Millisecond)
	case <-time.After(30 * time.Second):
		return 0, errors.New("no output from the restored sandbox in 30 s")
	}
	_, err = p.Wait(ctx)
	return ms, err
}

// snapRaw checkpoints one of our sandboxes with runsc itself (the daemon's
// runsc root, the same flags), then restores that image with runsc into a
// new container: a copy of the sandbox's bundle pointed at an empty network
// namespace, and its init's stdio on /dev/null. Restore to first output is
// runsc restore --detach plus runsc exec echo hi.
func snapRaw(ctx context.Context, e *env, mib int) (s snapSample, err error) {
	sb, err := filledSandbox(ctx, e, mib)
	if err != nil {
		return s, err
	}
	defer sb.Terminate(context.WithoutCancel(ctx))
	data := e.daemon.cfg.dataDir
	daemonRoot := filepath.Join(data, "runsc")
	r := e.raw
	id := r.newID("r")
	dir := filepath.Join(r.dir, id)
	img, scratch, bundle := filepath.Join(dir, "image"), filepath.Join(dir, "scratch"), filepath.Join(dir, "bundle")
	for _, d := range []string{img, scratch, bundle} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return s, err
		}
	}
	s.call, s.frozen, err = withProbe(ctx, sb, func() error {
		return r.runQuiet(ctx, "--root", daemonRoot, "--platform", "systrap", "checkpoint", "--leave-running", "--image-path", img, sb.ID)
	})
	if err != nil {
		return s, err
	}
	s.size = float64(duBytes(img)) / (1 << 20)

	var spec map[string]any
	b, err := os.ReadFile(filepath.Join(data, "sandboxes", sb.ID, "bundle", "config.json"))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return s, err
	}
	ns := "sbbraw-" + id[len(id)-5:]
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return s, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	linux := spec["linux"].(map[string]any)
	linux["cgroupsPath"] = "/sandboxd/" + id
	for _, n := range linux["namespaces"].([]any) {
		if m := n.(map[string]any); m["type"] == "network" {
			m["path"] = "/var/run/netns/" + ns
		}
	}
	if b, err = json.Marshal(spec); err != nil {
		return s, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return s, err
	}
	r.ids[id] = true
	defer r.remove(id)
	t0 := time.Now()
	if err := r.runQuiet(ctx, "--root", r.root, "--platform", "systrap", "--network", "sandbox", "--overlay2", "all:dir="+scratch,
		"restore", "--detach", "--bundle", bundle, "--image-path", img, id); err != nil {
		return s, err
	}
	if _, err := r.exec(ctx, id, "/bin/echo", "hi"); err != nil {
		return s, err
	}
	s.restore = float64(time.Since(t0)) / float64(time.Millisecond)
	return s, nil
}

func duBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
