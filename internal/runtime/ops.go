package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Status is a container's status as runsc reports it.
type Status string

// The statuses runsc reports.
const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusPaused  Status = "paused"
	StatusStopped Status = "stopped"
)

// State is the result of runsc state.
type State struct {
	ID      string    `json:"id"`
	Status  Status    `json:"status"`
	Pid     int       `json:"pid"` // the sandbox process on the host; -1 when stopped
	Bundle  string    `json:"bundle"`
	Created time.Time `json:"created"`
}

// UnknownExitCode is what Wait returns when the init has exited but runsc
// can no longer tell its exit status.
const UnknownExitCode = -1

// globalArgs returns the flags every runsc command gets.
func (r *Runtime) globalArgs(id string) []string {
	args := []string{"--root", r.cfg.RootDir, "--platform", r.cfg.Platform}
	if r.cfg.Debug && r.cfg.LogDir != "" {
		args = append(args, "--debug", "--debug-log", filepath.Join(r.cfg.LogDir, id)+"/")
	}
	return args
}

// sandboxArgs returns the global flags of the commands that make a sandbox
// (run, restore): network mode and gVisor's overlay with a dir medium. The
// medium "self" would write filestore files into the root and into every
// bind source; "dir=" keeps them in the scratch dir.
func (r *Runtime) sandboxArgs(s *Spec, logPath string) []string {
	args := r.globalArgs(s.ID)
	network := "none"
	if s.NetNSPath != "" {
		network = "sandbox"
	}
	args = append(args, "--network", network, "--overlay2", "all:dir="+s.ScratchDir)
	if logPath != "" {
		args = append(args, "--log", logPath)
	}
	return args
}

// runscLog opens the file runsc logs to for a command that makes a sandbox,
// and returns its path and the offset of what this command will append.
// The caller closes the file.
func (r *Runtime) runscLog(id string) (*os.File, int64, error) {
	var f *os.File
	var err error
	if r.cfg.LogDir != "" {
		f, err = os.OpenFile(filepath.Join(r.cfg.LogDir, id+".runsc.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	} else {
		f, err = os.CreateTemp("", "runsc-log-")
	}
	if err != nil {
		return nil, 0, fmt.Errorf("runsc log: %w", err)
	}
	off, err := f.Seek(0, 2)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("runsc log: %w", err)
	}
	return f, off, nil
}

// launch writes s's bundle and runs runsc with sub (run or restore) and its
// flags, with the init's stdio on s.LogPath.
func (r *Runtime) launch(ctx context.Context, s *Spec, what string, sub ...string) error {
	return r.launchWith(ctx, s, launchOpts{}, what, sub...)
}

// launchOpts are launchWith's variations.
type launchOpts struct {
	// cpuAfterBoot lets the sandbox boot before its CPU limit is set (see
	// cpuboot.go).
	cpuAfterBoot bool
	// existing: the container was made by Create (a restore into it).
	existing bool
}

// launchWith is launch with the variations of o.
func (r *Runtime) launchWith(ctx context.Context, s *Spec, o launchOpts, what string, sub ...string) error {
	if err := s.validate(); err != nil {
		return err
	}
	if err := s.checkPaths(); err != nil {
		return err
	}
	if o.existing {
		// The container exists: Create made it for this restore.
		if err := r.mustExist(s.ID); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	} else if err := r.checkNoPrefixCollision(s.ID); err != nil {
		return err
	}
	cpuDir, cpuAfterBoot := "", o.cpuAfterBoot
	if cpuAfterBoot {
		cpuDir, cpuAfterBoot = r.cpuAfterBoot(s)
	}
	write := writeSpec
	if cpuAfterBoot {
		write = func(s *Spec, cgroupsPath string) error { return writeSpecCPUHook(s, cgroupsPath, cpuDir) }
	}
	if err := write(s, r.CgroupsPath(s.ID)); err != nil {
		return err
	}
	stdio, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("%s %s: open log: %w", what, s.ID, err)
	}
	defer stdio.Close()
	logf, off, err := r.runscLog(s.ID)
	if err != nil {
		return err
	}
	defer logf.Close()
	if r.cfg.LogDir == "" {
		defer os.Remove(logf.Name())
	}

	if cpuAfterBoot {
		// Without a quota, so that runsc leaves it to the hook.
		if err := os.MkdirAll(cpuDir, 0o755); err != nil {
			return fmt.Errorf("%s %s: cpu cgroup: %w", what, s.ID, err)
		}
	}
	args := append(r.sandboxArgs(s, logf.Name()), sub...)
	args = append(args, s.ID)
	start := time.Now()
	_, err = r.cmd.run(ctx, invocation{args: args, stdout: stdio, stderr: stdio})
	if err != nil {
		var re *runscError
		if errors.As(err, &re) && re.detail == "" {
			re.detail = runscLogError(logf.Name(), off)
		}
		return classify(err, what+" "+s.ID)
	}
	if cpuAfterBoot {
		if err := checkCPULimit(s, cpuDir); err != nil {
			return err
		}
	}
	r.log.Debug("runsc "+what, "container_id", s.ID, "took", time.Since(start))
	return nil
}

// runscLogError returns the last error message runsc appended to its log
// after offset off ("msg" of its JSON lines, or the raw last line).
func runscLogError(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := readAllFrom(f, off)
	if err != nil {
		return ""
	}
	line := lastLine(b)
	var entry struct{ Msg string }
	if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg != "" {
		return lastLine([]byte(entry.Msg))
	}
	return line
}

// Run creates and starts the container of s (runsc run --detach): when Run
// returns nil the init is running. It writes s.BundleDir/config.json first.
// The init's stdout and stderr are appended to s.LogPath.
//
// Errors: ErrInvalidArgument for a bad spec, ErrAlreadyExists when the id
// exists or collides by prefix with a live one. A failed Run may leave a
// half-made container and cgroup dirs behind: call Cleanup.
//
// run --detach is used rather than create + start because it reaches a
// running init about 40-60 ms sooner (one runsc process fewer; see the
// benchmarks in this package).
//
// The sandbox boots before its CPU limit is set where that changes nothing
// it can see; the limit is in place before the init starts (cpuboot.go).
func (r *Runtime) Run(ctx context.Context, s Spec) error {
	return r.launchWith(ctx, &s, launchOpts{cpuAfterBoot: true}, "run", "run", "--detach", "--bundle", s.BundleDir)
}

// Kill sends sig to the container's init, or to every process in it when
// all is set. Errors: ErrNotFound for an unknown id.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	if err := r.mustExist(id); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	args := append(r.globalArgs(id), "kill")
	if all {
		args = append(args, "--all")
	}
	args = append(args, id, strconv.Itoa(int(sig)))
	_, err := r.cmd.run(ctx, invocation{args: args})
	return classify(err, "kill "+id)
}

// Delete removes a container's state and resources. Without force the
// container must be stopped (else ErrFailedPrecondition); with force a
// running one is killed first. Errors: ErrNotFound for an unknown id.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	if err := r.mustExist(id); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	r.sockets.Delete(id)
	args := append(r.globalArgs(id), "delete")
	if force {
		args = append(args, "--force")
	}
	_, err := r.cmd.run(ctx, invocation{args: append(args, id)})
	if err != nil {
		return classify(err, "delete "+id)
	}
	r.removeCPUCgroup(id)
	return nil
}

// State returns the container's state. Errors: ErrNotFound for an unknown id.
//
// Note: right after the init exits the sandbox process can linger as a
// zombie until its parent (the host's init or the daemon, if it is a child
// subreaper) reaps it; runsc reports "running" until then.
func (r *Runtime) State(ctx context.Context, id string) (State, error) {
	if err := r.mustExist(id); err != nil {
		return State{}, fmt.Errorf("state: %w", err)
	}
	out, err := r.cmd.run(ctx, invocation{args: append(r.globalArgs(id), "state", id)})
	if err != nil {
		return State{}, classify(err, "state "+id)
	}
	var st State
	if err := json.Unmarshal(out, &st); err != nil {
		return State{}, fmt.Errorf("state %s: parse %q: %w", id, truncate(out), err)
	}
	if st.ID != id {
		return State{}, fmt.Errorf("state %s: runsc answered for %q", id, st.ID)
	}
	return st, nil
}

// Wait blocks until the container's init has exited and returns its exit
// code (128+n when killed by signal n). runsc keeps the exit status only
// while the sandbox runs: when Wait is called after the sandbox has gone,
// it returns UnknownExitCode and a nil error. Start Wait right after Run to
// get the code. Errors: ErrNotFound for an unknown id.
func (r *Runtime) Wait(ctx context.Context, id string) (int, error) {
	if err := r.mustExist(id); err != nil {
		return UnknownExitCode, fmt.Errorf("wait: %w", err)
	}
	out, err := r.cmd.run(ctx, invocation{args: append(r.globalArgs(id), "wait", id)})
	if err != nil {
		var re *runscError
		if errors.As(err, &re) && strings.Contains(re.detail, "exit status is unavailable") {
			return UnknownExitCode, r.WaitStopped(ctx, id, 20*time.Millisecond)
		}
		return UnknownExitCode, classify(err, "wait "+id)
	}
	var res struct {
		ExitStatus int `json:"exitStatus"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return UnknownExitCode, fmt.Errorf("wait %s: parse %q: %w", id, truncate(out), err)
	}
	return res.ExitStatus, nil
}

// WaitStopped polls the container's state every interval until it is
// stopped or gone, or ctx ends. It returns nil in both first cases.
func (r *Runtime) WaitStopped(ctx context.Context, id string, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st, err := r.State(ctx, id)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			return nil
		case err != nil:
			return err
		case st.Status == StatusStopped:
			return nil
		}
		select {
		case <-ctx.Done():
			return classify(ctx.Err(), "wait stopped "+id)
		case <-t.C:
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
