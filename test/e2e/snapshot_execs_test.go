package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// execEndTimeout bounds one exec of TestMemSnapshotManyExecs: `echo` takes
// a few ms and a freeze about a second, so an exec still without its exit
// after this long has lost it (the test must fail, not hang).
const execEndTimeout = 20 * time.Second

// TestMemSnapshotManyExecs runs short execs back to back while the same
// sandbox is snapshotted again and again, first one exec at a time (as the
// bench's probe does: nothing else in the sandbox then wakes the agent),
// then three at a time. Every exec, whether it starts, runs or ends around
// a freeze, reports its exit and its whole output.
func TestMemSnapshotManyExecs(t *testing.T) {
	ctx := ctxT(t)
	sb := create(t, sandboxd.CreateOptions{})
	const workers, snapshotsPerPhase = 3, 4

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	runs := make([]int, workers)
	slowest := make([]time.Duration, workers)
	startWorker := func(w int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				err := execEnds(ctx, sb, w, i)
				slowest[w] = max(slowest[w], time.Since(t0))
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					return
				}
				runs[w]++
			}
		}()
	}
	var taken []string
	snapshots := func() {
		for range snapshotsPerPhase {
			time.Sleep(100 * time.Millisecond) // execs in their stride
			sn, err := sb.Snapshot(ctx, time.Hour)
			if err != nil {
				t.Errorf("snapshot %s: %v", sb.ID, err)
				return
			}
			taken = append(taken, sn.ID)
		}
	}
	startWorker(0)
	snapshots()
	for w := 1; w < workers; w++ {
		startWorker(w)
	}
	snapshots()
	close(stop)
	wg.Wait()
	for _, id := range taken {
		if err := shared.client().DeleteSnapshot(context.Background(), id); err != nil {
			t.Errorf("delete snapshot %s: %v", id, err)
		}
	}
	t.Logf("%d snapshots; execs per worker %v, slowest %v", len(taken), runs, slowest)
	for _, f := range failures {
		t.Error(f)
	}
	if len(failures) == 0 && runs[0] == 0 {
		t.Errorf("no exec ran")
	}
}

// execEnds runs one `echo` in sb and says why it did not report exit 0 and
// its output within execEndTimeout.
func execEnds(ctx context.Context, sb *sandboxd.Sandbox, worker, i int) error {
	ctx, cancel := context.WithTimeout(ctx, execEndTimeout)
	defer cancel()
	var out strings.Builder
	word := fmt.Sprintf("w%d-%d", worker, i)
	begin := time.Now()
	p, err := sb.Exec(ctx, []string{"echo", word}, &sandboxd.ExecOptions{Stdout: &out})
	if err != nil {
		return fmt.Errorf("worker %d exec %d: start (after %v): %v", worker, i, time.Since(begin).Round(time.Millisecond), err)
	}
	st, err := p.WaitStatus(ctx)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("worker %d exec %d (%s): no exit reported within %v: the exec's end was lost", worker, i, p.ExecID, execEndTimeout)
	case err != nil:
		return fmt.Errorf("worker %d exec %d (%s): wait (after %v): %v", worker, i, p.ExecID, time.Since(begin).Round(time.Millisecond), err)
	case st.Code != 0 || out.String() != word+"\n":
		return fmt.Errorf("worker %d exec %d (%s): got exit %d output %q, want 0 and %q", worker, i, p.ExecID, st.Code, out.String(), word+"\n")
	}
	return nil
}
