package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// fakeCommander records invocations and answers by subcommand.
type fakeCommander struct {
	calls [][]string
	out   map[string]string // subcommand -> stdout
	errs  map[string]error  // subcommand -> error
}

func (f *fakeCommander) run(_ context.Context, inv invocation) ([]byte, error) {
	f.calls = append(f.calls, inv.args)
	sub := subcommand(inv.args)
	if err := f.errs[sub]; err != nil {
		return nil, err
	}
	return []byte(f.out[sub]), nil
}

// withoutGlobals drops the global flags with values so subcommand() finds
// the subcommand.
func withoutGlobals(args []string) []string {
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--root", "--platform", "--network", "--overlay2", "--log", "--debug-log":
			i++
		case "--debug":
		default:
			return args[i:]
		}
	}
	return nil
}

func newFake(t *testing.T, ids ...string) (*Runtime, *fakeCommander) {
	t.Helper()
	f := &fakeCommander{out: map[string]string{}, errs: map[string]error{}}
	root := t.TempDir()
	for _, id := range ids {
		addState(t, root, id)
	}
	r, err := newRuntime(Config{RootDir: root, CgroupRoot: t.TempDir()}, nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return r, f
}

func addState(t *testing.T, root, id string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, id+"_sandbox:"+id+".state"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tempSpec(t *testing.T, id string) Spec {
	d := t.TempDir()
	for _, sub := range []string{"bundle", "rootfs", "scratch"} {
		os.Mkdir(filepath.Join(d, sub), 0o700)
	}
	return Spec{ID: id, BundleDir: filepath.Join(d, "bundle"), RootfsPath: filepath.Join(d, "rootfs"),
		ScratchDir: filepath.Join(d, "scratch"), LogPath: filepath.Join(d, "init.log"), Args: []string{"/bin/true"}}
}

func TestRunArgs(t *testing.T) {
	tests := []struct {
		name, netns, wantNetwork string
	}{
		{"no netns", "", "none"},
		{"netns", "/run/netns/a", "sandbox"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, f := newFake(t)
			s := tempSpec(t, "sb-0000000000000001")
			s.NetNSPath = tt.netns
			if err := r.Run(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			args := f.calls[0]
			if got := flagValue(args, "--network"); got != tt.wantNetwork {
				t.Errorf("got --network %q, want %q", got, tt.wantNetwork)
			}
			if got, want := flagValue(args, "--overlay2"), "all:dir="+s.ScratchDir; got != want {
				t.Errorf("got --overlay2 %q, want %q", got, want)
			}
			if got := withoutGlobals(args); !slices.Equal(got, []string{"run", "--detach", "--bundle", s.BundleDir, s.ID}) {
				t.Errorf("got %v", got)
			}
			if _, err := os.Stat(filepath.Join(s.BundleDir, "config.json")); err != nil {
				t.Errorf("config.json: %v", err)
			}
		})
	}
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func TestRunRejectsPrefixCollision(t *testing.T) {
	for _, existing := range []string{"sb-01", "sb-0123", "sb-012"} {
		t.Run(existing, func(t *testing.T) {
			r, f := newFake(t, existing)
			err := r.Run(context.Background(), tempSpec(t, "sb-012"))
			if !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Errorf("got %v, want ErrAlreadyExists", err)
			}
			if len(f.calls) != 0 {
				t.Errorf("got runsc calls %v, want none", f.calls)
			}
		})
	}
}

func TestUnknownIDIsNotFound(t *testing.T) {
	// "sb-01" is a prefix of a live id: runsc would match it, we must not.
	r, f := newFake(t, "sb-0123")
	ctx := context.Background()
	_, stErr := r.State(ctx, "sb-01")
	_, waitErr := r.Wait(ctx, "sb-01")
	for name, err := range map[string]error{
		"kill":       r.Kill(ctx, "sb-01", syscall.SIGKILL, false),
		"delete":     r.Delete(ctx, "sb-01", true),
		"state":      stErr,
		"wait":       waitErr,
		"checkpoint": r.Checkpoint(ctx, "sb-01", "/img", CheckpointOpts{}),
	} {
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("%s: got %v, want ErrNotFound", name, err)
		}
	}
	if len(f.calls) != 0 {
		t.Errorf("got runsc calls %v, want none", f.calls)
	}
}

func TestStateAndWaitParse(t *testing.T) {
	r, f := newFake(t, "sb-1")
	f.out["state"] = `{"ociVersion":"1.2.1","id":"sb-1","status":"running","pid":42,"bundle":"/b","created":"2026-01-02T03:04:05Z"}`
	f.out["wait"] = `{"id":"sb-1","exitStatus":7}`
	st, err := r.State(context.Background(), "sb-1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusRunning || st.Pid != 42 || st.Bundle != "/b" {
		t.Errorf("got %+v", st)
	}
	code, err := r.Wait(context.Background(), "sb-1")
	if err != nil || code != 7 {
		t.Errorf("got %d, %v; want 7, nil", code, err)
	}
}

func TestKillDeleteArgs(t *testing.T) {
	r, f := newFake(t, "sb-1")
	ctx := context.Background()
	if err := r.Kill(ctx, "sb-1", syscall.SIGTERM, true); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, "sb-1", true); err != nil {
		t.Fatal(err)
	}
	if err := r.Checkpoint(ctx, "sb-1", "/img", CheckpointOpts{LeaveRunning: true}); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"kill", "--all", "sb-1", "15"},
		{"delete", "--force", "sb-1"},
		{"checkpoint", "--image-path", "/img", "--leave-running", "sb-1"},
	}
	for i, w := range want {
		if got := withoutGlobals(f.calls[i]); !slices.Equal(got, w) {
			t.Errorf("call %d: got %v, want %v", i, got, w)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		detail string
		want   error
	}{
		{"FetchSpec failed: loading container: file does not exist", errdefs.ErrNotFound},
		{"cannot delete container that is not stopped without --force flag", errdefs.ErrFailedPrecondition},
		{"creating container: container with id x already exists", errdefs.ErrAlreadyExists},
		{"something odd", errdefs.ErrInternal},
	}
	for _, tt := range tests {
		t.Run(tt.detail, func(t *testing.T) {
			err := classify(&runscError{args: []string{"delete"}, code: 128, detail: tt.detail}, "delete x")
			if got := errdefs.Class(err); got != tt.want {
				t.Errorf("got class %v, want %v", got, tt.want)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("got %q, want runsc's text in it", err)
			}
		})
	}
}

func TestCleanupCgroups(t *testing.T) {
	r, _ := newFake(t)
	cg := r.cfg.CgroupRoot
	for _, ctrl := range []string{"memory", "cpu", "pids"} {
		os.MkdirAll(filepath.Join(cg, ctrl, "sandboxd", "sb-1", "child"), 0o755)
		os.MkdirAll(filepath.Join(cg, ctrl, "sandboxd", "sb-2"), 0o755)
	}
	left, err := r.LeftoverCgroups()
	if err != nil || len(left) != 6 {
		t.Fatalf("got %v, %v; want 6 dirs", left, err)
	}
	for range 2 { // idempotent
		if err := r.Cleanup(context.Background(), "sb-1"); err != nil {
			t.Fatal(err)
		}
	}
	left, _ = r.LeftoverCgroups()
	for _, d := range left {
		if strings.Contains(d, "sb-1") {
			t.Errorf("got leftover %s", d)
		}
	}
	if len(left) != 3 {
		t.Errorf("got %v, want the 3 sb-2 dirs", left)
	}
}

// Close unmounts the runsc root's null-netns however many times it was
// mounted (runsc processes started together each mount it) and removes it.
func TestCloseUnmountsStackedNullNetns(t *testing.T) {
	requireEngine(t) // root, for the mounts
	r, _ := newFake(t)
	p := filepath.Join(r.cfg.RootDir, "null-netns")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := unix.Mount("/proc/self/ns/net", p, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for unix.Unmount(p, unix.MNT_DETACH) == nil {
		}
	})
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if b, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(b), p) {
		t.Errorf("%s still mounted after Close", p)
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after Close: %v", p, err)
	}
}
