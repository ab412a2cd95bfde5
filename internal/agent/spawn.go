package agent

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	agentv1 "github.com/sandboxd/sandboxd/api/gen/agent/v1"
	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// plan is a validated ProcessSpec, ready to start.
type plan struct {
	path   string // resolved argv[0]
	argv   []string
	env    []string
	dir    string
	stdin  bool
	output [2]agentv1.OutputMode
	// tty runs the process on a terminal of rows x cols (see tty.go).
	tty        bool
	rows, cols uint32
}

// prepare validates spec and resolves what starting it needs.
func (a *Agent) prepare(spec *agentv1.ProcessSpec) (*plan, error) {
	if spec == nil || len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, errdefs.Invalid("spec.argv is required")
	}
	if spec.TimeoutMs < 0 {
		return nil, errdefs.Invalid("spec.timeout_ms %d is negative", spec.TimeoutMs)
	}
	set := a.set.Load()
	p := &plan{argv: spec.Argv, dir: set.workdir, stdin: spec.Stdin, output: [2]agentv1.OutputMode{spec.Stdout, spec.Stderr}}
	for i, m := range p.output {
		switch m {
		case agentv1.OutputMode_OUTPUT_MODE_UNSPECIFIED, agentv1.OutputMode_OUTPUT_MODE_PIPE, agentv1.OutputMode_OUTPUT_MODE_DEVNULL:
		default:
			return nil, errdefs.Invalid("spec.%s: unknown output mode %d", streamNames[i], m)
		}
	}
	if spec.Workdir != "" {
		if !path.IsAbs(spec.Workdir) {
			return nil, errdefs.Invalid("spec.workdir %q is not absolute", spec.Workdir)
		}
		p.dir = spec.Workdir
	}
	env, err := mergeEnv(set.env, spec.Env)
	if err != nil {
		return nil, err
	}
	p.env = env
	if spec.Tty {
		p.tty, p.rows, p.cols = true, spec.Rows, spec.Cols
		if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "TERM=") }) {
			p.env = append(slices.Clip(env), "TERM=xterm-256color")
		}
	}
	p.path, err = lookPath(spec.Argv[0], env)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// mergeEnv returns base with extra set on top, extra's keys sorted.
func mergeEnv(base []string, extra map[string]string) ([]string, error) {
	if len(extra) == 0 {
		return base, nil
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, errdefs.Invalid("spec.env key %q is invalid", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	env := make([]string, 0, len(base)+len(keys))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := extra[k]; !ok {
			env = append(env, kv)
		}
	}
	for _, k := range keys {
		env = append(env, k+"="+extra[k])
	}
	return env, nil
}

// lookPath finds an executable named file in the PATH of env (not the
// agent's own). A name with a slash is used as is.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	dirs := DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			dirs = v
		}
	}
	for _, dir := range filepath.SplitList(dirs) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errdefs.NotFound("executable %q not found in PATH", file)
}

// spawn starts the process of e in its own process group. On success it
// sets e.pid, e.stdin and e.pipes; on failure it leaves nothing open.
func (a *Agent) spawn(e *execution, p *plan) (err error) {
	if p.tty {
		return a.spawnTTY(e, p)
	}
	var child, mine []*os.File
	defer func() {
		for _, f := range child {
			f.Close()
		}
		if err != nil {
			for _, f := range mine {
				f.Close()
			}
		}
	}()
	devnull := func(flag int) (*os.File, error) {
		f, err := os.OpenFile(os.DevNull, flag, 0)
		if err == nil {
			child = append(child, f)
		}
		return f, err
	}
	files := make([]*os.File, 3)
	if p.stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		child, mine = append(child, r), append(mine, w)
		files[0] = r
		e.stdin = newStdinPipe(w)
	} else if files[0], err = devnull(os.O_RDONLY); err != nil {
		return err
	}
	for i, mode := range p.output {
		if mode == agentv1.OutputMode_OUTPUT_MODE_DEVNULL {
			if files[i+1], err = devnull(os.O_WRONLY); err != nil {
				return err
			}
			e.out[i].closed = true // nothing will come; no reader waits
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		child, mine = append(child, w), append(mine, r)
		files[i+1] = w
		e.pipes[i] = r
	}
	attr := &os.ProcAttr{
		Dir:   p.dir,
		Env:   p.env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	pid, err := a.reaper.start(p.path, p.argv, attr, func(ws syscall.WaitStatus) { a.exited(e, ws) })
	if err != nil {
		return startError(p, err)
	}
	e.pid = pid
	return nil
}

// startError classes an error of os.StartProcess.
func startError(p *plan, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	switch errno {
	case syscall.ENOENT, syscall.ENOTDIR:
		return errdefs.NotFound("start %q in %q: %v", p.argv[0], p.dir, errno)
	case syscall.EACCES, syscall.EPERM:
		return errPermission("start %q in %q: %v", p.argv[0], p.dir, errno)
	case syscall.ENOEXEC, syscall.EISDIR:
		return errdefs.Invalid("start %q: %v", p.argv[0], errno)
	case syscall.EAGAIN, syscall.ENOMEM, syscall.EMFILE, syscall.ENFILE:
		return errdefs.Exhausted("start %q: %v", p.argv[0], errno)
	}
	return err
}
