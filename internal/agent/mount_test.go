package agent

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// fakeMounter records mounts by target; it can fail one fstype, and report
// a target busy to a plain unmount. Unmounting a tmpfs empties its dir.
type fakeMounter struct {
	mounted map[string]string // target -> fstype
	log     []string
	failFS  string
	busy    string
}

func (f *fakeMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	if fstype == f.failFS {
		return syscall.EINVAL
	}
	f.mounted[target] = fstype
	f.log = append(f.log, "mount "+fstype+" "+target+" "+data)
	return nil
}

func (f *fakeMounter) Unmount(target string, flags int) error {
	if target == f.busy && flags == 0 {
		return syscall.EBUSY
	}
	fstype, ok := f.mounted[target]
	if !ok {
		return syscall.EINVAL
	}
	if fstype == "tmpfs" { // what was made in it goes with it
		entries, _ := os.ReadDir(target)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(target, e.Name()))
		}
	}
	delete(f.mounted, target)
	f.log = append(f.log, "umount "+target)
	return nil
}

func newTestMounts(t *testing.T) (*imageMounts, *fakeMounter, string) {
	root := t.TempDir()
	fm := &fakeMounter{mounted: map[string]string{}}
	m := newImageMounts(fm)
	m.stageDir, m.upperD = filepath.Join(root, "stage"), filepath.Join(root, "upper")
	if err := os.MkdirAll(filepath.Join(m.stageDir, "m1"), 0o751); err != nil {
		t.Fatal(err)
	}
	return m, fm, root
}

func TestCheckMountRequest(t *testing.T) {
	for _, tc := range []struct {
		name, stage, path string
		ok                bool
	}{
		{"plain", "m1", "/work/proj", true},
		{"relative", "m1", "work", false},
		{"unclean", "m1", "/work/../etc", false},
		{"trailing slash", "m1", "/work/", false},
		{"root", "m1", "/", false},
		{"engine dir", "m1", "/.sandboxd/stage/x", false},
		{"proc", "m1", "/proc", false},
		{"like proc", "m1", "/procx", true},
		{"stage with slash", "m1/../x", "/w", false},
		{"stage upper case", "M1", "/w", false},
		{"empty stage", "", "/w", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkMountRequest(tc.stage, tc.path)
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestMountUnmountOrder(t *testing.T) {
	m, fm, root := newTestMounts(t)
	target := filepath.Join(root, "work", "proj") // made, with its parents
	if err := m.mount("m1", target); err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(m.upperD, "m1")
	want := []string{
		"mount tmpfs " + upper + " mode=0700",
		"mount overlay " + target + " lowerdir=" + filepath.Join(m.stageDir, "m1") + ",upperdir=" + upper + "/u,workdir=" + upper + "/w",
	}
	if !slices.Equal(fm.log, want) {
		t.Errorf("got %q, want %q", fm.log, want)
	}
	if fi, err := os.Stat(filepath.Join(upper, "u")); err != nil || fi.Mode().Perm() != 0o751 {
		t.Errorf("upper dir: got %v %v, want the staged dir's mode 0751", fi.Mode(), err)
	}
	if err := m.mount("m1", target); err != nil {
		t.Errorf("mount again at the same place: %v", err)
	}
	if err := m.mount("m1", "/elsewhere"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("mount the stage elsewhere: got %v, want ErrAlreadyExists", err)
	}
	fm.busy = target
	if err := m.unmount("m1", target); err != nil {
		t.Fatal(err)
	}
	if len(fm.mounted) != 0 {
		t.Errorf("after unmount: still mounted %v", fm.mounted)
	}
	if _, err := os.Stat(upper); !os.IsNotExist(err) {
		t.Errorf("upper dir left: %v", err)
	}
	if err := m.unmount("m1", target); err != nil {
		t.Errorf("unmount twice: %v", err)
	}
}

func TestMountFailuresLeaveNothing(t *testing.T) {
	m, fm, root := newTestMounts(t)
	fm.failFS = "overlay"
	if err := m.mount("m1", filepath.Join(root, "w")); err == nil {
		t.Fatal("mount with a failing overlay succeeded")
	}
	if len(fm.mounted) != 0 || len(m.targets) != 0 {
		t.Errorf("after a failed overlay: mounted %v, targets %v", fm.mounted, m.targets)
	}
	if _, err := os.Stat(filepath.Join(m.upperD, "m1")); !os.IsNotExist(err) {
		t.Errorf("upper dir left: %v", err)
	}
	fm.failFS = ""
	if err := m.mount("m2", filepath.Join(root, "w")); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("unstaged image: got %v, want ErrFailedPrecondition", err)
	}
	file := filepath.Join(root, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	if err := m.mount("m1", filepath.Join(file, "sub")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a file on the way: got %v, want ErrFailedPrecondition", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Errorf("the file on the way was changed: %q", b)
	}
	if len(fm.mounted) != 0 {
		t.Errorf("mounted %v, want nothing", fm.mounted)
	}
}
