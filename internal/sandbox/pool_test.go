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

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/clock"
	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/store"
)

// poolProv is a fakeProv that also brings up idle sandboxes and records
// what each was claimed with.
type poolProv struct {
	*fakeProv
	pmu    sync.Mutex
	idle   []string // ids provisioned idle, in order
	cold   []string // ids provisioned with their settings
	claims map[string]ProvisionRequest
}

func (p *poolProv) Provision(ctx context.Context, req ProvisionRequest) (Handle, error) {
	h, err := p.fakeProv.Provision(ctx, req)
	if err == nil {
		p.pmu.Lock()
		if req.Idle {
			p.idle = append(p.idle, req.ID)
		} else {
			p.cold = append(p.cold, req.ID)
		}
		p.pmu.Unlock()
	}
	return h, err
}

func (p *poolProv) ClaimIdle(ctx context.Context, h Handle, req ProvisionRequest) error {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	if !slices.Contains(p.idle, h.ID) {
		return errors.New("not idle")
	}
	p.claims[h.ID] = req
	return nil
}

func (p *poolProv) idleCount() int { return len(p.idleIDs()) }

func (p *poolProv) idleIDs() []string {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	return slices.Clone(p.idle)
}

func (p *poolProv) coldIDs() []string {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	return slices.Clone(p.cold)
}

func (p *poolProv) claim(id string) (ProvisionRequest, bool) {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	r, ok := p.claims[id]
	return r, ok
}

func (p *poolProv) destroyedIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.destroyed)
}

// poolAgent is a fakeAgent that takes Configure and runs the warm-up exec.
type poolAgent struct {
	fakeAgent
	mu         sync.Mutex
	configured [][]string // env of each Configure
	warmUps    int
	failConfig error
	failMount  error
	events     []string // stage, mount and configure calls, in order
}

func (a *poolAgent) Exec(ctx context.Context, req *agentv1.ExecRequest) (ExecStream, error) {
	if req.ExecId == warmUpExecID {
		a.mu.Lock()
		a.warmUps++
		a.mu.Unlock()
		return &fakeStream{events: []*agentv1.ExecEvent{{Event: &agentv1.ExecEvent_Exited{Exited: &agentv1.Exited{}}}}}, nil
	}
	return a.fakeAgent.Exec(ctx, req)
}

func (a *poolAgent) Configure(ctx context.Context, env []string, workdir string, entrypoint []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failConfig != nil {
		return a.failConfig
	}
	a.configured = append(a.configured, append(slices.Clone(env), "WORKDIR="+workdir))
	a.events = append(a.events, "configure")
	return nil
}

func (a *poolAgent) MountImage(ctx context.Context, stage, path string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failMount != nil {
		return a.failMount
	}
	a.events = append(a.events, "mount "+path)
	return nil
}

func (a *poolAgent) UnmountImage(ctx context.Context, stage, path string) error { return nil }

func (a *poolAgent) event(e string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *poolAgent) eventList() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

func (a *poolAgent) counts() (warmUps int, configured [][]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.warmUps, slices.Clone(a.configured)
}

type poolDialer struct{ a *poolAgent }

func (d poolDialer) Dial(addr, token string) (AgentConn, error) { return d.a, nil }

func newPoolEnv(t *testing.T) (*Manager, *poolProv, *poolAgent) {
	t.Helper()
	m, prov, a, _ := newPoolEnvStaging(t, false)
	return m, prov, a
}

// newPoolEnvStaging is newPoolEnv whose provisioner, with staging, can
// also stage images for live mounts (the returned stagingProv).
func newPoolEnvStaging(t *testing.T, staging bool) (*Manager, *poolProv, *poolAgent, *stagingProv) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	prov := &poolProv{fakeProv: &fakeProv{alive: map[string]bool{}}, claims: map[string]ProvisionRequest{}}
	a := &poolAgent{}
	var p Provisioner = prov
	var st *stagingProv
	if staging {
		st = &stagingProv{poolProv: prov, a: a}
		p = st
	}
	m := New(Config{DataDir: dir, DefaultImage: "busybox", LivenessInterval: 10 * time.Millisecond}, Deps{
		DB: db, Provisioner: p, Agents: poolDialer{a}, Images: fakeImages{}, Secrets: fakeSecrets{},
		Clock: clock.NewFake(time.Unix(1_700_000_000, 0)), Logger: slog.New(slog.DiscardHandler),
	})
	return m, prov, a, st
}

// stagingProv is a poolProv that stages images (ImageStager); it logs
// each staging in its agent's event list.
type stagingProv struct {
	*poolProv
	a *poolAgent
}

func (p *stagingProv) StageImage(ctx context.Context, h Handle, stage string, img ImageInfo) error {
	p.a.event("stage " + img.ID + " in " + h.ID)
	return nil
}

func (p *stagingProv) UnstageImage(ctx context.Context, h Handle, stage string) error { return nil }

func (p *stagingProv) SyncStage(ctx context.Context, h Handle, staged []StagedImage) error {
	return nil
}

// waitIdle waits until n sandboxes were provisioned idle.
func waitIdle(t *testing.T, p *poolProv, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.idleCount() < n {
		if time.Now().After(deadline) {
			t.Fatalf("pool: %d sandboxes provisioned idle, want %d", p.idleCount(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the filler register the last one
}

func TestParsePoolSpec(t *testing.T) {
	p, err := ParsePoolSpec("size=3,image=busybox,memory=512")
	if err != nil {
		t.Fatal(err)
	}
	want := PoolSpec{Image: "busybox", Size: 3, Resources: Resources{CPU: DefaultCPU, MemoryMiB: 512, Pids: DefaultPids}}
	if p != want {
		t.Errorf("got %+v, want %+v", p, want)
	}
	for _, bad := range []string{"", "image=busybox", "size=0", "size=x", "size=1,memory=1", "size=1,color=red", "size=1,cpu"} {
		if _, err := ParsePoolSpec(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: got %v, want invalid argument", bad, err)
		}
	}
}

// A create that fits a pool takes a ready sandbox: its id, the create's
// settings handed to the agent and the provisioner, and the pool refills.
// Other limits, or mounts, boot a sandbox as before.
func TestCreateFromWarmPool(t *testing.T) {
	m, prov, a := newPoolEnv(t)
	ctx := context.Background()
	if err := m.StartPools([]PoolSpec{{Size: 2, Resources: Resources{MemoryMiB: 512}}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, prov, 2)
	if n, _ := a.counts(); n != 2 {
		t.Errorf("got %d warm-up execs, want one per pool sandbox", n)
	}
	sb, err := m.Create(ctx, Spec{Name: "pooled", Env: map[string]string{"K": "v"}, Workdir: "/w",
		Entrypoint: []string{"sleep", "1"}, Resources: Resources{MemoryMiB: 512}})
	if err != nil {
		t.Fatal(err)
	}
	if idle := prov.idleIDs(); idle[0] != sb.ID {
		t.Errorf("got sandbox %s, want the first pool sandbox %s", sb.ID, idle[0])
	}
	claim, ok := prov.claim(sb.ID)
	if !ok || claim.Workdir != "/w" || !slices.Equal(claim.Entrypoint, []string{"sleep", "1"}) || !slices.Contains(claim.Env, "K=v") {
		t.Errorf("provisioner claim: got %+v (ok %v), want the create's settings", claim, ok)
	}
	if _, conf := a.counts(); len(conf) != 1 || !slices.Contains(conf[0], "K=v") || !slices.Contains(conf[0], "WORKDIR=/w") {
		t.Errorf("agent configured with %v, want K=v and workdir /w", conf)
	}
	got, err := m.Get(ctx, sb.ID)
	if err != nil || got.State != StateRunning || got.Spec.Name != "pooled" {
		t.Errorf("record: got %+v, %v; want running, named", got, err)
	}
	waitIdle(t, prov, 3) // refilled
	users, err := m.ImageUsers(ctx)
	if err != nil || !slices.Contains(users["im-1"], prov.idleIDs()[1]) {
		t.Errorf("image users: got %v, %v; want the ready pool sandbox %s among im-1's", users, err, prov.idleIDs()[1])
	}

	// A second create of the same name is refused and leaves the pool
	// sandbox it took ready for the next create.
	if _, err := m.Create(ctx, Spec{Name: "pooled", Resources: Resources{MemoryMiB: 512}}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate name: got %v, want already exists", err)
	}
	sb2, err := m.Create(ctx, Spec{Resources: Resources{MemoryMiB: 512}})
	if idle := prov.idleIDs(); err != nil || sb2.ID != idle[1] {
		t.Errorf("after a refused create: got %v, %v; want pool sandbox %s", sb2, err, idle[1])
	}

	// Default limits do not fit this pool.
	sb3, err := m.Create(ctx, Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(prov.idleIDs(), sb3.ID) || !slices.Contains(prov.coldIDs(), sb3.ID) {
		t.Errorf("create with other limits: %s came from the pool", sb3.ID)
	}

	// Close takes the ready pool sandboxes down; the clients' stay.
	waitIdle(t, prov, 4)
	m.Close()
	destroyed := prov.destroyedIDs()
	for _, id := range prov.idleIDs()[2:] {
		if !slices.Contains(destroyed, id) {
			t.Errorf("pool sandbox %s not taken down at Close (destroyed %v)", id, destroyed)
		}
	}
	for _, id := range []string{sb.ID, sb2.ID, sb3.ID} {
		if slices.Contains(destroyed, id) {
			t.Errorf("sandbox %s was taken down at Close", id)
		}
	}
}

// A pool sandbox whose agent refuses its settings is taken down and the
// create fails with the reason; nothing half-made stays running.
func TestCreateFromWarmPoolFailure(t *testing.T) {
	m, prov, a := newPoolEnv(t)
	defer m.Close()
	ctx := context.Background()
	if err := m.StartPools([]PoolSpec{{Size: 1}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, prov, 1)
	a.mu.Lock()
	a.failConfig = errors.New("agent gone")
	a.mu.Unlock()
	if _, err := m.Create(ctx, Spec{Name: "x"}); err == nil {
		t.Fatal("create succeeded with an agent that refused its settings")
	}
	if !slices.Contains(prov.destroyedIDs(), prov.idleIDs()[0]) {
		t.Errorf("the pool sandbox was not taken down")
	}
	list, _ := m.List(ctx, "", nil, false)
	if len(list) != 0 {
		t.Errorf("running after a failed create: %v", list)
	}
	all, _ := m.List(ctx, "", nil, true)
	if len(all) != 1 || all[0].FinishReason != ReasonFailed {
		t.Errorf("got %v, want one failed sandbox", all)
	}
}

// A create with image mounts takes a pool sandbox when the engine can stage
// images: they are mounted as live mounts before the agent is configured
// (the entrypoint finds them), recorded as live mounts and marked Live in
// the spec. A mount that fails takes the sandbox down and forgets them.
func TestCreateFromWarmPoolWithMounts(t *testing.T) {
	m, prov, a, _ := newPoolEnvStaging(t, true)
	defer m.Close()
	ctx := context.Background()
	if err := m.StartPools([]PoolSpec{{Size: 1}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, prov, 1)
	sb, err := m.Create(ctx, Spec{Mounts: []ImageMount{{Image: "busybox", Path: "/srv/b/"}, {Image: "busybox", Path: "/a"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := prov.idleIDs()[0]
	if sb.ID != id {
		t.Fatalf("create with mounts got %s, want the pool sandbox %s", sb.ID, id)
	}
	want := []string{"stage im-1 in " + id, "mount /srv/b", "stage im-1 in " + id, "mount /a", "configure"}
	if got := a.eventList(); !slices.Equal(got, want) {
		t.Errorf("calls: got %q, want %q", got, want)
	}
	lms, err := m.LiveMounts(ctx, sb.ID)
	if err != nil || len(lms) != 2 || lms[0].ImageID != "im-1" || lms[0].Stage == "" {
		t.Errorf("live mounts: got %+v, %v; want both, recorded", lms, err)
	}
	got, err := m.Get(ctx, sb.ID)
	if err != nil || len(got.Spec.Mounts) != 2 || !got.Spec.Mounts[0].Live || got.Spec.Mounts[0].ImageID != "im-1" {
		t.Errorf("record: got %+v, %v; want the mounts, Live", got.Spec.Mounts, err)
	}
	// A restore of the record's spec stages them from the live mounts,
	// not by the engine at start.
	spec := got.Spec
	if reqs, err := m.resolveMounts(ctx, &spec); err != nil || len(reqs) != 0 {
		t.Errorf("resolveMounts of live mounts: got %v, %v; want none for the engine", reqs, err)
	}

	waitIdle(t, prov, 2)
	a.mu.Lock()
	a.failMount = errors.New("no such dir")
	a.mu.Unlock()
	if _, err := m.Create(ctx, Spec{Mounts: []ImageMount{{Image: "busybox", Path: "/x"}}}); err == nil {
		t.Fatal("create succeeded though its mount failed")
	}
	failed := prov.idleIDs()[1]
	if !slices.Contains(prov.destroyedIDs(), failed) {
		t.Errorf("the pool sandbox whose mount failed was not taken down")
	}
	if lms, err := m.repo.liveMounts(ctx, failed); err != nil || len(lms) != 0 {
		t.Errorf("live mounts of the failed create: got %v, %v; want none", lms, err)
	}
}

// Without an engine that stages images, a create with mounts boots.
func TestCreateWithMountsBootsWithoutStaging(t *testing.T) {
	m, prov, _ := newPoolEnv(t)
	defer m.Close()
	if err := m.StartPools([]PoolSpec{{Size: 1}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, prov, 1)
	sb, err := m.Create(context.Background(), Spec{Mounts: []ImageMount{{Image: "busybox", Path: "/a"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(prov.coldIDs(), sb.ID) {
		t.Errorf("create with mounts took pool sandbox %s without an engine that stages images", sb.ID)
	}
}

// shellLessAgent answers exec of /bin/sh as an image without a shell does.
type shellLessAgent struct {
	fakeAgent
	argvs [][]string
}

func (a *shellLessAgent) Exec(ctx context.Context, req *agentv1.ExecRequest) (ExecStream, error) {
	a.argvs = append(a.argvs, req.Spec.Argv)
	if req.Spec.Argv[0] == "/bin/sh" {
		return nil, errdefs.NotFound("executable %q not found", req.Spec.Argv[0])
	}
	return &fakeStream{events: []*agentv1.ExecEvent{{Event: &agentv1.ExecEvent_Exited{Exited: &agentv1.Exited{}}}}}, nil
}

func TestWarmUpFallsBackToTheAgentWithoutAShell(t *testing.T) {
	a := &shellLessAgent{}
	if err := warmUp(context.Background(), a); err != nil {
		t.Fatalf("warmUp: %v", err)
	}
	if len(a.argvs) != 2 || a.argvs[0][0] != "/bin/sh" || a.argvs[1][0] != "/proc/self/exe" {
		t.Fatalf("warm-up ran %q, want /bin/sh then /proc/self/exe", a.argvs)
	}
}
