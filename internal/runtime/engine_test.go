package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

const runscPath = "/usr/local/bin/runsc"

// requireEngine skips the test when it cannot run the real runsc (not root,
// no runsc, no busybox), and fails instead when CI=true: a skipped
// end-to-end suite in CI is a bug.
func requireEngine(t testing.TB) {
	t.Helper()
	reason := ""
	switch {
	case os.Geteuid() != 0:
		reason = "needs root"
	case !executable(runscPath):
		reason = "needs " + runscPath
	case busyboxPath() == "":
		reason = "needs a static busybox (busybox-static)"
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("engine test cannot run in CI: %s", reason)
	}
	t.Skip(reason)
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&0o111 != 0
}

func busyboxPath() string {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if executable(p) {
			return p
		}
	}
	return ""
}

// newID returns an id of our fixed form: "sb-" and 16 hex characters.
func newID(t testing.TB) string {
	b := make([]byte, 8)
	rand.Read(b)
	return "sb-" + hex.EncodeToString(b)
}

// makeBusyboxRootfs builds a busybox root file system in dir.
func makeBusyboxRootfs(t testing.TB, dir string) {
	t.Helper()
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(busyboxPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sh", "echo", "sleep", "cat", "ls", "true", "dd", "seq", "rm", "touch", "test"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
}

type engineEnv struct {
	rt   *Runtime
	base string
}

// newEngine returns a Runtime over a fresh root dir and a unique cgroup
// parent; t.Cleanup removes every container it made and checks that
// nothing is left.
func newEngine(t testing.TB) *engineEnv {
	t.Helper()
	requireEngine(t)
	base := t.TempDir()
	parent := "/sandboxd-test-" + strings.TrimPrefix(newID(t), "sb-")
	rt, err := New(Config{RunscPath: runscPath, RootDir: filepath.Join(base, "root"),
		LogDir: filepath.Join(base, "logs"), CgroupParent: parent},
		slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ids, _ := rt.List()
		for _, id := range ids {
			if err := rt.Cleanup(ctx, id); err != nil {
				t.Errorf("cleanup %s: %v", id, err)
			}
		}
		if err := rt.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), base) {
			t.Errorf("got mounts under %s left", base)
		}
		if left, _ := rt.LeftoverCgroups(); len(left) > 0 {
			t.Errorf("got leftover cgroups %v", left)
		}
		for _, d := range rt.cgroupDirs(parent) {
			os.Remove(d)
		}
	})
	return &engineEnv{rt: rt, base: base}
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// spec returns a Spec with its own rootfs, bundle and scratch dirs.
func (e *engineEnv) spec(t testing.TB, args ...string) Spec {
	t.Helper()
	id := newID(t)
	d := filepath.Join(e.base, id)
	s := Spec{ID: id, BundleDir: filepath.Join(d, "bundle"), RootfsPath: filepath.Join(d, "rootfs"),
		ScratchDir: filepath.Join(d, "scratch"), LogPath: filepath.Join(d, "init.log"), Args: args}
	for _, p := range []string{s.BundleDir, s.RootfsPath, s.ScratchDir} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	makeBusyboxRootfs(t, s.RootfsPath)
	return s
}

func readLog(t testing.TB, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEngineEchoExitCodeStateList(t *testing.T) {
	e := newEngine(t)
	ctx := t.Context()
	s := e.spec(t, "/bin/sh", "-c", "echo hello from $(hostname); sleep 1; exit 7")
	if err := e.rt.Run(ctx, s); err != nil {
		t.Fatal(err)
	}
	st, err := e.rt.State(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusRunning || st.Pid <= 0 {
		t.Errorf("got state %+v, want running with a pid", st)
	}
	ids, err := e.rt.List()
	if err != nil || len(ids) != 1 || ids[0] != s.ID {
		t.Errorf("got list %v, %v; want [%s]", ids, err, s.ID)
	}
	code, err := e.rt.Wait(ctx, s.ID)
	if err != nil || code != 7 {
		t.Errorf("got exit %d, %v; want 7", code, err)
	}
	if got := readLog(t, s.LogPath); !strings.Contains(got, "hello from "+s.ID) {
		t.Errorf("got log %q, want the greeting", got)
	}
	if err := e.rt.WaitStopped(ctx, s.ID, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Delete(ctx, s.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.State(ctx, s.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("state after delete: got %v, want ErrNotFound", err)
	}
}

func TestEngineKillDelete(t *testing.T) {
	e := newEngine(t)
	ctx := t.Context()
	s := e.spec(t, "/bin/sleep", "1000")
	s.Resources = Resources{CPUs: 0.5, MemoryBytes: 128 << 20, Pids: 100}
	if err := e.rt.Run(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Delete(ctx, s.ID, false); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("delete of a running container: got %v, want ErrFailedPrecondition", err)
	}
	// The limits reached the cgroup.
	mem := filepath.Join(e.rt.cfg.CgroupRoot, "memory", e.rt.CgroupsPath(s.ID), "memory.limit_in_bytes")
	if b, err := os.ReadFile(mem); err == nil && strings.TrimSpace(string(b)) != "134217728" {
		t.Errorf("got memory limit %s, want 134217728", b)
	}
	waited := make(chan int, 1)
	go func() { code, _ := e.rt.Wait(ctx, s.ID); waited <- code }()
	time.Sleep(100 * time.Millisecond)
	if err := e.rt.Kill(ctx, s.ID, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-waited:
		if code != 128+9 {
			t.Errorf("got exit %d, want 137", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return after kill")
	}
	if err := e.rt.Delete(ctx, s.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Kill(ctx, s.ID, syscall.SIGKILL, false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("kill after delete: got %v, want ErrNotFound", err)
	}
}

func TestEngineMemoryLimit(t *testing.T) {
	e := newEngine(t)
	ctx := t.Context()
	// dd allocates its 256 MiB block: over a 64 MiB limit the sandbox dies.
	s := e.spec(t, "/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1")
	s.Resources.MemoryBytes = 64 << 20
	if err := e.rt.Run(ctx, s); err != nil {
		t.Fatal(err)
	}
	code, err := e.rt.Wait(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 || strings.Contains(readLog(t, s.LogPath), "records out") {
		t.Errorf("got exit %d (log %q), want the sandbox killed", code, readLog(t, s.LogPath))
	}
	t.Logf("exit code over the memory limit: %d", code)
}

// TestEngineOverlayRoot runs on a host overlayfs root with a writable bind
// mount and checks that the sandbox's writes land in neither.
func TestEngineOverlayRoot(t *testing.T) {
	e := newEngine(t)
	ctx := t.Context()
	s := e.spec(t, "/bin/sh", "-c",
		"echo x > /newfile && rm /bin/cat && echo y > /data/inbind && echo z > /data/keep && ls /data && echo ok && sleep 1")
	lower := s.RootfsPath
	d := filepath.Dir(lower)
	upper, work, merged, bind := filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "merged"), filepath.Join(d, "bind")
	for _, p := range []string{upper, work, merged, bind} {
		os.MkdirAll(p, 0o700)
	}
	os.WriteFile(filepath.Join(bind, "keep"), []byte("host\n"), 0o600)
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
	s.RootfsPath = merged
	s.Mounts = []Mount{{Source: bind, Destination: "/data"}}
	if err := e.rt.Run(ctx, s); err != nil {
		t.Fatal(err)
	}
	if code, err := e.rt.Wait(ctx, s.ID); err != nil || code != 0 {
		t.Fatalf("got exit %d, %v (log %q); want 0", code, err, readLog(t, s.LogPath))
	}
	if got := readLog(t, s.LogPath); !strings.Contains(got, "ok") {
		t.Errorf("got log %q, want ok", got)
	}
	// The host overlay's upper layer only holds mount points the gofer made.
	filepath.WalkDir(upper, func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			t.Errorf("got host file %s from the sandbox, want none", p)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(lower, "bin", "cat")); err != nil {
		t.Errorf("lower /bin/cat: %v", err)
	}
	entries, _ := os.ReadDir(bind)
	if len(entries) != 1 {
		t.Errorf("got %d entries in the bind source, want only keep", len(entries))
	}
	if b, _ := os.ReadFile(filepath.Join(bind, "keep")); string(b) != "host\n" {
		t.Errorf("got bind file %q, want unchanged", b)
	}
}

func TestEngineCleanup(t *testing.T) {
	e := newEngine(t)
	ctx := t.Context()
	s := e.spec(t, "/bin/sleep", "1000")
	if err := e.rt.Run(ctx, s); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.rt.Cleanup(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(runscPath, "--root", e.rt.cfg.RootDir, "list", "--quiet").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("runsc list: got %q, %v; want empty", out, err)
	}
	if left, _ := e.rt.LeftoverCgroups(); len(left) != 0 {
		t.Errorf("got cgroups %v, want none", left)
	}
	if err := e.rt.Close(); err != nil {
		t.Fatal(err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), e.base) {
		t.Errorf("got mounts under %s left in /proc/self/mountinfo", e.base)
	}
}

func TestEngineRejectsPrefix(t *testing.T) {
	e := newEngine(t)
	ctx := t.Context()
	s := e.spec(t, "/bin/sleep", "1000")
	if err := e.rt.Run(ctx, s); err != nil {
		t.Fatal(err)
	}
	s2 := e.spec(t, "/bin/true")
	s2.ID = s.ID[:8]
	if err := e.rt.Run(ctx, s2); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("got %v, want ErrAlreadyExists", err)
	}
	if err := e.rt.Kill(ctx, s.ID[:8], syscall.SIGKILL, false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("kill by prefix: got %v, want ErrNotFound", err)
	}
}

func TestEngineRunError(t *testing.T) {
	e := newEngine(t)
	s := e.spec(t, "/bin/does-not-exist")
	err := e.rt.Run(t.Context(), s)
	if err == nil {
		t.Fatal("got nil, want an error for a missing binary")
	}
	t.Logf("run error: %v", err)
	if !strings.Contains(err.Error(), "does-not-exist") {
		t.Errorf("got %q, want runsc's reason in it", err)
	}
}

func TestEngineCheckpointRestore(t *testing.T) {
	e := newEngine(t)
	ctx := t.Context()
	s := e.spec(t, "/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done")
	if err := e.rt.Run(ctx, s); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	img := filepath.Join(e.base, "image")
	os.Mkdir(img, 0o700)
	if err := e.rt.Checkpoint(ctx, s.ID, img, CheckpointOpts{}); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Cleanup(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	r := s
	r.ID = newID(t)
	r.ScratchDir = filepath.Join(e.base, r.ID+"-scratch")
	r.LogPath = filepath.Join(e.base, r.ID+".log")
	os.Mkdir(r.ScratchDir, 0o700)
	if err := e.rt.Restore(ctx, r, img); err != nil {
		t.Fatal(err)
	}
	st, err := e.rt.State(ctx, r.ID)
	if err != nil || st.Status != StatusRunning {
		t.Fatalf("got %+v, %v; want running", st, err)
	}
	// The counter in the restored overlay goes on from where it was.
	out, err := exec.Command(runscPath, "--root", e.rt.cfg.RootDir, "exec", r.ID, "/bin/cat", "/tmp/count").Output()
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if n := strings.TrimSpace(string(out)); n == "" || n == "0" || n == "1" {
		t.Errorf("got counter %q after restore, want it carried on", n)
	}
	t.Logf("counter after restore: %s", out)
}
