package image

import (
	"log/slog"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// trash deletes directory trees under tmp/ in the background, one at a time,
// so that no caller waits for the removal of what it made and no longer
// needs: the extraction of a layer the store held already, a deleted image's
// layers. Deleting a tree of 12,800 small files took 6.7 s on this
// project's machines (ext4 without a journal, mounted with discard, trims
// each file's blocks as it frees them). A tree still there when the daemon
// stops is a leftover in tmp/ like any other: the next Startup removes it.
// Safe for concurrent use; the zero value is not usable (see newTrash).
type trash struct {
	log *slog.Logger

	mu      sync.Mutex
	pending []string
	idle    chan struct{} // closed when nothing is pending or being removed
}

func newTrash(log *slog.Logger) *trash {
	idle := make(chan struct{})
	close(idle)
	return &trash{log: log, idle: idle}
}

// add queues the tree at dir (under tmp/, no longer used by anyone) for
// removal, mounts below it included.
func (t *trash) add(dir string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending = append(t.pending, dir)
	if isClosed(t.idle) { // no goroutine at work
		t.idle = make(chan struct{})
		go t.run(t.idle)
	}
}

func (t *trash) run(idle chan struct{}) {
	// Removing is nobody's wait: do it on a thread of the lowest CPU and
	// I/O priority, so that it takes what the snapshots, sandboxes and
	// clients leave (a tree of 12,800 files costs about 0.9 s of CPU). The
	// thread is locked and never unlocked: it ends with this goroutine,
	// and no other goroutine runs at its priority.
	runtime.LockOSThread()
	lowerThreadPriority()
	for {
		t.mu.Lock()
		if len(t.pending) == 0 {
			close(idle)
			t.mu.Unlock()
			return
		}
		dir := t.pending[0]
		t.pending = t.pending[1:]
		t.mu.Unlock()
		if err := removeTree(dir); err != nil {
			t.log.Warn("removing a discarded tree (the next start-up retries)", "dir", dir, "err", err)
		}
	}
}

// wait returns once every tree added before the call is removed.
func (t *trash) wait() {
	t.mu.Lock()
	idle := t.idle
	t.mu.Unlock()
	<-idle
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// lowerThreadPriority gives the calling thread nice 19 and the idle I/O
// class. Failures are ignored: only a matter of manners.
func lowerThreadPriority() {
	tid := unix.Gettid()
	unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
	// ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0))
	const ioprioWhoProcess, ioprioClassIdle, ioprioClassShift = 1, 3, 13
	unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), ioprioClassIdle<<ioprioClassShift)
}
