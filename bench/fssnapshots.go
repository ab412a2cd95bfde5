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
//
// Memory is treated alike on both sides, because on a virtual machine with
// free page reporting (a virtio balloon that hands free guest pages back
// to the host, as on the machines this project is measured on) it moves
// the figures more than the work does: a page the guest has not used
// lately costs a fault on the host at first touch, and writing 50 MiB into
// such pages took 125 ms here against 10 ms into pages just freed. A host
// tar that removes its previous output writes into the pages that output
// freed; a snapshot that keeps its image writes into new ones (200 MiB:
// host tar 170 ms against 620 ms when it keeps its outputs). So the
// targeted figures delete each snapshot's image once it is durable, as the
// host tar removes its previous tar (recycled memory, which is what a
// plain machine gives either way), and a line without a target shows both
// keeping every output (new memory).
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
		ours, err := snapshotRounds(ctx, e, sb, "/stamp", n, &images, func(o sandboxd.SnapshotOptions) (sandboxd.Image, error) {
			return sb.SnapshotFilesystem(ctx, o)
		})
		if err != nil {
			return nil, fmt.Errorf("filesystem snapshot %s: %w", c.name, err)
		}
		floor, err := sentryTar(ctx, e, sb.ID, n)
		if err != nil {
			return nil, err
		}
		host, err := hostTar(ctx, e, 1, c.files, c.size, n)
		if err != nil {
			return nil, err
		}
		e.logf("filesystem snapshot %s: %v; the sentry's tar alone %v; host tar %v", c.name, ours, floor, host)
		figs = append(figs, snapshotFigures("filesystem snapshot, "+c.name+" diff", "that diff", "the same data", ours, host, floor)...)
	}
	if err := shell(ctx, sb, "rm /f1 /f2 /f3 /f4"); err != nil {
		return nil, err
	}

	// Directory snapshot of a tree of small files.
	if err := shell(ctx, sb, `mkdir -p /data/tree; cd /data/tree
for d in $(seq 1 100); do mkdir d$d; head -c 2097152 /dev/urandom | (cd d$d && split -b 16384 -a 3 -); done`); err != nil {
		return nil, err
	}
	ours, err := snapshotRounds(ctx, e, sb, "/data/tree/stamp", n, &images, func(o sandboxd.SnapshotOptions) (sandboxd.Image, error) {
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
	host, err := hostTar(ctx, e, 100, 128, 16384, n)
	if err != nil {
		return nil, err
	}
	e.logf("directory snapshot 200 MiB of small files: %v; the sentry's tar alone %v; host tar %v", ours, floor, host)
	figs = append(figs, snapshotFigures("directory snapshot, 200 MiB of 16 KiB files", "the sandbox's diff", "the same shape", ours, host, floor)...)

	// Create with that tree mounted, beside create without a mount,
	// alternating; more rounds than the snapshots (a create is cheap, about
	// 0.1 s here, and a 10% margin needs many samples to show through the
	// noise: five of each gave 0.92-1.21x in six runs).
	var with, without []time.Duration
	for i := range 2 * max(12, min(e.n, 20)) {
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
	e.logf("mount into a running sandbox %v; host tar %v", live, host.plain)
	figs = append(figs, newFigure("mount the 200 MiB tree into a running sandbox", "ms", durations(live)).
		against("host tar -cf of the same shape", durations(host.plain)).atMost(0.1, "<= 0.1x host tar (nothing copied)"))
	return figs, nil
}

// timings are the series of one snapshot figure, or of the host tar
// beside it, taken in turns: plain (not waiting for the disk, memory
// recycled: the previous output deleted), synced (waiting until durable,
// memory recycled) and kept (plain, every output kept until the section
// ends: new memory).
type timings struct {
	plain, synced, kept []time.Duration
}

func (t timings) String() string {
	return fmt.Sprintf("plain %v, waiting until durable %v, outputs kept %v", t.plain, t.synced, t.kept)
}

// snapshotFigures are the lines of one snapshot figure: the targeted one
// (plain, against plain host tar), then, without targets, the same waiting
// until durable, the same with every output kept, and the engine's floor.
func snapshotFigures(metric, diff, data string, ours, host timings, floor []time.Duration) []figure {
	return []figure{
		newFigure(metric, "ms", durations(ours.plain)).
			against("host tar -cf of "+data+" (no fsync)", durations(host.plain)).atMost(1.5, "<= 1.5x host tar"),
		newFigure("  the same snapshots, waiting until durable", "ms", durations(ours.synced)).
			against("host tar -cf + fsync of the tar", durations(host.synced)),
		newFigure("  the same snapshots, every image kept (new memory)", "ms", durations(ours.kept)).
			against("host tar -cf, every tar kept", durations(host.kept)),
		newFigure("  engine floor: the sentry's tar of "+diff+" to /dev/null", "ms", durations(floor)).
			against("host tar -cf of "+data, durations(host.plain)),
	}
}

// snapshotRounds times n rounds of three snapshots each taken by snap: one
// by default, one waiting until durable, and one by default that is kept.
// Before each, a new stamp is written at the path stamp in sb, so that each
// stores a new layer; after each default one, it waits (untimed) until its
// image is durable. The image of each of the first two kinds is deleted
// before the stamp of the next of those kinds is written (as hostTar
// removes its previous tar before the next plain or synced run); those of
// the third kind are appended to images.
func snapshotRounds(ctx context.Context, e *env, sb *sandboxd.Sandbox, stamp string, n int, images *[]string,
	snap func(sandboxd.SnapshotOptions) (sandboxd.Image, error)) (timings, error) {
	var t timings
	var flushes []time.Duration
	recycled := "" // the image to delete before the next of the first two kinds
	for i := range n {
		for kind, series := range []*[]time.Duration{&t.plain, &t.synced, &t.kept} {
			wait := kind == 1
			if kind != 2 && recycled != "" {
				if err := e.client.DeleteImage(ctx, recycled); err != nil {
					return t, fmt.Errorf("delete image %s: %w", recycled, err)
				}
				recycled = ""
			}
			if err := shell(ctx, sb, fmt.Sprintf("echo %d-%d > %s", i, kind, stamp)); err != nil {
				return t, err
			}
			t0 := time.Now()
			img, err := snap(sandboxd.SnapshotOptions{WaitDurable: wait})
			if err != nil {
				return t, err
			}
			*series = append(*series, time.Since(t0))
			if wait && !img.Durable {
				return t, fmt.Errorf("snapshot %s waited until durable, but its image is not durable", img.ID)
			}
			if !wait {
				flush, err := untilDurable(ctx, e, img.ID)
				if err != nil {
					return t, err
				}
				flushes = append(flushes, flush)
			}
			if kind == 2 {
				*images = append(*images, img.ID)
			} else {
				recycled = img.ID
			}
		}
	}
	if recycled != "" {
		if err := e.client.DeleteImage(ctx, recycled); err != nil {
			return t, fmt.Errorf("delete image %s: %w", recycled, err)
		}
	}
	e.logf("  the default snapshots' layers became durable %v after their calls returned", flushes)
	return t, nil
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
// host and times n rounds of `tar -cf` of them into a file beside them, in
// the three kinds of timings: plain (the previous plain or synced tar
// removed first), synced (the same followed by an fsync of the tar file)
// and kept (into a new file each time, all kept until the end).
func hostTar(ctx context.Context, e *env, dirs, files, size, n int) (timings, error) {
	var t timings
	dir, err := os.MkdirTemp(e.raw.dir, "hosttar-")
	if err != nil {
		return t, err
	}
	defer os.RemoveAll(dir)
	buf := make([]byte, size)
	for d := range dirs {
		sub := filepath.Join(dir, "data", fmt.Sprint("d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return t, err
		}
		for f := range files {
			rand.Read(buf)
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprint("f", f)), buf, 0o644); err != nil {
				return t, err
			}
		}
	}
	out := filepath.Join(dir, "out.tar")
	for i := range n {
		for kind, series := range []*[]time.Duration{&t.plain, &t.synced, &t.kept} {
			o := out
			if kind == 2 {
				o = filepath.Join(dir, fmt.Sprintf("kept-%d.tar", i))
			} else {
				os.Remove(out)
			}
			t0 := time.Now()
			cmd := exec.CommandContext(ctx, "tar", "-C", filepath.Join(dir, "data"), "-cf", o, ".")
			if b, err := cmd.CombinedOutput(); err != nil {
				return t, fmt.Errorf("host tar: %v: %s", err, b)
			}
			if kind == 1 {
				if err := fsutil.SyncPath(o); err != nil {
					return t, fmt.Errorf("host tar: %w", err)
				}
			}
			*series = append(*series, time.Since(t0))
		}
	}
	return t, nil
}
