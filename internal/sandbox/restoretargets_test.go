package sandbox

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// targetProv is snapProv with restore targets: it remembers which ids are
// prepared, which were discarded, and which restores found a target.
type targetProv struct {
	snapProv
	mu        sync.Mutex
	ready     map[string]bool
	discarded []string
	into      []string
}

func (p *targetProv) PrepareRestore(ctx context.Context, req ProvisionRequest, dir string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ready[req.ID] = true
	return nil
}

func (p *targetProv) DiscardRestoreTarget(ctx context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready[id] {
		delete(p.ready, id)
		p.discarded = append(p.discarded, id)
	}
	return nil
}

func (p *targetProv) Restore(ctx context.Context, req ProvisionRequest, dir string) (Handle, error) {
	p.mu.Lock()
	if p.ready[req.ID] {
		delete(p.ready, req.ID)
		p.into = append(p.into, req.ID)
	}
	p.mu.Unlock()
	return p.snapProv.Restore(ctx, req, dir)
}

func (p *targetProv) readyIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for id := range p.ready {
		ids = append(ids, id)
	}
	return ids
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRestoreTargets(t *testing.T) {
	e := newSnapEnv(t)
	prov := &targetProv{ready: map[string]bool{}}
	e.snaps = NewSnapshots(e.m, e.store, prov, e.snaps.log)
	e.snaps.SetRestoreTargets(1)
	ctx := context.Background()
	src, err := e.m.Create(ctx, Spec{Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.snaps.Snapshot(ctx, src.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a target for the first snapshot", func() bool { return len(prov.readyIDs()) == 1 })
	targetA := prov.readyIDs()[0]

	// A second snapshot's target evicts the first's (the limit is one).
	b, err := e.snaps.Snapshot(ctx, src.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the second snapshot's target, the first's discarded", func() bool {
		ids := prov.readyIDs()
		return len(ids) == 1 && ids[0] != targetA
	})
	targetB := prov.readyIDs()[0]
	if !slices.Contains(prov.discarded, targetA) {
		t.Errorf("discarded %v, want the first target %s", prov.discarded, targetA)
	}

	// Restoring b uses its target: the new sandbox has the target's id.
	sb, err := e.snaps.Restore(ctx, b.ID, NameClear, "")
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID != targetB || !slices.Contains(prov.into, targetB) {
		t.Errorf("restored %s (into targets %v), want the prepared %s", sb.ID, prov.into, targetB)
	}
	// ... and prepares the next one for b.
	waitUntil(t, "a new target for the restored snapshot", func() bool {
		ids := prov.readyIDs()
		return len(ids) == 1 && ids[0] != targetB
	})
	targetB2 := prov.readyIDs()[0]
	// a has no target any more: its restore is cold, with a fresh id.
	sa, err := e.snaps.Restore(ctx, a.ID, NameClear, "")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(prov.into, sa.ID) {
		t.Errorf("restore of %s used a target, want none", a.ID)
	}
	waitUntil(t, "a's target replacing b's", func() bool {
		ids := prov.readyIDs()
		return len(ids) == 1 && ids[0] != targetB2
	})
	// Deleting the snapshot with the target discards it; Close the rest.
	if err := e.snaps.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "no target after deleting its snapshot", func() bool { return len(prov.readyIDs()) == 0 })
	if _, err := e.snaps.Snapshot(ctx, src.ID, 0); err != nil {
		t.Fatal(err)
	}
	e.snaps.Close()
	if ids := prov.readyIDs(); len(ids) != 0 {
		t.Errorf("targets after Close: %v", ids)
	}
}
