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
// file is left in the page cache), while a snapshot is durable once made (its
// layer's files and directories are flushed before it is recorded). So each
// snapshot is also shown, without a target, against host tar followed by an
// fsync of the tar file, timed in turns with the plain one.
func runFSSnapshots(ctx context.Context, e *env) ([]figure, error) {
	n := min(e.n, 3)
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
		var ours []time.Duration
		for range n {
			t0 := time.Now()
			img, err := sb.SnapshotFilesystem(ctx, sandboxd.SnapshotOptions{})
			if err != nil {
				return nil, fmt.Errorf("filesystem snapshot %s: %w", c.name, err)
			}
			ours = append(ours, time.Since(t0))
			images = append(images, img.ID)
		}
		floor, err := sentryTar(ctx, e, sb.ID, n)
		if err != nil {
			return nil, err
		}
		host, hostSync, err := hostTar(ctx, e, 1, c.files, c.size, n)
		if err != nil {
			return nil, err
		}
		e.logf("filesystem snapshot %s: %v; the sentry's tar alone %v; host tar %v; host tar + fsync %v", c.name, ours, floor, host, hostSync)
		figs = append(figs, newFigure("filesystem snapshot, "+c.name+" diff", "ms", durations(ours)).
			against("host tar -cf of the same data (no fsync)", durations(host)).atMost(1.5, "<= 1.5x host tar"))
		figs = append(figs, newFigure("  the same snapshots (durable)", "ms", durations(ours)).
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
	var ours []time.Duration
	var tree string
	for range n {
		t0 := time.Now()
		img, err := sb.SnapshotDirectory(ctx, "/data/tree", sandboxd.SnapshotOptions{})
		if err != nil {
			return nil, fmt.Errorf("directory snapshot: %w", err)
		}
		ours = append(ours, time.Since(t0))
		tree = img.ID
		images = append(images, img.ID)
	}
	floor, err := sentryTar(ctx, e, sb.ID, n)
	if err != nil {
		return nil, err
	}
	host, hostSync, err := hostTar(ctx, e, 100, 128, 16384, n)
	if err != nil {
		return nil, err
	}
	e.logf("directory snapshot 200 MiB of small files: %v; the sentry's tar alone %v; host tar %v; host tar + fsync %v", ours, floor, host, hostSync)
	figs = append(figs, newFigure("directory snapshot, 200 MiB of 16 KiB files", "ms", durations(ours)).
		against("host tar -cf of the same shape (no fsync)", durations(host)).atMost(1.5, "<= 1.5x host tar"))
	figs = append(figs, newFigure("  the same snapshots (durable)", "ms", durations(ours)).
		against("host tar -cf + fsync of the tar", durations(hostSync)))
	figs = append(figs, newFigure("  engine floor: the sentry's tar of the sandbox's diff to /dev/null", "ms", durations(floor)).
		against("host tar -cf of the same shape", durations(host)))

	// Create with that tree mounted, beside create without a mount.
	var with, without []time.Duration
	for i := range 2 * n {
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
