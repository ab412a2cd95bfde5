package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Warm pools. A warm pool keeps sandboxes of one image and one set of
// limits booted ahead, their agents started idle (no settings of a user
// yet) and answering. A create that asks for that image and those limits,
// and mounts nothing, takes one: the agent gets the create's environment,
// workdir and entrypoint (Configurer), the provisioner rewrites the agent
// config it keeps for snapshots (IdleClaimer), and the sandbox is recorded
// running under the pool sandbox's own id. That skips the engine's boot and
// the agent's start, most of a create (issue 2: a create from a pool is
// ready in the time of two local calls). The pool then boots a replacement
// in the background.
//
// A pool sandbox is in no record until it is taken: a daemon that dies
// leaves its pools to the provisioner's Sweep at the next start, and Close
// takes them down. Creates that find their pool empty boot a sandbox as
// usual.

// PoolSpec says what one warm pool keeps ready.
type PoolSpec struct {
	// Image is a name or an id; empty means the manager's default image.
	Image string
	// Resources are the limits of the pool's sandboxes; zero fields take
	// the defaults, as at create. Only creates asking for exactly these
	// limits take from the pool.
	Resources Resources
	// Size is how many sandboxes are kept ready.
	Size int
}

// ParsePoolSpec parses "size=N[,image=REF][,cpu=C][,memory=MIB][,pids=N]",
// the form of sandboxd's --warm-pool flag.
func ParsePoolSpec(s string) (PoolSpec, error) {
	var p PoolSpec
	sizeSet := false
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return p, errdefs.Invalid("warm pool %q: %q is not KEY=VALUE", s, kv)
		}
		var err error
		switch k {
		case "image":
			p.Image = v
		case "size":
			p.Size, err = strconv.Atoi(v)
			sizeSet = true
		case "cpu":
			p.Resources.CPU, err = strconv.ParseFloat(v, 64)
		case "memory":
			p.Resources.MemoryMiB, err = strconv.ParseInt(v, 10, 64)
		case "pids":
			p.Resources.Pids, err = strconv.ParseInt(v, 10, 64)
		default:
			return p, errdefs.Invalid("warm pool %q: unknown key %q (want size, image, cpu, memory, pids)", s, k)
		}
		if err != nil {
			return p, errdefs.Invalid("warm pool %q: bad %s %q", s, k, v)
		}
	}
	if !sizeSet || p.Size < 1 || p.Size > 256 {
		return p, errdefs.Invalid("warm pool %q: size must be 1 to 256", s)
	}
	probe := Spec{Resources: p.Resources}
	if err := probe.normalize(); err != nil {
		return p, errdefs.Invalid("warm pool %q: %v", s, err)
	}
	p.Resources = probe.Resources
	return p, nil
}

// Configurer is the optional ability of an AgentConn to complete an agent
// started idle (ProvisionRequest.Idle).
type Configurer interface {
	Configure(ctx context.Context, env []string, workdir string, entrypoint []string) error
}

// IdleClaimer is the optional ability of a Provisioner to bring up idle
// sandboxes (ProvisionRequest.Idle) and to record, when one is taken, the
// agent settings it runs with from then on (what a memory snapshot of it
// saves). req carries the sandbox's id, Env, Workdir and Entrypoint.
type IdleClaimer interface {
	ClaimIdle(ctx context.Context, h Handle, req ProvisionRequest) error
}

// member is one ready sandbox of a pool.
type member struct {
	h       Handle
	conn    AgentConn
	conf    Configurer // conn's, checked at boot
	imageID string     // the image it was booted from
}

// warmPool is the state of one pool; guarded by pools.mu.
type warmPool struct {
	spec    PoolSpec
	ready   []*member
	booting int
	wake    chan struct{} // a member was taken or died
}

// pools are the manager's warm pools.
type pools struct {
	mu     sync.Mutex
	all    []*warmPool
	closed bool
	wg     sync.WaitGroup
}

// StartPools starts keeping the given warm pools filled. Call once, after
// Recover (whose sweep would take pool sandboxes for leftovers).
func (m *Manager) StartPools(specs []PoolSpec) error {
	if len(specs) == 0 {
		return nil
	}
	if _, ok := m.prov.(IdleClaimer); !ok {
		return errdefs.FailedPrecondition("this engine cannot keep warm pools")
	}
	m.pools.mu.Lock()
	defer m.pools.mu.Unlock()
	for _, s := range specs {
		if s.Image == "" {
			s.Image = m.cfg.DefaultImage
		}
		probe := Spec{Resources: s.Resources}
		if err := probe.normalize(); err != nil {
			return err
		}
		s.Resources = probe.Resources
		p := &warmPool{spec: s, wake: make(chan struct{}, 1)}
		m.pools.all = append(m.pools.all, p)
		m.pools.wg.Add(1)
		go m.fillPool(p)
	}
	return nil
}

// fillPool boots members of p, one at a time, whenever it has fewer than
// its size, until the manager closes.
func (m *Manager) fillPool(p *warmPool) {
	defer m.pools.wg.Done()
	log := m.log.With("pool_image", p.spec.Image)
	failures := 0
	for {
		m.pools.mu.Lock()
		need := !m.pools.closed && len(p.ready)+p.booting < p.spec.Size
		if need {
			p.booting++
		}
		m.pools.mu.Unlock()
		if !need {
			select {
			case <-m.ctx.Done():
				return
			case <-p.wake:
				continue
			}
		}
		start := time.Now()
		mb, err := m.bootMember(p.spec)
		var stale []*member
		m.pools.mu.Lock()
		p.booting--
		keep := err == nil && !m.pools.closed
		if keep {
			// Members of an image since replaced under the same name
			// would never be taken.
			ready := []*member{}
			for _, o := range p.ready {
				if o.imageID == mb.imageID {
					ready = append(ready, o)
				} else {
					stale = append(stale, o)
				}
			}
			p.ready = append(ready, mb)
		}
		m.pools.mu.Unlock()
		for _, o := range stale {
			m.dropMember(o)
		}
		switch {
		case err != nil:
			failures++
			if m.ctx.Err() != nil {
				return
			}
			wait := min(time.Duration(failures)*time.Second, time.Minute)
			log.Warn("warm pool: booting a sandbox failed", "err", err, "retry_in", wait)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(wait):
			}
		case !keep:
			m.dropMember(mb)
			return
		default:
			failures = 0
			log.Info("warm pool: sandbox ready", "sandbox_id", mb.h.ID, "took", time.Since(start))
		}
	}
}

// bootMember brings up one idle sandbox of spec and waits for its agent.
func (m *Manager) bootMember(spec PoolSpec) (*member, error) {
	ctx, cancel := context.WithTimeout(m.ctx, 2*time.Minute)
	defer cancel()
	img, err := m.images.ResolveImage(ctx, spec.Image)
	if err != nil {
		return nil, err
	}
	h, err := m.prov.Provision(ctx, ProvisionRequest{
		ID: newID("sb-"), Image: img, Resources: spec.Resources, Env: img.Env, Workdir: workdirOf("", img), Idle: true,
	})
	if err != nil {
		return nil, err
	}
	conn, err := m.dialReady(ctx, h)
	if err != nil {
		m.prov.Destroy(context.WithoutCancel(ctx), h)
		return nil, err
	}
	conf, ok := conn.(Configurer)
	if !ok {
		err = errdefs.FailedPrecondition("this agent connection cannot configure an idle agent")
	} else {
		err = warmUp(ctx, conn)
	}
	if err != nil {
		conn.Close()
		m.prov.Destroy(context.WithoutCancel(ctx), h)
		return nil, err
	}
	return &member{h: h, conn: conn, conf: conf, imageID: img.ID}, nil
}

// warmUpExecID names the exec warmUp runs; no client can name an exec so
// (execIDRE), so it never meets one of theirs.
const warmUpExecID = ".warm-up"

// warmUp runs a process in a new sandbox and waits for its end. The first
// exec of a sandbox is slower than the next ones (the agent's exec path
// pages in, the engine loads the program and its libraries for the first
// time): a pool sandbox pays for that before a client takes it. The process
// is the image's shell, `/bin/sh -c :`, as most clients' first commands go
// through a shell (and, in a dynamically linked image, its libc is every
// program's); in an image without one, the agent binary itself (in every
// sandbox), which prints its usage and exits at once, its output going
// through pipes and the stream as a client's will.
func warmUp(ctx context.Context, conn AgentConn) error {
	err := runWarmUp(ctx, conn, warmUpExecID, []string{"/bin/sh", "-c", ":"})
	if errors.Is(err, errdefs.ErrNotFound) {
		err = runWarmUp(ctx, conn, warmUpExecID+"-agent", []string{"/proc/self/exe", "warm-up"})
	}
	return err
}

func runWarmUp(ctx context.Context, conn AgentConn, id string, argv []string) error {
	s, err := conn.Exec(ctx, &agentv1.ExecRequest{ExecId: id, Spec: &agentv1.ProcessSpec{
		Argv: argv, TimeoutMs: 10_000,
	}})
	if err != nil {
		return fmt.Errorf("warm-up exec: %w", err)
	}
	defer s.Close()
	for {
		ev, err := s.Recv()
		if err != nil {
			return fmt.Errorf("warm-up exec: %w", err)
		}
		if ev.GetExited() != nil {
			return nil
		}
	}
}

// takeMember removes and returns a ready member of image imageID and limits
// res whose host process still runs, with its pool, or nil. Dead members
// found on the way are dropped.
func (m *Manager) takeMember(imageID string, res Resources) (*warmPool, *member) {
	m.pools.mu.Lock()
	var dead []*member
	defer func() {
		for _, d := range dead {
			m.log.Warn("warm pool: a ready sandbox had died", "sandbox_id", d.h.ID)
			m.dropMember(d)
		}
	}()
	defer m.pools.mu.Unlock()
	for _, p := range m.pools.all {
		if p.spec.Resources != res {
			continue
		}
		for i := 0; i < len(p.ready); {
			c := p.ready[i]
			if c.imageID != imageID {
				i++
				continue
			}
			p.ready = slices.Delete(p.ready, i, i+1)
			select {
			case p.wake <- struct{}{}:
			default:
			}
			if c.h.Pid > 0 && !procAlive(c.h.Pid, c.h.PidStart) {
				dead = append(dead, c)
				continue
			}
			return p, c
		}
	}
	return nil, nil
}

// putBack returns an untouched member to the front of its pool, or takes
// it down when the pools are closing.
func (m *Manager) putBack(p *warmPool, mb *member) {
	m.pools.mu.Lock()
	closed := m.pools.closed
	if !closed {
		p.ready = slices.Insert(p.ready, 0, mb)
	}
	m.pools.mu.Unlock()
	if closed {
		m.dropMember(mb)
	}
}

// dropMember takes a member down.
func (m *Manager) dropMember(mb *member) {
	mb.conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.prov.Destroy(ctx, mb.h); err != nil {
		m.log.Warn("warm pool: removing a sandbox", "sandbox_id", mb.h.ID, "err", err)
	}
}

// poolImages returns the image of every ready pool sandbox, by id.
func (m *Manager) poolImages() map[string]string {
	m.pools.mu.Lock()
	defer m.pools.mu.Unlock()
	out := map[string]string{}
	for _, p := range m.pools.all {
		for _, mb := range p.ready {
			out[mb.h.ID] = mb.imageID
		}
	}
	return out
}

// closePools stops filling and takes every ready member down.
func (m *Manager) closePools() {
	m.pools.mu.Lock()
	m.pools.closed = true
	var all []*member
	for _, p := range m.pools.all {
		all = append(all, p.ready...)
		p.ready = nil
	}
	m.pools.mu.Unlock()
	m.pools.wg.Wait()
	var wg sync.WaitGroup
	for _, mb := range all {
		wg.Go(func() { m.dropMember(mb) })
	}
	wg.Wait()
}

// createFromPool completes sb from a pool member: it records sb under the
// member's id, hands the agent the sandbox's settings and registers it
// live. It returns false when no member fits (the caller boots one).
//
// A create with image mounts takes a member too: its images are mounted as
// live mounts (staged, then mounted by the agent, as MountImage does; no
// copy) before the agent is configured, so the entrypoint finds them; the
// record marks them Live. Mounts a live mount cannot make (nested paths)
// boot a sandbox instead.
func (m *Manager) createFromPool(ctx context.Context, sb *Sandbox, req ProvisionRequest) (bool, error) {
	stager, ok := m.prov.(ImageStager)
	if len(req.Mounts) > 0 && (!ok || !liveMountable(req.Mounts)) {
		return false, nil
	}
	p, mb := m.takeMember(req.Image.ID, req.Resources)
	if mb == nil {
		return false, nil
	}
	var mounter MountAgent
	if len(req.Mounts) > 0 {
		if mounter, ok = mb.conn.(MountAgent); !ok {
			m.putBack(p, mb)
			return false, nil
		}
		for i := range sb.Spec.Mounts {
			sb.Spec.Mounts[i].Live = true
		}
	}
	bg := context.WithoutCancel(ctx)
	sb.ID = mb.h.ID
	req.ID = mb.h.ID
	t0 := time.Now()
	if err := m.repo.insert(ctx, sb); err != nil {
		m.putBack(p, mb) // still idle: nothing of sb reached it
		return true, err
	}
	t1 := time.Now()
	err := m.prov.(IdleClaimer).ClaimIdle(ctx, mb.h, req)
	t2 := time.Now()
	if err == nil && len(req.Mounts) > 0 {
		err = m.mountAtClaim(ctx, sb, mb.h, stager, mounter, req.Mounts)
	}
	t3 := time.Now()
	if err == nil {
		err = mb.conf.Configure(ctx, req.Env, req.Workdir, req.Entrypoint)
	}
	t4 := time.Now()
	if err == nil {
		err = m.register(ctx, sb, mb.h, mb.conn)
		m.log.Debug("warm pool: sandbox taken", "sandbox_id", sb.ID, "insert", t1.Sub(t0), "claim", t2.Sub(t1),
			"mounts", t3.Sub(t2), "configure", t4.Sub(t3), "register", time.Since(t4))
	} else {
		mb.conn.Close()
		m.prov.Destroy(bg, mb.h)
		if len(req.Mounts) > 0 {
			m.repo.deleteLiveMountsOf(bg, sb.ID)
		}
	}
	if err != nil {
		return true, m.createFailed(ctx, sb.ID, err)
	}
	return true, nil
}

// liveMountable reports whether ms can all be live mounts: none within
// another (checkNewLiveMount; a create's mounts may not overlap either, so
// this holds for every valid create, and is checked for safety).
func liveMountable(ms []MountRequest) bool {
	var have []LiveMount
	for _, mt := range ms {
		if checkNewLiveMount(have, mt.Path) != nil {
			return false
		}
		have = append(have, LiveMount{Path: mt.Path})
	}
	return true
}

// mountAtClaim mounts the create's images into the pool sandbox h as live
// mounts (addLiveMount). On error the caller takes the sandbox down and
// forgets the live mounts made before.
func (m *Manager) mountAtClaim(ctx context.Context, sb *Sandbox, h Handle, stager ImageStager, mounter MountAgent, ms []MountRequest) error {
	for i, mt := range ms {
		lm := LiveMount{Path: mt.Path, Image: sb.Spec.Mounts[i].Image, ImageID: mt.Image.ID, Stage: newStageName(), At: m.clock.Now()}
		if err := m.addLiveMount(ctx, sb.ID, h, stager, mounter, lm, mt.Image); err != nil {
			return err
		}
	}
	return nil
}
