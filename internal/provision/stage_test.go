package provision

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/testutil"
)

// requireRoot: see testutil.RequireRoot.
func requireRoot(t testing.TB) { testutil.RequireRoot(t, "mounts") }

// dirLayers is a layer store whose layer "sha256:<name>" is the directory
// root/<name>.
type dirLayers struct{ root string }

func (l dirLayers) MountRootfs(ctx context.Context, layers []image.Digest, upper, work, target string) error {
	return errors.New("not in this fake")
}

func (l dirLayers) ImageDir(ctx context.Context, layers []image.Digest, target string) (string, error) {
	if len(layers) != 1 {
		return "", errors.New("one layer only in this fake")
	}
	return filepath.Join(l.root, strings.TrimPrefix(string(layers[0]), "sha256:")), nil
}

// propagation returns the optional fields of mountpoint p's mountinfo line
// (e.g. "shared:12"), or "" when p is no mount point.
func propagation(t *testing.T, p string) (string, bool) {
	t.Helper()
	raw, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 7 && f[4] == p {
			opt, _, _ := strings.Cut(strings.Join(f[6:], " "), " - ")
			return opt, true
		}
	}
	return "", false
}

func TestStagingDir(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	root := t.TempDir()
	layer := filepath.Join(root, "layers", "aa")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(layer, "f"), []byte("stored"), 0o644)
	p := &Provisioner{dir: filepath.Join(root, "sandboxes"), layers: dirLayers{filepath.Join(root, "layers")},
		log: slog.New(slog.DiscardHandler)}
	h := sandbox.Handle{ID: "sb-0123456789abcdef"}
	dir := p.sandboxDir(h.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	defer p.removeDir(h.ID)
	img := sandbox.ImageInfo{ID: "im-1", Layers: []string{"sha256:aa"}}

	if err := p.StageImage(ctx, h, "m1", img); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("stage without a staging dir: got %v, want ErrFailedPrecondition", err)
	}
	m, err := makeStage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != stageDir(dir) || !m.ReadOnly {
		t.Errorf("spec mount: got %+v, want the staging dir read-only", m)
	}
	if opt, ok := propagation(t, stageDir(dir)); !ok || !strings.Contains(opt, "shared:") {
		t.Errorf("staging dir: got %q (mounted %v), want a shared mount point", opt, ok)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := p.StageImage(ctx, h, "m1", img); err != nil {
			t.Fatal(err)
		}
	}
	staged := filepath.Join(stageDir(dir), "m1")
	if b, err := os.ReadFile(filepath.Join(staged, "f")); string(b) != "stored" {
		t.Errorf("staged file: got %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(staged, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write through the staged dir: got %v, want EROFS", err)
	}
	if mps, _ := image.MountPointsUnder(staged); len(mps) != 1 {
		t.Errorf("staged twice: got mounts %v, want one", mps)
	}
	if err := p.StageImage(ctx, h, "../x", img); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad stage name: got %v, want ErrInvalidArgument", err)
	}

	if err := p.SyncStage(ctx, h, []sandbox.StagedImage{{Stage: "m2", Image: img}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(staged); !os.IsNotExist(err) {
		t.Errorf("m1 after the sync: %v, want it gone", err)
	}
	if _, ok := propagation(t, filepath.Join(stageDir(dir), "m2")); !ok {
		t.Error("m2 not staged by the sync")
	}
	if err := p.removeDir(h.ID); err != nil {
		t.Fatal(err)
	}
	if mps, _ := image.MountPointsUnder(root); len(mps) != 0 {
		t.Errorf("left mounted: %v", mps)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("sandbox dir: %v, want it removed", err)
	}
	if b, _ := os.ReadFile(filepath.Join(layer, "f")); string(b) != "stored" {
		t.Errorf("stored layer after teardown: got %q", b)
	}
}
