package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/store"
)

// stageProv is fakeProv with an ImageStager that records what is staged.
type stageProv struct {
	*fakeProv
	smu    sync.Mutex
	staged map[string]bool // stage names
	synced [][]string
	fail   error
}

func (p *stageProv) StageImage(ctx context.Context, h Handle, name string, img ImageInfo) error {
	p.smu.Lock()
	defer p.smu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.staged[name] = true
	return nil
}

func (p *stageProv) UnstageImage(ctx context.Context, h Handle, name string) error {
	p.smu.Lock()
	defer p.smu.Unlock()
	delete(p.staged, name)
	return nil
}

func (p *stageProv) SyncStage(ctx context.Context, h Handle, staged []StagedImage) error {
	p.smu.Lock()
	defer p.smu.Unlock()
	var names []string
	for _, s := range staged {
		names = append(names, s.Stage)
	}
	p.synced = append(p.synced, names)
	return nil
}

// mountAgent is fakeAgent with a MountAgent that records mounts by path.
type mountAgent struct {
	*fakeAgent
	mu      sync.Mutex
	mounted map[string]string // path -> stage
	calls   int
	fail    error
}

func (a *mountAgent) MountImage(ctx context.Context, stage, path string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.fail != nil {
		return a.fail
	}
	a.mounted[path] = stage
	return nil
}

func (a *mountAgent) UnmountImage(ctx context.Context, stage, path string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mounted[path] == stage {
		delete(a.mounted, path)
	}
	return nil
}

type mountDialer struct{ a *mountAgent }

// mountImages is fakeImages that also resolves its image by id.
type mountImages struct{ fakeImages }

func (i mountImages) ResolveImage(ctx context.Context, ref string) (ImageInfo, error) {
	if ref == "im-1" {
		ref = "busybox"
	}
	return i.fakeImages.ResolveImage(ctx, ref)
}

func (d mountDialer) Dial(addr, token string) (AgentConn, error) { return d.a, nil }

func newMountEnv(t *testing.T) (*Manager, *stageProv, *mountAgent, func() *Manager) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	prov := &stageProv{fakeProv: &fakeProv{alive: map[string]bool{}}, staged: map[string]bool{}}
	agent := &mountAgent{fakeAgent: &fakeAgent{}, mounted: map[string]string{}}
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	start := func() *Manager {
		m := New(Config{DataDir: dir, DefaultImage: "busybox", LivenessInterval: 10 * time.Millisecond}, Deps{
			DB: db, Provisioner: prov, Agents: mountDialer{agent}, Images: mountImages{}, Secrets: fakeSecrets{},
			Clock: clk, Logger: slog.New(slog.DiscardHandler),
		})
		t.Cleanup(m.Close)
		return m
	}
	return start(), prov, agent, start
}

func TestLiveMountRecordUseAndUnmount(t *testing.T) {
	m, prov, agent, _ := newMountEnv(t)
	ctx := context.Background()
	sb, err := m.Create(ctx, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	lm, err := m.MountImage(ctx, sb.ID, "busybox", "/work/proj/")
	if err != nil {
		t.Fatal(err)
	}
	if lm.Path != "/work/proj" || lm.ImageID != "im-1" || !prov.staged[lm.Stage] || agent.mounted["/work/proj"] != lm.Stage {
		t.Errorf("got %+v, staged %v, agent %v; want it staged and mounted at /work/proj", lm, prov.staged, agent.mounted)
	}
	users, err := m.ImageUsers(ctx)
	if err != nil || !slices.Contains(users["im-1"], sb.ID) {
		t.Errorf("image users: got %v (%v), want im-1 used by %s", users, err, sb.ID)
	}
	if err := m.UnmountImage(ctx, sb.ID, "/work/proj"); err != nil {
		t.Fatal(err)
	}
	if len(prov.staged) != 0 || len(agent.mounted) != 0 {
		t.Errorf("after unmount: staged %v, agent %v; want nothing", prov.staged, agent.mounted)
	}
	if err := m.UnmountImage(ctx, sb.ID, "/work/proj"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second unmount: got %v, want ErrNotFound", err)
	}
	// A sandbox's end forgets its live mounts.
	if _, err := m.MountImage(ctx, sb.ID, "busybox", "/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Terminate(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if lms, _ := m.repo.liveMounts(ctx, sb.ID); len(lms) != 0 {
		t.Errorf("after terminate: got records %+v, want none", lms)
	}
	if _, err := m.MountImage(ctx, sb.ID, "busybox", "/y"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("mount into a finished sandbox: got %v, want ErrFailedPrecondition", err)
	}
}

func TestLiveMountFailureLeavesNothing(t *testing.T) {
	m, prov, agent, _ := newMountEnv(t)
	ctx := context.Background()
	sb, err := m.Create(ctx, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	agent.fail = errdefs.FailedPrecondition("a file is in the way")
	if _, err := m.MountImage(ctx, sb.ID, "busybox", "/etc/passwd/x"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("got %v, want the agent's ErrFailedPrecondition", err)
	}
	if lms, _ := m.LiveMounts(ctx, sb.ID); len(prov.staged) != 0 || len(lms) != 0 {
		t.Errorf("after a failed mount: staged %v, records %v; want nothing", prov.staged, lms)
	}
	agent.fail, prov.fail = nil, errors.New("no such layer")
	if _, err := m.MountImage(ctx, sb.ID, "busybox", "/w"); err == nil || agent.mounted["/w"] != "" {
		t.Errorf("staging failure: got %v, agent %v; want an error and no agent mount", err, agent.mounted)
	}
	if _, err := m.MountImage(ctx, sb.ID, "nosuch", "/w"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown image: got %v, want ErrNotFound", err)
	}
}

// A restarted manager stages and mounts again what its records hold.
func TestRecoverRemountsLiveMounts(t *testing.T) {
	m, prov, agent, start := newMountEnv(t)
	ctx := context.Background()
	sb, err := m.Create(ctx, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	lm, err := m.MountImage(ctx, sb.ID, "busybox", "/w")
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	delete(agent.mounted, "/w") // as if the daemon stopped mid-mount
	calls := agent.calls
	m2 := start()
	if err := m2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if len(prov.synced) != 1 || !slices.Equal(prov.synced[0], []string{lm.Stage}) {
		t.Errorf("synced %v, want [[%s]]", prov.synced, lm.Stage)
	}
	if agent.calls != calls+1 || agent.mounted["/w"] != lm.Stage {
		t.Errorf("agent: %d calls after %d, mounted %v; want /w mounted again", agent.calls, calls, agent.mounted)
	}
}

func TestCheckNewLiveMount(t *testing.T) {
	have := []LiveMount{{Path: "/a/b", Image: "x"}}
	for _, tc := range []struct {
		path  string
		class error
	}{
		{"/a/b", errdefs.ErrAlreadyExists},
		{"/a", errdefs.ErrFailedPrecondition},
		{"/a/b/c", errdefs.ErrFailedPrecondition},
		{"/a/bc", nil},
		{"/c", nil},
	} {
		t.Run(tc.path, func(t *testing.T) {
			err := checkNewLiveMount(have, tc.path)
			if tc.class == nil && err != nil || tc.class != nil && !errors.Is(err, tc.class) {
				t.Errorf("got %v, want class %v", err, tc.class)
			}
		})
	}
	full := make([]LiveMount, MaxMounts)
	for i := range full {
		full[i].Path = "/m" + string(rune('a'+i))
	}
	if err := checkNewLiveMount(full, "/z"); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("over the limit: got %v, want ErrResourceExhausted", err)
	}
}
