package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// The core section: create to first output, exec round trip and the memory
// of idle sandboxes, each beside the raw engine.
func runCore(ctx context.Context, e *env) ([]figure, error) {
	var figs []figure
	f, err := coreCreateToOutput(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("create to first output: %w", err)
	}
	figs = append(figs, f...)
	if f, err = corePoolCreate(ctx, e); err != nil {
		return nil, fmt.Errorf("create from a warm pool: %w", err)
	}
	figs = append(figs, f...)
	if f, err = coreExec(ctx, e); err != nil {
		return nil, fmt.Errorf("exec round trip: %w", err)
	}
	figs = append(figs, f...)
	if f, err = coreIdleMemory(ctx, e); err != nil {
		return nil, fmt.Errorf("idle memory: %w", err)
	}
	return append(figs, f...), nil
}

// firstByte is a writer that records when its first byte arrived.
type firstByte struct {
	once sync.Once
	at   chan time.Time
}

func newFirstByte() *firstByte { return &firstByte{at: make(chan time.Time, 1)} }

func (w *firstByte) Write(b []byte) (int, error) {
	if len(b) > 0 {
		w.once.Do(func() { w.at <- time.Now() })
	}
	return len(b), nil
}

// createPhases is one sandbox's create-to-first-output, split up.
type createPhases struct {
	id        string
	create    time.Duration // Client.Create
	execStart time.Duration // Exec until the process is started
	output    time.Duration // started until the first stdout byte
	total     time.Duration // Create call start until the first stdout byte
	terminate time.Duration // Terminate (outside the total)
}

// createAndEcho creates a busybox sandbox, execs echo hi in it, waits for
// the first byte of output, then terminates it.
func createAndEcho(ctx context.Context, e *env) (ph createPhases, err error) {
	return createAndEchoWith(ctx, e, sandboxd.CreateOptions{Image: "busybox"})
}

// createAndEchoWith is createAndEcho with the given create options.
func createAndEchoWith(ctx context.Context, e *env, opts sandboxd.CreateOptions) (ph createPhases, err error) {
	t0 := time.Now()
	sb, err := e.client.Create(ctx, opts)
	if err != nil {
		return ph, err
	}
	e.daemon.track(sb.ID)
	ph.id = sb.ID
	t1 := time.Now()
	defer func() {
		t := time.Now()
		sb.Terminate(context.WithoutCancel(ctx))
		ph.terminate = time.Since(t)
	}()
	w := newFirstByte()
	p, err := sb.Exec(ctx, []string{"echo", "hi"}, &sandboxd.ExecOptions{Stdout: w, Stderr: io.Discard})
	if err != nil {
		return ph, err
	}
	t2 := time.Now()
	var t3 time.Time
	select {
	case t3 = <-w.at:
	case <-ctx.Done():
		return ph, ctx.Err()
	case <-time.After(30 * time.Second):
		return ph, errors.New("no output from echo hi in 30 s")
	}
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		return ph, fmt.Errorf("echo hi: exit %d, %v", code, err)
	}
	ph.create, ph.execStart, ph.output, ph.total = t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t3.Sub(t0)
	return ph, nil
}

func coreCreateToOutput(ctx context.Context, e *env) ([]figure, error) {
	// One of each first, not counted: page cache, first connection.
	if _, err := createAndEcho(ctx, e); err != nil {
		return nil, err
	}
	if _, err := e.raw.runEcho(ctx); err != nil {
		return nil, err
	}
	var total, create, execStart, output, term, raw []time.Duration
	var ids []string
	for i := range e.n {
		ph, err := createAndEcho(ctx, e)
		if err != nil {
			return nil, err
		}
		ids = append(ids, ph.id)
		total, create, execStart = append(total, ph.total), append(create, ph.create), append(execStart, ph.execStart)
		output, term = append(output, ph.output), append(term, ph.terminate)
		// Interleaved with ours, so that both see the same machine.
		d, err := e.raw.runEcho(ctx)
		if err != nil {
			return nil, err
		}
		raw = append(raw, d)
		e.logf("create->first output %d/%d: ours %v (create %v), raw %v", i+1, e.n,
			ph.total.Round(time.Millisecond), ph.create.Round(time.Millisecond), d.Round(time.Millisecond))
	}
	figs := []figure{
		newFigure("create->first output (busybox, echo hi)", "ms", durations(total)).
			against("raw runsc run", durations(raw)).atMost(1.2, "<= 1.2x raw"),
		newFigure("  of which Client.Create", "ms", durations(create)),
	}
	// Create's two big steps, from the daemon's log ("engine up" lines).
	if engine, agent := engineSteps(filepath.Join(e.daemon.cfg.dataDir, "sandboxd.log"), ids); len(engine) == len(ids) {
		figs = append(figs,
			newFigure("    of which runsc run --detach", "ms", durations(engine)).against("raw runsc run", durations(raw)),
			newFigure("    of which runsc done->agent output", "ms", durations(agent)))
	}
	return append(figs,
		newFigure("  of which Exec until started", "ms", durations(execStart)),
		newFigure("  of which started->first byte", "ms", durations(output)),
		newFigure("  (Terminate, not counted)", "ms", durations(term)),
	), nil
}

// corePoolCreate measures creates taken from the bench daemon's warm pool
// (busybox, 512 MiB), each once the pool has refilled, beside raw runsc run.
// The target (brief): ready for the first command in under 15 ms.
func corePoolCreate(ctx context.Context, e *env) ([]figure, error) {
	opts := sandboxd.CreateOptions{Image: "busybox", MemoryMiB: benchPoolMemMiB}
	var total, create, execStart, output, raw []time.Duration
	err := poolCreates(ctx, e, opts, func(i int, ph createPhases) error {
		total, create = append(total, ph.total), append(create, ph.create)
		execStart, output = append(execStart, ph.execStart), append(output, ph.output)
		d, err := e.raw.runEcho(ctx)
		if err != nil {
			return err
		}
		raw = append(raw, d)
		e.logf("warm pool create->first output %d/%d: ours %v (create %v), raw %v", i+1, e.n,
			ph.total.Round(time.Millisecond), ph.create.Round(time.Millisecond), d.Round(time.Millisecond))
		return nil
	})
	if err != nil {
		return nil, err
	}
	mounted, err := corePoolCreateMounted(ctx, e, opts)
	if err != nil {
		return nil, err
	}
	return []figure{
		newFigure("warm pool: create->first output (busybox, echo hi)", "ms", durations(total)).
			against("raw runsc run", durations(raw)),
		newFigure("  of which Client.Create (ready for a command)", "ms", durations(create)).under(15, "< 15 ms"),
		newFigure("  of which Exec until started", "ms", durations(execStart)),
		newFigure("  of which started->first byte", "ms", durations(output)),
		newFigure("warm pool: Client.Create with a directory snapshot mounted", "ms", durations(mounted)).
			against("the same without a mount", durations(create)),
	}, nil
}

// corePoolCreateMounted measures creates from the warm pool that mount a
// small directory snapshot (a pool sandbox mounts it as a live mount), the
// Client.Create call alone.
func corePoolCreateMounted(ctx context.Context, e *env, opts sandboxd.CreateOptions) ([]time.Duration, error) {
	base, err := e.client.Create(ctx, sandboxd.CreateOptions{Image: "busybox", Timeout: time.Hour})
	if err != nil {
		return nil, err
	}
	e.daemon.track(base.ID)
	defer base.Terminate(context.WithoutCancel(ctx))
	if err := shell(ctx, base, "mkdir -p /proj/src && echo 'package main' > /proj/src/main.go"); err != nil {
		return nil, err
	}
	img, err := base.SnapshotDirectory(ctx, "/proj", sandboxd.SnapshotOptions{})
	if err != nil {
		return nil, err
	}
	defer e.client.DeleteImage(context.WithoutCancel(ctx), img.ID)
	opts.Mounts = []sandboxd.Mount{{Image: img.ID, Path: "/work/proj"}}
	var out []time.Duration
	err = poolCreates(ctx, e, opts, func(_ int, ph createPhases) error {
		out = append(out, ph.create)
		return nil
	})
	e.logf("warm pool create with a mount: %v", out)
	return out, err
}

// poolCreates runs createAndEchoWith(opts) e.n+1 times, each once the warm
// pool has refilled, and hands each but the first (not counted: first
// connection, page cache) to each, with its index from 0.
func poolCreates(ctx context.Context, e *env, opts sandboxd.CreateOptions, each func(i int, ph createPhases) error) error {
	for i := -1; i < e.n; i++ {
		if err := e.daemon.waitPool(ctx, benchPoolSize); err != nil {
			return err
		}
		ph, err := createAndEchoWith(ctx, e, opts)
		if err != nil {
			return err
		}
		if i < 0 {
			continue
		}
		if err := each(i, ph); err != nil {
			return err
		}
	}
	return nil
}

func coreExec(ctx context.Context, e *env) ([]figure, error) {
	sb, err := e.client.Create(ctx, sandboxd.CreateOptions{Image: "busybox"})
	if err != nil {
		return nil, err
	}
	e.daemon.track(sb.ID)
	defer sb.Terminate(context.WithoutCancel(ctx))
	// execTrue returns the round trip and the part until Exec returned
	// (the process started).
	execTrue := func() (total, started time.Duration, err error) {
		t := time.Now()
		p, err := sb.Exec(ctx, []string{"true"}, nil)
		if err != nil {
			return 0, 0, err
		}
		started = time.Since(t)
		code, err := p.Wait(ctx)
		if err == nil && code != 0 {
			err = fmt.Errorf("true exited %d", code)
		}
		return time.Since(t), started, err
	}
	nOurs, nRaw := max(100, 5*e.n), max(20, e.n)
	var ours, oursStarted, raw, host []time.Duration
	for i := range nOurs + 5 {
		d, st, err := execTrue()
		if err != nil {
			return nil, err
		}
		if i >= 5 { // warm-up
			ours, oursStarted = append(ours, d), append(oursStarted, st)
		}
	}
	e.logf("exec round trip: ours p50 %.2f ms over %d", durations(ours).pct(50), len(ours))
	// The API's own floor: a unary call that reaches no agent.
	var get []time.Duration
	for range nOurs {
		t := time.Now()
		if _, _, err := e.client.Get(ctx, sb.ID); err != nil {
			return nil, err
		}
		get = append(get, time.Since(t))
	}

	id, err := e.raw.startDetached(ctx, true, "/bin/sleep", "1000")
	if err != nil {
		return nil, err
	}
	defer e.raw.remove(id)
	for i := range nRaw + 1 {
		d, err := e.raw.exec(ctx, id, "/bin/true")
		if err != nil {
			return nil, err
		}
		if i >= 1 {
			raw = append(raw, d)
		}
	}
	e.logf("exec round trip: runsc exec p50 %.1f ms over %d", durations(raw).pct(50), len(raw))

	for i := range nOurs + 5 {
		t := time.Now()
		if err := exec.CommandContext(ctx, "/bin/true").Run(); err != nil {
			return nil, err
		}
		if i >= 5 {
			host = append(host, time.Since(t))
		}
	}
	floor, err := spawnFloor(ctx, e.raw, nOurs)
	if err != nil {
		return nil, fmt.Errorf("spawn floor: %w", err)
	}
	e.logf("exec round trip: spawn inside raw runsc p50 %.2f ms", durations(floor).pct(50))
	return []figure{
		newFigure("exec round trip (true; Exec+Wait)", "ms", durations(ours)).
			against("raw runsc exec", durations(raw)).atMost(0.1, ">= 10x faster"),
		newFigure("exec round trip vs spawn inside gVisor", "ms", durations(ours)).
			against("os/exec /bin/true inside raw runsc", durations(floor)),
		newFigure("  engine floor: os/exec /bin/true inside raw runsc", "ms", durations(floor)).
			against("the same on the host", durations(host)),
		newFigure("exec round trip vs host spawn", "ms", durations(ours)).
			against("host os/exec /bin/true", durations(host)).atMost(1.5, "<= 1.5x host"),
		newFigure("  of which Exec until started", "ms", durations(oursStarted)),
		newFigure("  (API floor: Client.Get round trip)", "ms", durations(get)),
	}, nil
}

const idleCount = 10

func coreIdleMemory(ctx context.Context, e *env) ([]figure, error) {
	ours, err := idleOurs(ctx, e)
	if err != nil {
		return nil, err
	}
	raw, err := idleRaw(ctx, e)
	if err != nil {
		return nil, err
	}
	e.logf("idle: host processes per sandbox: ours %v, raw %v", ours.procs, raw.procs)
	return []figure{
		newFigure("idle sandbox RSS (all its runsc procs)", "MiB", ours.rss).against("raw runsc", raw.rss),
		newFigure("idle sandbox PSS (all its runsc procs)", "MiB", ours.pss).against("raw runsc", raw.pss),
		newFigure(fmt.Sprintf("idle sandbox MemAvailable drop/%d", idleCount), "MiB", dist{ours.delta}).
			against("raw runsc", dist{raw.delta}),
	}, nil
}

func idleOurs(ctx context.Context, e *env) (idleMem, error) {
	before, err := memAvailable()
	if err != nil {
		return idleMem{}, err
	}
	var ids []string
	defer func() {
		for _, id := range ids {
			e.client.Sandbox(id).Terminate(context.WithoutCancel(ctx))
		}
	}()
	for range idleCount {
		sb, err := e.client.Create(ctx, sandboxd.CreateOptions{Image: "busybox"})
		if err != nil {
			return idleMem{}, err
		}
		e.daemon.track(sb.ID)
		ids = append(ids, sb.ID)
	}
	if err := sleep(ctx, 2*time.Second); err != nil {
		return idleMem{}, err
	}
	return measureIdle(ids, before)
}

func idleRaw(ctx context.Context, e *env) (idleMem, error) {
	before, err := memAvailable()
	if err != nil {
		return idleMem{}, err
	}
	var ids []string
	defer func() {
		for _, id := range ids {
			e.raw.remove(id)
		}
	}()
	for range idleCount {
		id, err := e.raw.startDetached(ctx, false, "/bin/sleep", "1000")
		if err != nil {
			return idleMem{}, err
		}
		ids = append(ids, id)
	}
	if err := sleep(ctx, 2*time.Second); err != nil {
		return idleMem{}, err
	}
	return measureIdle(ids, before)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// engineSteps reads the "engine up" lines of the given sandboxes in the
// daemon's log: how long runsc run took, and how long the agent then took to
// write its first line. Sandboxes without such a line are left out.
func engineSteps(logPath string, ids []string) (engine, agent []time.Duration) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil, nil
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, `msg="engine up"`) {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		en, err1 := time.ParseDuration(kv["engine"])
		ag, err2 := time.ParseDuration(kv["agent_output"])
		if want[kv["sandbox_id"]] && err1 == nil && err2 == nil {
			engine, agent = append(engine, en), append(agent, ag)
		}
	}
	return engine, agent
}
