package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Timings to a running init. Run with:
//
//	go test -run '^$' -bench . -benchtime 10x ./internal/runtime

// BenchmarkRunDetach times Runtime.Run (runsc run --detach) of a sleeping
// busybox until the init runs; the container is removed outside the timer.
func BenchmarkRunDetach(b *testing.B) {
	e := newEngine(b)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		s := e.spec(b, "/bin/sleep", "1000")
		b.StartTimer()
		if err := e.rt.Run(ctx, s); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := e.rt.Cleanup(ctx, s.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkCreateStart times runsc create followed by runsc start with the
// same flags as Run, for comparison with BenchmarkRunDetach.
func BenchmarkCreateStart(b *testing.B) {
	e := newEngine(b)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		s := e.spec(b, "/bin/sleep", "1000")
		if err := writeSpec(&s, e.rt.CgroupsPath(s.ID)); err != nil {
			b.Fatal(err)
		}
		log, _ := os.Create(s.LogPath)
		global := e.rt.sandboxArgs(&s, "")
		b.StartTimer()
		for _, sub := range [][]string{{"create", "--bundle", s.BundleDir, s.ID}, {"start", s.ID}} {
			if _, err := e.rt.cmd.run(ctx, invocation{args: append(append([]string(nil), global...), sub...), stdout: log, stderr: log}); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		log.Close()
		if err := e.rt.Cleanup(ctx, s.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkRawRunEcho times a plain foreground `runsc run` of /bin/echo hi,
// end to end (create, run, exit, delete), outside this package's code.
func BenchmarkRawRunEcho(b *testing.B) {
	e := newEngine(b)
	for b.Loop() {
		b.StopTimer()
		s := e.spec(b, "/bin/echo", "hi")
		if err := writeSpec(&s, e.rt.CgroupsPath(s.ID)); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(runscPath, "--root", e.rt.cfg.RootDir, "--network", "none",
			"--overlay2", "all:dir="+s.ScratchDir, "run", "--bundle", s.BundleDir, s.ID)
		b.StartTimer()
		out, err := cmd.Output()
		b.StopTimer()
		if err != nil || string(out) != "hi\n" {
			b.Fatalf("got %q, %v; want hi", out, err)
		}
		// A foreground run leaves its cgroup dirs (seen on this machine).
		e.rt.Cleanup(context.Background(), s.ID)
		os.RemoveAll(filepath.Dir(s.BundleDir))
		b.StartTimer()
	}
}
