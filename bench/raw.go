package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// raw drives runsc directly, as a user of the bare engine would: OCI bundles
// in a temporary directory, --network=none, gVisor's overlay in a per
// container scratch dir (the flags sandboxd uses), and a private --root.
// Container ids have a fixed length, so none is a prefix of another.
type raw struct {
	runsc  string
	dir    string // everything raw makes lives here
	root   string // runsc --root
	rootfs string // a copy of the busybox image's layer
	seq    int
	ids    map[string]bool // containers made and not yet deleted
}

// newRaw copies the image layer at layerDir into dir/rootfs (so that
// nothing runsc does can touch the stored layer) and returns the engine.
func newRaw(runsc, dir, layerDir string) (*raw, error) {
	r := &raw{runsc: runsc, dir: dir, root: filepath.Join(dir, "runsc-root"), rootfs: filepath.Join(dir, "rootfs"), ids: map[string]bool{}}
	if err := os.MkdirAll(r.root, 0o700); err != nil {
		return nil, err
	}
	if out, err := exec.Command("cp", "-a", layerDir, r.rootfs).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy %s: %v: %s", layerDir, err, out)
	}
	return r, nil
}

// newID returns a fresh container id: kind is one letter.
func (r *raw) newID(kind string) string {
	r.seq++
	return fmt.Sprintf("sbbraw-%s-%05d", kind, r.seq)
}

// bundle writes dir/ID/{bundle/config.json,scratch} for argv and returns
// the global flags of the commands that make the sandbox.
func (r *raw) bundle(id string, argv ...string) (bundleDir string, flags []string, err error) {
	bundleDir = filepath.Join(r.dir, id, "bundle")
	scratch := filepath.Join(r.dir, id, "scratch")
	for _, d := range []string{bundleDir, scratch} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", nil, err
		}
	}
	b, err := json.MarshalIndent(rawSpec(id, r.rootfs, argv), "", "  ")
	if err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(filepath.Join(bundleDir, "config.json"), b, 0o600); err != nil {
		return "", nil, err
	}
	return bundleDir, []string{"--root", r.root, "--network", "none", "--overlay2", "all:dir=" + scratch}, nil
}

// rawSpec is sandboxd's OCI spec without its extras (agent mounts, network
// namespace path, cgroups): the same root, namespaces, capabilities and
// default mounts.
func rawSpec(id, rootfs string, argv []string) *specs.Spec {
	caps := []string{
		"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
		"CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
		"CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
	}
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args:            argv,
			Env:             []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cwd:             "/",
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: rootfs, Readonly: false},
		Hostname: id,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
			{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
		}},
	}
}

// command returns a runsc command in its own process group (a Ctrl-C must
// not kill it halfway: cleanup deletes what it made).
func (r *raw) command(args ...string) *exec.Cmd {
	cmd := exec.Command(r.runsc, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// runEcho runs `runsc run` of /bin/echo hi in the foreground and returns the
// time from the start of runsc until "hi" is read from its stdout, a pipe
// the bench owns.
func (r *raw) runEcho(ctx context.Context) (time.Duration, error) {
	id := r.newID("e")
	bundle, flags, err := r.bundle(id, "/bin/echo", "hi")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(filepath.Join(r.dir, id))
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer pr.Close()
	var stderr bytes.Buffer
	cmd := r.command(append(flags, "run", "--bundle", bundle, id)...)
	cmd.Stdout, cmd.Stderr = pw, &stderr
	r.ids[id] = true
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return 0, err
	}
	pw.Close()
	got, err := readUntil(ctx, pr, "hi\n", 30*time.Second)
	took := time.Since(start)
	werr := cmd.Wait()
	if err != nil {
		return 0, fmt.Errorf("runsc run echo: read %q: %v (runsc: %v %s)", got, err, werr, stderr.Bytes())
	}
	if werr != nil {
		return 0, fmt.Errorf("runsc run echo: %v: %s", werr, stderr.Bytes())
	}
	// A foreground run deletes its container when the init exits.
	delete(r.ids, id)
	return took, nil
}

// readUntil reads f until what it read ends with want, or fails at EOF or
// after timeout (or when ctx ends).
func readUntil(ctx context.Context, f *os.File, want string, timeout time.Duration) (string, error) {
	type result struct {
		got string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var got []byte
		buf := make([]byte, 64)
		for {
			n, err := f.Read(buf)
			got = append(got, buf[:n]...)
			if bytes.HasSuffix(got, []byte(want)) {
				ch <- result{string(got), nil}
				return
			}
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				ch <- result{string(got), err}
				return
			}
		}
	}()
	select {
	case res := <-ch:
		return res.got, res.err
	case <-ctx.Done():
		f.SetReadDeadline(time.Now())
		return "", ctx.Err()
	case <-time.After(timeout):
		f.SetReadDeadline(time.Now())
		return "", errors.New("timed out")
	}
}

// startDetached makes a container running argv and returns its id: with
// createStart, by `runsc create` then `runsc start`; otherwise by
// `runsc run --detach`. The init's stdio goes to /dev/null.
func (r *raw) startDetached(ctx context.Context, createStart bool, argv ...string) (string, error) {
	id := r.newID("d")
	bundle, flags, err := r.bundle(id, argv...)
	if err != nil {
		return "", err
	}
	r.ids[id] = true
	steps := [][]string{{"run", "--detach", "--bundle", bundle, id}}
	if createStart {
		steps = [][]string{{"create", "--bundle", bundle, id}, {"start", id}}
	}
	for _, s := range steps {
		if err := r.runQuiet(ctx, append(append([]string(nil), flags...), s...)...); err != nil {
			return "", err
		}
	}
	return id, nil
}

// exec runs `runsc exec ID argv...` with stdio on /dev/null and returns how
// long the command took.
func (r *raw) exec(ctx context.Context, id string, argv ...string) (time.Duration, error) {
	start := time.Now()
	err := r.runQuiet(ctx, append([]string{"--root", r.root, "exec", id}, argv...)...)
	return time.Since(start), err
}

// runQuiet runs runsc with stdin/stdout on /dev/null (ENGINE-NOTES: create,
// start and exec hand their stdio to the sandbox) and stderr to a file.
func (r *raw) runQuiet(ctx context.Context, args ...string) error {
	errf, err := os.CreateTemp(r.dir, "stderr-")
	if err != nil {
		return err
	}
	defer os.Remove(errf.Name())
	defer errf.Close()
	cmd := r.command(args...)
	cmd.Stderr = errf // nil Stdin/Stdout are /dev/null
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Let runsc finish what it started; cleanup removes it after.
		err = <-done
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		msg, _ := os.ReadFile(errf.Name())
		return fmt.Errorf("runsc %v: %v: %s", args, err, bytes.TrimSpace(msg))
	}
	return nil
}

// remove force-deletes a container and its bundle.
func (r *raw) remove(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.runQuiet(ctx, "--root", r.root, "delete", "--force", id)
	os.RemoveAll(filepath.Join(r.dir, id))
	if err == nil {
		delete(r.ids, id)
	}
	return err
}

// close deletes every container left in the raw root and the raw dir.
// Leftovers (containers not removed by the sections) are reported.
func (r *raw) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	for _, id := range runscList(ctx, r.runsc, r.root) {
		if err := r.remove(id); err != nil {
			errs = append(errs, err)
		}
	}
	for id := range r.ids {
		for _, cg := range cgroupDirs(id) {
			os.Remove(cg)
		}
	}
	if left := runscList(ctx, r.runsc, r.root); len(left) > 0 {
		errs = append(errs, fmt.Errorf("raw runsc containers left in %s: %v", r.root, left))
	}
	// runsc --network=none keeps a namespace bound at ROOT/null-netns.
	for _, m := range mountsUnder(r.dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if err := os.RemoveAll(r.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
