package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// blocked reports whether ch stays open (unsent) for a short while.
func blocked(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return false
	case <-time.After(50 * time.Millisecond):
		return true
	}
}

func TestTransferGate(t *testing.T) {
	ctx := context.Background()
	t.Run("a snapshot waits for the steps in flight", func(t *testing.T) {
		var g transferGate
		leave1, _ := g.enter(ctx)
		leave2, _ := g.enter(ctx)
		held := make(chan struct{})
		var release func()
		go func() {
			release, _ = g.hold(ctx)
			close(held)
		}()
		leave1()
		if !blocked(held) {
			t.Fatal("hold returned with a step in flight")
		}
		leave2()
		<-held
		release()
	})
	t.Run("new steps wait for the snapshot, even while it waits", func(t *testing.T) {
		var g transferGate
		leave, _ := g.enter(ctx)
		held := make(chan struct{})
		var release func()
		go func() {
			release, _ = g.hold(ctx)
			close(held)
		}()
		time.Sleep(20 * time.Millisecond) // the snapshot is waiting now
		entered := make(chan struct{})
		go func() {
			l, _ := g.enter(ctx)
			close(entered)
			l()
		}()
		if !blocked(entered) {
			t.Fatal("a step entered while a snapshot waited")
		}
		leave()
		<-held
		if !blocked(entered) {
			t.Fatal("a step entered while a snapshot held the gate")
		}
		release()
		<-entered
	})
	t.Run("snapshots one at a time", func(t *testing.T) {
		var g transferGate
		r1, _ := g.hold(ctx)
		second := make(chan struct{})
		go func() {
			r2, _ := g.hold(ctx)
			close(second)
			r2()
		}()
		if !blocked(second) {
			t.Fatal("a second hold returned while the first held")
		}
		r1()
		<-second
	})
	t.Run("contexts end the waits", func(t *testing.T) {
		var g transferGate
		leave, _ := g.enter(ctx)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		if _, err := g.hold(cctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("hold with a step in flight: got %v, want the deadline", err)
		}
		// The failed hold let go: steps enter again.
		l2, err := g.enter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l2()
		leave()
		release, _ := g.hold(ctx)
		cctx2, cancel2 := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel2()
		if _, err := g.enter(cctx2); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("enter while held: got %v, want the deadline", err)
		}
		release()
		release() // idempotent
		l3, err := g.enter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l3()
		l3() // idempotent
		if g.steps != 0 {
			t.Errorf("steps: got %d, want 0", g.steps)
		}
	})
}

func TestStagingStep(t *testing.T) {
	dir := t.TempDir()
	s := &Staging{host: dir, inside: "/stage", gate: &transferGate{}}
	var seen string
	err := s.Step(context.Background(), [][]byte{[]byte("ab"), nil, []byte("cd")}, func(name string) error {
		seen = name
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != "abcd" {
			t.Errorf("staged file: got %q, %v; want abcd", got, err)
		}
		if s.gate.steps != 1 {
			t.Errorf("steps in flight during the step: got %d, want 1", s.gate.steps)
		}
		return errors.New("agent failed")
	})
	if err == nil || err.Error() != "agent failed" {
		t.Errorf("got %v, want fn's error", err)
	}
	if len(seen) != len(TransferPrefix)+24 || seen[:len(TransferPrefix)] != TransferPrefix {
		t.Errorf("name %q: want %s and 24 hex digits", seen, TransferPrefix)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("staging dir after the step: %d entries, want none", len(entries))
	}
	if s.gate.steps != 0 {
		t.Errorf("steps after the step: got %d, want 0", s.gate.steps)
	}
	// A staging dir that is gone: the step fails before fn, leaving nothing.
	s.host = filepath.Join(dir, "gone")
	if err := s.Step(context.Background(), [][]byte{[]byte("x")}, func(string) error { t.Error("fn called"); return nil }); err == nil {
		t.Error("step into a missing dir: got no error")
	}
	if s.gate.steps != 0 {
		t.Errorf("steps after a failed stage: got %d, want 0", s.gate.steps)
	}
}

// TestSnapshotWaitsForTransfers: a memory snapshot is not taken while a
// staged step is in flight, and steps wait while it is taken.
func TestSnapshotWaitsForTransfers(t *testing.T) {
	e := newSnapEnv(t)
	ctx := context.Background()
	sb, err := e.m.Create(ctx, Spec{Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l, err := e.m.running(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	leave, err := l.transfers.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	taken := make(chan struct{})
	go func() {
		defer close(taken)
		if _, err := e.snaps.Snapshot(ctx, sb.ID, 0); err != nil {
			t.Errorf("snapshot: %v", err)
		}
	}()
	if !blocked(taken) {
		t.Fatal("the snapshot was taken while a step was in flight")
	}
	leave()
	<-taken
	// The gate is free again.
	l2, err := l.transfers.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l2()
}
