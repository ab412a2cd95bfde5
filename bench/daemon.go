package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	"github.com/sandboxd/sandboxd/api/gen/sandboxd/v1/sandboxdv1connect"
	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// The bench daemon's warm pool (see startDaemon).
const (
	benchPoolSize   = 1
	benchPoolMemMiB = 512
)

type daemonConfig struct {
	binDir  string // holds sandboxd and sandbox-agent
	runsc   string
	dataDir string // created; must not exist
	prefix  string // --if-prefix
	cidr    string // --network-cidr
}

// daemon is a private `sandboxd serve` on its own data directory.
type daemon struct {
	cfg   daemonConfig
	addr  string // http://host:port
	token string
	cmd   *exec.Cmd
	log   *os.File
	done  chan error
	// ids of every sandbox seen, for the cgroup sweep.
	seen map[string]bool
}

// startDaemon prepares cfg.dataDir (base images from the shared builder
// cache) and starts the daemon on a free loopback port. It returns once the
// daemon answers. On error nothing is left running.
func startDaemon(ctx context.Context, cfg daemonConfig) (*daemon, error) {
	bin := filepath.Join(cfg.binDir, "sandboxd")
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return nil, err
	}
	prep := exec.CommandContext(ctx, bin, "prepare", "--data-dir", cfg.dataDir, "--runsc", cfg.runsc)
	prep.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if out, err := prep.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sandboxd prepare: %v\n%s", err, out)
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(cfg.dataDir, "sandboxd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--data-dir", cfg.dataDir, "--listen", addr, "--runsc", cfg.runsc,
		"--if-prefix", cfg.prefix, "--network-cidr", cfg.cidr, "--no-base-build",
		// One restore target: the snapshots section measures a restore
		// with a prepared target and one without (see restoreBoth).
		"--restore-targets", "1",
		// A warm pool of busybox sandboxes of 512 MiB: the core section
		// creates those to measure creates from a pool, and every other
		// create (1 GiB, the default) boots a sandbox.
		"--warm-pool", fmt.Sprintf("size=%d,image=busybox,memory=%d", benchPoolSize, benchPoolMemMiB))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C at the terminal reaches only the
	// bench, which then terminates the sandboxes through the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	d := &daemon{cfg: cfg, addr: "http://" + addr, cmd: cmd, log: logf, done: make(chan error, 1), seen: map[string]bool{}}
	go func() { d.done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(cfg.dataDir, "token")); err == nil && len(b) > 0 {
			d.token = strings.TrimSpace(string(b))
			if _, err := d.client().List(ctx, sandboxd.ListOptions{}); err == nil {
				return d, nil
			}
		}
		select {
		case err := <-d.done:
			d.log.Close()
			return nil, fmt.Errorf("daemon exited: %v\n%s", err, d.logTail())
		case <-ctx.Done():
			d.close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tail := d.logTail()
			d.close()
			return nil, fmt.Errorf("daemon did not answer in 60 s\n%s", tail)
		}
	}
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// client returns a new SDK client of the daemon.
func (d *daemon) client() *sandboxd.Client { return sandboxd.NewClient(d.addr, d.token) }

// track records a sandbox id for the final sweep.
func (d *daemon) track(id string) { d.seen[id] = true }

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.cfg.dataDir, "sandboxd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// imageLayerDir returns the stored directory of the image's only layer
// (DATA/layers/sha256/HEX), found through the image API.
func (d *daemon) imageLayerDir(ctx context.Context, ref string) (string, error) {
	c := sandboxdv1connect.NewImageServiceClient(http.DefaultClient, d.addr)
	req := connect.NewRequest(&pb.GetImageRequest{Ref: ref})
	req.Header().Set("Authorization", "Bearer "+d.token)
	resp, err := c.GetImage(ctx, req)
	if err != nil {
		return "", err
	}
	layers := resp.Msg.Image.Layers
	if len(layers) != 1 {
		return "", fmt.Errorf("image %s has %d layers, want 1", ref, len(layers))
	}
	hex, ok := strings.CutPrefix(layers[0], "sha256:")
	if !ok {
		return "", fmt.Errorf("layer %q: not a sha256 digest", layers[0])
	}
	dir := filepath.Join(d.cfg.dataDir, "layers", "sha256", hex)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("layer dir %s: %v", dir, err)
	}
	return dir, nil
}

// close terminates every sandbox, stops the daemon (SIGTERM, then SIGKILL
// after 30 s), then removes whatever it left on the host and reports it as
// an error. Idempotent.
func (d *daemon) close() error {
	if d.cmd == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	if d.token != "" {
		c := d.client()
		if list, err := c.List(ctx, sandboxd.ListOptions{}); err == nil {
			for _, sb := range list {
				d.track(sb.ID)
				if err := c.Sandbox(sb.ID).Terminate(ctx); err != nil {
					errs = append(errs, fmt.Errorf("terminate %s: %w", sb.ID, err))
				}
			}
		}
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			errs = append(errs, fmt.Errorf("daemon exit: %w", err))
		}
	case <-time.After(30 * time.Second):
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
		errs = append(errs, errors.New("daemon did not stop in 30 s; killed"))
	}
	d.log.Close()
	d.cmd = nil
	if leaks := d.sweep(ctx); len(leaks) > 0 {
		errs = append(errs, fmt.Errorf("the daemon left these behind (removed now):\n  %s\n--- daemon log tail ---\n%s",
			strings.Join(leaks, "\n  "), d.logTail()))
	}
	return errors.Join(errs...)
}

// sweep removes what belongs to this daemon and is still on the host: runsc
// containers of its root, namespaces and links with its prefix, its guard
// chain, mounts under its data directory and cgroups of its sandboxes. It
// returns what it found.
func (d *daemon) sweep(ctx context.Context) []string {
	var found []string
	runscRoot := filepath.Join(d.cfg.dataDir, "runsc")
	for _, id := range runscList(ctx, d.cfg.runsc, runscRoot) {
		found = append(found, "runsc container "+id)
		d.track(id)
		quiet(ctx, d.cfg.runsc, "--root", runscRoot, "delete", "--force", id)
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], d.cfg.prefix+"-") {
				found = append(found, "netns "+f[0])
				quiet(ctx, "ip", "netns", "delete", f[0])
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "ip", "-o", "link").Output(); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 1 && strings.HasPrefix(f[1], d.cfg.prefix) {
				name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				found = append(found, "link "+name)
				quiet(ctx, "ip", "link", "delete", name)
			}
		}
	}
	chain := "SANDBOXD-" + strings.ToUpper(d.cfg.prefix)
	if exec.CommandContext(ctx, "iptables", "-w", "-S", chain).Run() == nil {
		found = append(found, "iptables chain "+chain)
		jump := []string{"-i", d.cfg.prefix + "+", "-j", chain}
		for _, hook := range []string{"INPUT", "FORWARD"} {
			for i := 0; i < 10 && exec.CommandContext(ctx, "iptables", append([]string{"-w", "-C", hook}, jump...)...).Run() == nil; i++ {
				quiet(ctx, "iptables", append([]string{"-w", "-D", hook}, jump...)...)
			}
		}
		quiet(ctx, "iptables", "-w", "-F", chain)
		quiet(ctx, "iptables", "-w", "-X", chain)
	}
	for _, m := range mountsUnder(d.cfg.dataDir) {
		found = append(found, "mount "+m)
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	for id := range d.seen {
		for _, cg := range cgroupDirs(id) {
			found = append(found, "cgroup "+cg)
			os.Remove(cg)
		}
	}
	return found
}

// runscList returns the container ids in a runsc root.
func runscList(ctx context.Context, runsc, root string) []string {
	if _, err := os.Stat(root); err != nil {
		return nil
	}
	out, _ := exec.CommandContext(ctx, runsc, "--root", root, "list", "-quiet").Output()
	return strings.Fields(string(out))
}

// quiet runs a cleanup command, ignoring its output and error.
func quiet(ctx context.Context, name string, args ...string) {
	exec.CommandContext(ctx, name, args...).Run()
}

// mountsUnder returns the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mounts")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			out = append(out, f[1])
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// cgroupDirs returns cgroup v1/v2 directories named after a container id
// (directly under a hierarchy or one level below, e.g. sandboxd/ID).
func cgroupDirs(id string) []string {
	var out []string
	for _, pat := range []string{"/sys/fs/cgroup/*/" + id, "/sys/fs/cgroup/*/*/" + id, "/sys/fs/cgroup/" + id} {
		m, _ := filepath.Glob(pat)
		out = append(out, m...)
	}
	return out
}

// createdContainers returns the daemon's engine containers that are created
// but not started: its restore targets.
func (d *daemon) createdContainers(ctx context.Context) ([]string, error) {
	return d.containers(ctx, "created")
}

// containers returns the daemon's engine containers in status.
func (d *daemon) containers(ctx context.Context, status string) ([]string, error) {
	out, err := exec.CommandContext(ctx, d.cfg.runsc, "--root", filepath.Join(d.cfg.dataDir, "runsc"), "list", "--format", "json").Output()
	if err != nil {
		return nil, fmt.Errorf("runsc list: %w", err)
	}
	var list []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("runsc list: %w", err)
	}
	var ids []string
	for _, c := range list {
		if c.Status == status {
			ids = append(ids, c.ID)
		}
	}
	return ids, nil
}

// waitPool waits until the daemon's warm pool holds n sandboxes: those its
// log says are ready, still running, that no sandbox seen so far owns.
func (d *daemon) waitPool(ctx context.Context, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ids, err := d.containers(ctx, "running")
		if err != nil {
			return err
		}
		ready := d.poolReadyIDs()
		ids = slices.DeleteFunc(ids, func(id string) bool { return d.seen[id] || !ready[id] })
		if len(ids) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("warm pool not refilled in 60 s (pool sandboxes: %v)", ids)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// poolReadyIDs returns the sandboxes the daemon's log says its warm pool
// made ready.
func (d *daemon) poolReadyIDs() map[string]bool {
	b, _ := os.ReadFile(filepath.Join(d.cfg.dataDir, "sandboxd.log"))
	ready := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `msg="warm pool: sandbox ready"`) {
			if _, id, ok := strings.Cut(l, "sandbox_id="); ok {
				ready[strings.Fields(id)[0]] = true
			}
		}
	}
	return ready
}

// waitTarget waits until the daemon holds exactly one restore target, not
// named not, and returns its id.
func (d *daemon) waitTarget(ctx context.Context, not string) (string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ids, err := d.createdContainers(ctx)
		if err != nil {
			return "", err
		}
		if len(ids) == 1 && ids[0] != not {
			return ids[0], nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no restore target ready in 60 s (created containers: %v)", ids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
