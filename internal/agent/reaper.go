package agent

import (
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// reaper starts processes and reports each one's wait status exactly once.
type reaper interface {
	// start starts a process. onExit is called once, from another
	// goroutine, with the process's wait status; it must not call start.
	start(path string, argv []string, attr *os.ProcAttr, onExit func(syscall.WaitStatus)) (pid int, err error)
	// stop releases the reaper's resources. Processes still running are not
	// reported any more.
	stop()
}

// processReaper waits for each process it started and nothing else. It is
// for an agent that is not PID 1 (for example in unit tests), where other
// code of the same process may have children of its own.
type processReaper struct{}

func (processReaper) start(path string, argv []string, attr *os.ProcAttr, onExit func(syscall.WaitStatus)) (int, error) {
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return 0, err
	}
	go func() {
		st, err := p.Wait()
		var ws syscall.WaitStatus
		if err == nil {
			ws, _ = st.Sys().(syscall.WaitStatus)
		}
		onExit(ws)
	}()
	return p.Pid, nil
}

func (processReaper) stop() {}

// initReaper reaps every child of the agent, as PID 1 (or a child
// subreaper) must: on SIGCHLD it calls wait4(-1, WNOHANG) until no zombie is
// left, hands statuses of processes it started to their callbacks and
// discards the rest (orphans reparented to the agent).
//
// forkMu closes the race between a fork and the registration of its pid:
// starters hold it shared from fork to registration, the reaping loop holds
// it exclusively, so it never reaps a pid it cannot yet attribute. mu guards
// the map; it is a separate lock because starters share forkMu.
type initReaper struct {
	log    *slog.Logger
	sigs   chan os.Signal
	done   chan struct{}
	forkMu sync.RWMutex

	mu      sync.Mutex
	waiters map[int]func(syscall.WaitStatus)
}

func newInitReaper(log *slog.Logger) *initReaper {
	r := &initReaper{
		log:     log,
		sigs:    make(chan os.Signal, 1),
		done:    make(chan struct{}),
		waiters: make(map[int]func(syscall.WaitStatus)),
	}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.loop()
	return r
}

func (r *initReaper) start(path string, argv []string, attr *os.ProcAttr, onExit func(syscall.WaitStatus)) (int, error) {
	r.forkMu.RLock()
	defer r.forkMu.RUnlock()
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return 0, err
	}
	pid := p.Pid
	p.Release() // never p.Wait: the loop reaps it
	r.mu.Lock()
	r.waiters[pid] = onExit
	r.mu.Unlock()
	return pid, nil
}

func (r *initReaper) stop() {
	signal.Stop(r.sigs)
	close(r.done)
}

func (r *initReaper) loop() {
	r.reap() // children that exited before the handler was installed
	for {
		select {
		case <-r.done:
			return
		case <-r.sigs:
			r.reap()
		}
	}
}

// reap collects every zombie, then calls callbacks outside the locks.
func (r *initReaper) reap() {
	type exit struct {
		fn func(syscall.WaitStatus)
		ws syscall.WaitStatus
	}
	var exits []exit
	r.forkMu.Lock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			break
		}
		r.mu.Lock()
		fn, ok := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ok {
			exits = append(exits, exit{fn, ws})
		} else {
			r.log.Debug("reaped orphan", "pid", pid)
		}
	}
	r.forkMu.Unlock()
	for _, e := range exits {
		e.fn(e.ws)
	}
}
