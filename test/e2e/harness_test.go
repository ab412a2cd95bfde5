// Package e2e runs sandboxd end to end: real daemons on the real engine
// (runsc), driven through the Go SDK and the sbx binary. It needs root and
// runsc; without them it skips, except under CI=true where it fails.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

var (
	binDir string // holds sandboxd, sbx and sandbox-agent
	shared *daemon
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if why := missing(); why != "" {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "e2e: cannot run under CI:", why)
			return 1
		}
		fmt.Fprintln(os.Stderr, "e2e: skipping the end-to-end suite:", why)
		return 0
	}
	var cleanup func()
	var err error
	binDir, cleanup, err = binaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer cleanup()
	shared, err = startDaemon(uniqueOpts())
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start daemon:", err)
		return 1
	}
	code := m.Run()
	if err := shared.shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: LEAK after the suite:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func missing() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("runsc"); err != nil {
		return "runsc not on PATH (scripts/deps.sh installs it)"
	}
	return ""
}

// binaries returns a directory with the three binaries: SANDBOXD_BIN_DIR if
// set (scripts/test.sh builds them there), else a fresh build.
func binaries() (string, func(), error) {
	if d := os.Getenv("SANDBOXD_BIN_DIR"); d != "" {
		return d, func() {}, nil
	}
	d, err := os.MkdirTemp("", "sandboxd-e2e-bin-")
	if err != nil {
		return "", nil, err
	}
	root := repoRoot()
	for _, b := range []struct{ name, pkg string }{
		{"sandboxd", "./cmd/sandboxd"}, {"sbx", "./cmd/sbx"}, {"sandbox-agent", "./cmd/sandbox-agent"},
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(d, b.name), b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(d)
			return "", nil, fmt.Errorf("build %s: %v\n%s", b.name, err, out)
		}
	}
	return d, func() { os.RemoveAll(d) }, nil
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// uniqueOpts returns daemon options no other run on this machine uses at the
// same time: a network prefix "sbt" + 4 hex digits (the leak checks of
// scripts/test.sh know "sbt*") and a /22 (256 sandboxes) of its own.
func uniqueOpts() daemonOpts {
	var b [2]byte
	rand.Read(b[:])
	return daemonOpts{
		prefix: fmt.Sprintf("sbt%02x%02x", b[0], b[1]),
		cidr:   fmt.Sprintf("10.%d.%d.0/22", 200+int(b[0])%50, int(b[1])&0xfc),
	}
}

type daemonOpts struct {
	prefix string // network prefix (links, namespaces)
	cidr   string
	dir    string   // reuse a data dir (restart); empty: a new one
	args   []string // more flags of sandboxd serve
}

// daemon is one sandboxd serve process.
type daemon struct {
	opts  daemonOpts
	dir   string
	addr  string
	token string
	cmd   *exec.Cmd
	log   *os.File
	done  chan error
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ownDaemon starts a daemon of the test's own; when the test and its later
// cleanups are done it is shut down, and what it left on the host fails the
// test.
func ownDaemon(t *testing.T, o daemonOpts) *daemon {
	t.Helper()
	d, err := startDaemon(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.shutdown(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// restart starts d anew on its data dir, in place (after d.kill or d.stop):
// the test's cleanup shuts down the new one.
func (d *daemon) restart(t *testing.T) {
	t.Helper()
	d2, err := startDaemon(d.opts)
	if err != nil {
		t.Fatal(err)
	}
	*d = *d2
}

func startDaemon(o daemonOpts) (_ *daemon, err error) {
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "sandboxd-e2e-"); err != nil {
			return nil, err
		}
		// A daemon that never came up leaves no data dir behind (its
		// sandboxes, if any, were swept by the kill below).
		defer func() {
			if err != nil {
				os.RemoveAll(dir)
			}
		}()
		// Base images come from the builder cache, built once per machine.
		prep := exec.Command(filepath.Join(binDir, "sandboxd"), "prepare", "--data-dir", dir)
		if out, err := prep.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("prepare: %v\n%s", err, out)
		}
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "sandboxd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--data-dir", dir, "--listen", addr,
		"--if-prefix", o.prefix, "--network-cidr", o.cidr, "--no-base-build", "--debug",
		// Every snapshot's streamed digest checked against a walk: a
		// mismatch fails the snapshot.
		"--check-digests"}, o.args...)
	cmd := exec.Command(filepath.Join(binDir, "sandboxd"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	d := &daemon{opts: o, dir: dir, addr: "http://" + addr, cmd: cmd, log: logf, done: make(chan error, 1)}
	d.opts.dir = dir
	go func() { d.done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "token")); err == nil && len(b) > 0 {
			d.token = strings.TrimSpace(string(b))
			if _, err := d.client().List(context.Background(), sandboxd.ListOptions{}); err == nil {
				return d, nil
			}
		}
		select {
		case err := <-d.done:
			return nil, fmt.Errorf("daemon exited: %v\n%s", err, d.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.kill()
			return nil, fmt.Errorf("daemon did not answer in 60 s\n%s", d.logTail())
		}
	}
}

func (d *daemon) client() *sandboxd.Client { return sandboxd.NewClient(d.addr, d.token) }

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "sandboxd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (d *daemon) logText() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "sandboxd.log"))
	return string(b)
}

// kill stops the daemon at once (as a crash would); sandboxes keep running.
func (d *daemon) kill() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	d.log.Close()
}

// stop stops the daemon gracefully; sandboxes keep running.
func (d *daemon) stop() error {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.log.Close()
		return err
	case <-time.After(30 * time.Second):
		d.kill()
		return fmt.Errorf("daemon did not stop in 30 s")
	}
}

// shutdown terminates every sandbox, stops the daemon, checks that nothing
// is left behind and removes the data directory.
func (d *daemon) shutdown() error {
	ctx := context.Background()
	c := d.client()
	if list, err := c.List(ctx, sandboxd.ListOptions{}); err == nil {
		for _, sb := range list {
			c.Sandbox(sb.ID).Terminate(ctx)
		}
	}
	err := d.stop()
	if leaks := d.leaks(); leaks != "" {
		return fmt.Errorf("%s\n--- daemon log tail ---\n%s", leaks, d.logTail())
	}
	os.RemoveAll(d.dir)
	return err
}

// leaks lists what this daemon's sandboxes left on the host.
func (d *daemon) leaks() string {
	var out []string
	if b, _ := exec.Command("runsc", "--root", filepath.Join(d.dir, "runsc"), "list", "-quiet").Output(); len(bytes.TrimSpace(b)) > 0 {
		out = append(out, "runsc containers: "+strings.TrimSpace(string(b)))
	}
	if b, _ := exec.Command("ip", "netns", "list").Output(); true {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, d.opts.prefix+"-") {
				out = append(out, "netns: "+l)
			}
		}
	}
	if b, _ := exec.Command("ip", "-o", "link").Output(); true {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 1 && strings.HasPrefix(f[1], d.opts.prefix) {
				out = append(out, "link: "+f[1])
			}
		}
	}
	if b, _ := os.ReadFile("/proc/mounts"); true {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, d.dir) {
				out = append(out, "mount: "+l)
			}
		}
	}
	if b, _ := exec.Command("iptables", "-w", "-S").Output(); bytes.Contains(b, []byte("SANDBOXD-"+strings.ToUpper(d.opts.prefix))) {
		out = append(out, "iptables guard chain still present")
	}
	return strings.Join(out, "\n")
}
