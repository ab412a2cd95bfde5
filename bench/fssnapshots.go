package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/sandboxd/sandboxd/internal/fsutil"
	"github.com/sandboxd/sandboxd/internal/runtime"
	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// The fssnapshots section (issue 5): filesystem snapshots of a 1 MiB and a
// 200 MiB diff, a directory snapshot of a 200 MiB tree of small files (100
// directories of 128 files of 16 KiB), each beside host `tar -cf` of the same
// shape of data written to a file on the host; create with that tree
// mounted beside create without a mount; and that tree mounted into a
// running sandbox beside host tar. Beside each snapshot figure, the
// engine's floor: the sentry's tar of the same diff, to /dev/null.
//
// The host tar the targets compare with does not fsync its output (the tar
// file is left in the page cache), and neither does a snapshot's default
// call wait for its layer to reach the disk (the flush ends in the
// background). Snapshots that wait until durable (WaitDurable) are timed in
// turns with those and shown, without a target, against host tar followed by
// an fsync of the tar file, itself timed in turns with the plain one.
//
// Every timed snapshot stores a new layer: a stamp file of its own is
// written first (untimed), else the second and later snapshots of the same
// diff would be duplicates of the first, which neither extract into a new
// layer nor flush anything. After a default snapshot the next call waits
// (untimed) until its layer is durable, so that no call shares the disk
// with the previous one's flush; plain host tars follow synced ones alike.
func runFSSnapshots(ctx context.Context, e *env) ([]figure, error) {
	n := min(e.n, 5) // this disk moves the figures: three samples did not settle them
	sb, err := e.client.Create(ctx, sandboxd.CreateOptions{Image: "debian-slim", Timeout: time.Hour, MemoryMiB: 2048})
	if err != nil {
		return nil, err
	}
	e.daemon.track(sb.ID)
	defer sb.Terminate(context.WithoutCancel(ctx))
	var figs []figure
	var images []string
	defer func() {
		for _, id := range images {
			e.client.DeleteImage(context.WithoutCancel(ctx), id)
		}
	}()

	// Filesystem snapshots: each diff is the sandbox's whole change so far.
	for _, c := range []struct {
		name, script string
		files, size  int
	}{
		{"1 MiB", "head -c 1048576 /dev/urandom > /f1", 1, 1 << 20},
		{"200 MiB", "rm /f1; for i in 1 2 3 4; do head -c 52428800 /dev/urandom > /f$i; done", 4, 50 << 20},
	} {
		if err := shell(ctx, sb, c.script); err != nil {
			return nil, err
		}
		ours, durable, err := snapshotRounds(ctx, e, sb, "/stamp", n, &images, func(o sandboxd.SnapshotOptions) (sandboxd.Image, error) {
			return sb.SnapshotFilesystem(ctx, o)
		})
		if err != nil {
			return nil, fmt.Errorf("filesystem snapshot %s: %w", c.name, err)
		}
		floor, err := sentryTar(ctx, e, sb.ID, n)
		if err != nil {
			return nil, err
		}
		host, hostSync, err := hostTar(ctx, e, 1, c.files, c.size, n)
		if err != nil {
			return nil, err
		}
		e.logf("filesystem snapshot %s: %v, waiting until durable %v; the sentry's tar alone %v; host tar %v; host tar + fsync %v",
			c.name, ours, durable, floor, host, hostSync)
		figs = append(figs, newFigure("filesystem snapshot, "+c.name+" diff", "ms", durations(ours)).
			against("host tar -cf of the same data (no fsync)", durations(host)).atMost(1.5, "<= 1.5x host tar"))
		figs = append(figs, newFigure("  the same snapshots, waiting until durable", "ms", durations(durable)).
			against("host tar -cf + fsync of the tar", durations(hostSync)))
		figs = append(figs, newFigure("  engine floor: the sentry's tar of that diff to /dev/null", "ms", durations(floor)).
			against("host tar -cf of the same data", durations(host)))
	}
	if err := shell(ctx, sb, "rm /f1 /f2 /f3 /f4"); err != nil {
		return nil, err
	}

	// Directory snapshot of a tree of small files.
	if err := shell(ctx, sb, `mkdir -p /data/tree; cd /data/tree
for d in $(seq 1 100); do mkdir d$d; head -c 2097152 /dev/urandom | (cd d$d && split -b 16384 -a 3 -); done`); err != nil {
		return nil, err
	}
	ours, durable, err := snapshotRounds(ctx, e, sb, "/data/tree/stamp", n, &images, func(o sandboxd.SnapshotOptions) (sandboxd.Image, error) {
		return sb.SnapshotDirectory(ctx, "/data/tree", o)
	})
	if err != nil {
		return nil, fmt.Errorf("directory snapshot: %w", err)
	}
	tree := images[len(images)-1]
	floor, err := sentryTar(ctx, e, sb.ID, n)
	if err != nil {
		return nil, err
	}
	host, hostSync, err := hostTar(ctx, e, 100, 128, 16384, n)
	if err != nil {
		return nil, err
	}
	e.logf("directory snapshot 200 MiB of small files: %v, waiting until durable %v; the sentry's tar alone %v; host tar %v; host tar + fsync %v",
		ours, durable, floor, host, hostSync)
	figs = append(figs, newFigure("directory snapshot, 200 MiB of 16 KiB files", "ms", durations(ours)).
		against("host tar -cf of the same shape (no fsync)", durations(host)).atMost(1.5, "<= 1.5x host tar"))
	figs = append(figs, newFigure("  the same snapshots, waiting until durable", "ms", durations(durable)).
		against("host tar -cf + fsync of the tar", durations(hostSync)))
	figs = append(figs, newFigure("  engine floor: the sentry's tar of the sandbox's diff to /dev/null", "ms", durations(floor)).
		against("host tar -cf of the same shape", durations(host)))

	// Create with that tree mounted, beside create without a mount,
	// alternating; more rounds than the snapshots (a create is cheap, and a
	// 10% margin needs more than three samples to show through the noise).
	var with, without []time.Duration
	for i := range 2 * min(e.n, 8) {
		o := sandboxd.CreateOptions{Image: "busybox"}
		if i%2 == 0 {
			o.Mounts = []sandboxd.Mount{{Image: tree, Path: "/work/tree"}}
		}
		t0 := time.Now()
		s, err := e.client.Create(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("create: %w", err)
		}
		d := time.Since(t0)
		e.daemon.track(s.ID)
		s.Terminate(context.WithoutCancel(ctx))
		if i%2 == 0 {
			with = append(with, d)
		} else {
			without = append(without, d)
		}
	}
	e.logf("create with a mount %v, without %v", with, without)
	figs = append(figs, newFigure("create with the 200 MiB tree mounted", "ms", durations(with)).
		against("create without a mount", durations(without)).atMost(1.1, "<= 1.1x"))

	live, err := mountIntoRunning(ctx, e, tree, max(e.n, 5))
	if err != nil {
		return nil, err
	}
	e.logf("mount into a running sandbox %v; host tar %v", live, host)
	figs = append(figs, newFigure("mount the 200 MiB tree into a running sandbox", "ms", durations(live)).
		against("host tar -cf of the same shape", durations(host)).atMost(0.1, "<= 0.1x host tar (nothing copied)"))
	return figs, nil
}

// snapshotRounds times n rounds of two snapshots each taken by snap: one by
// default (plain), then one waiting until durable. Before each, a new stamp
// is written at the path stamp in sb, so that each stores a new layer;
// after the default one, it waits (untimed) for its image to become durable.
// The images made are appended to images.
func snapshotRounds(ctx context.Context, e *env, sb *sandboxd.Sandbox, stamp string, n int, images *[]string,
	snap func(sandboxd.SnapshotOptions) (sandboxd.Image, error)) (plain, durable []time.Duration, err error) {
	var flushes []time.Duration
	for i := range n {
		for _, wait := range []bool{false, true} {
			if err := shell(ctx, sb, fmt.Sprintf("echo %d-%v > %s", i, wait, stamp)); err != nil {
				return nil, nil, err
			}
			t0 := time.Now()
			img, err := snap(sandboxd.SnapshotOptions{WaitDurable: wait})
			if err != nil {
				return nil, nil, err
			}
			took := time.Since(t0)
			*images = append(*images, img.ID)
			if wait {
				if !img.Durable {
					return nil, nil, fmt.Errorf("snapshot %s waited until durable, but its image is not durable", img.ID)
				}
				durable = append(durable, took)
				continue
			}
			plain = append(plain, took)
			flush, err := untilDurable(ctx, e, img.ID)
			if err != nil {
				return nil, nil, err
			}
			flushes = append(flushes, flush)
		}
	}
	e.logf("  the default snapshots' layers became durable %v after their calls returned", flushes)
	return plain, durable, nil
}

// untilDurable polls image id until all its layers are on disk and returns
// how long that took (to 10 ms).
func untilDurable(ctx context.Context, e *env, id string) (time.Duration, error) {
	t0 := time.Now()
	for {
		im, err := e.client.GetImage(ctx, id)
		if err != nil {
			return 0, err
		}
		if im.Durable {
			return time.Since(t0), nil
		}
		if time.Since(t0) > time.Minute {
			return 0, fmt.Errorf("image %s not durable a minute after its snapshot", id)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// mountIntoRunning times n mounts of image tree into one running sandbox
// (MountImage through the SDK until the mount is in place), each followed by
// a check that a file reads and an unmount.
func mountIntoRunning(ctx context.Context, e *env, tree string, n int) ([]time.Duration, error) {
	sb, err := e.client.Create(ctx, sandboxd.CreateOptions{Image: "busybox"})
	if err != nil {
		return nil, err
	}
	e.daemon.track(sb.ID)
	defer sb.Terminate(context.WithoutCancel(ctx))
	var out []time.Duration
	for range n {
		t0 := time.Now()
		if _, err := sb.MountImage(ctx, tree, "/work/tree"); err != nil {
			return nil, fmt.Errorf("mount into a running sandbox: %w", err)
		}
		out = append(out, time.Since(t0))
		if err := shell(ctx, sb, "test -s /work/tree/d1/xaaa"); err != nil {
			return nil, err
		}
		if err := sb.UnmountImage(ctx, "/work/tree"); err != nil {
			return nil, fmt.Errorf("unmount: %w", err)
		}
	}
	return out, nil
}

// sentryTar times n tars of sandbox id's root filesystem diff by the sentry
// alone, written to /dev/null, as the daemon asks for them
// (runtime.TarRootfsUpperTo): the engine's share of a snapshot, which
// nothing on the daemon's side can go below.
func sentryTar(ctx context.Context, e *env, id string, n int) ([]time.Duration, error) {
	rt, err := runtime.New(runtime.Config{RunscPath: e.daemon.cfg.runsc, RootDir: filepath.Join(e.daemon.cfg.dataDir, "runsc")}, nil)
	if err != nil {
		return nil, err
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	var out []time.Duration
	for range n {
		t0 := time.Now()
		if err := rt.TarRootfsUpperTo(ctx, id, null); err != nil {
			return nil, fmt.Errorf("the sentry's tar: %w", err)
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

func shell(ctx context.Context, sb *sandboxd.Sandbox, script string) error {
	p, err := sb.Exec(ctx, []string{"sh", "-ec", script}, &sandboxd.ExecOptions{})
	if err != nil {
		return err
	}
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		return fmt.Errorf("%q: exit %d, %v", script, code, err)
	}
	return nil
}

// hostTar writes dirs directories of files random files of size bytes on the
// host and times n runs of `tar -cf` of them into a file beside them (plain),
// and, in turns with those, n runs of the same followed by an fsync of the
// tar file (synced). Each run writes a new tar file.
func hostTar(ctx context.Context, e *env, dirs, files, size, n int) (plain, synced []time.Duration, err error) {
	dir, err := os.MkdirTemp(e.raw.dir, "hosttar-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	buf := make([]byte, size)
	for d := range dirs {
		sub := filepath.Join(dir, "data", fmt.Sprint("d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return nil, nil, err
		}
		for f := range files {
			rand.Read(buf)
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprint("f", f)), buf, 0o644); err != nil {
				return nil, nil, err
			}
		}
	}
	out := filepath.Join(dir, "out.tar")
	for range n {
		for _, fsync := range []bool{false, true} {
			os.Remove(out)
			t0 := time.Now()
			cmd := exec.CommandContext(ctx, "tar", "-C", filepath.Join(dir, "data"), "-cf", out, ".")
			if b, err := cmd.CombinedOutput(); err != nil {
				return nil, nil, fmt.Errorf("host tar: %v: %s", err, b)
			}
			if fsync {
				if err := fsutil.SyncPath(out); err != nil {
					return nil, nil, fmt.Errorf("host tar: %w", err)
				}
				synced = append(synced, time.Since(t0))
			} else {
				plain = append(plain, time.Since(t0))
			}
		}
	}
	return plain, synced, nil
}
