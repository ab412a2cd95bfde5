// Command bench measures sandboxd against the raw engine (runsc) in the same
// run and prints the figures side by side: `make bench` (scripts/bench.sh)
// builds the binaries and runs it as root.
//
// It starts a private daemon on a temporary data directory (links and
// namespaces prefixed sbbNN, addresses from 10.216.4*NN.0/22, NN random so
// that two runs on one machine keep apart) and drives raw runsc
// with its own --root under a temporary directory; it never touches the
// default runsc root or a daemon at /var/lib/sandboxd. Everything it made is
// removed at the end, also after an error or Ctrl-C.
//
// Sections are listed in sections(); adding one is adding a file with a
// function of type sectionFunc and a line in that list.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// env is what every section gets: the iteration count, a client of the
// private daemon and the raw engine. Sections must leave no sandbox or raw
// container behind when they return (the final cleanup is a safety net).
type env struct {
	n      int
	daemon *daemon
	client *sandboxd.Client
	raw    *raw
	logf   func(format string, args ...any)
}

// sectionFunc measures one group of figures.
type sectionFunc func(ctx context.Context, e *env) ([]figure, error)

type section struct {
	name string
	run  sectionFunc
}

// sections is the explicit list of benchmark sections, run in this order.
func sections() []section {
	return []section{
		{"core", runCore},
		{"snapshots", runSnapshots},
		{"fssnapshots", runFSSnapshots},
		{"files", runFiles},
	}
}

type options struct {
	n        int
	only     string
	jsonPath string
	binDir   string
	runsc    string
	keepTmp  bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == spawnFloorCmd {
		spawnFloorMain(os.Args[2:]) // inside a sandbox: see floor.go
		return
	}
	var o options
	flag.IntVar(&o.n, "n", 20, "iterations (sandboxes created per latency figure)")
	flag.StringVar(&o.only, "only", "", "run only this section ("+strings.Join(sectionNames(), ", ")+")")
	flag.StringVar(&o.jsonPath, "json", "", "also write the figures as JSON to this file")
	flag.StringVar(&o.binDir, "bin", "", "directory holding sandboxd and sandbox-agent (default $SANDBOXD_BIN_DIR, else ./bin)")
	flag.StringVar(&o.runsc, "runsc", "", "runsc binary (default: runsc on PATH)")
	flag.BoolVar(&o.keepTmp, "keep", false, "keep the temporary directory (daemon log, runsc logs) for inspection")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func sectionNames() []string {
	var out []string
	for _, s := range sections() {
		out = append(out, s.name)
	}
	return out
}

func run(o options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (runsc, network namespaces, mounts)")
	}
	if o.n < 1 {
		return errors.New("-n must be at least 1")
	}
	todo := sections()
	if o.only != "" {
		todo = nil
		for _, s := range sections() {
			if s.name == o.only {
				todo = append(todo, s)
			}
		}
		if len(todo) == 0 {
			return fmt.Errorf("unknown section %q (have %s)", o.only, strings.Join(sectionNames(), ", "))
		}
	}
	if o.binDir == "" {
		o.binDir = os.Getenv("SANDBOXD_BIN_DIR")
	}
	if o.binDir == "" {
		o.binDir = "bin"
	}
	if o.binDir, err = filepath.Abs(o.binDir); err != nil {
		return err
	}
	if o.runsc == "" {
		if o.runsc, err = exec.LookPath("runsc"); err != nil {
			return fmt.Errorf("runsc not found (scripts/deps.sh installs it): %w", err)
		}
	}

	// Ctrl-C and SIGTERM cancel ctx; the deferred cleanups still run.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}

	tmp, err := os.MkdirTemp("", "sandboxd-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keepTmp {
			logf("kept %s", tmp)
			return
		}
		// A mount left there (a bug reported above) must not be walked into.
		for _, m := range mountsUnder(tmp) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
		if rerr := os.RemoveAll(tmp); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s: %w", tmp, rerr))
		}
	}()

	slot := mrand.IntN(64)
	logf("starting a private daemon (data dir under %s)", tmp)
	d, err := startDaemon(ctx, daemonConfig{
		binDir: o.binDir, runsc: o.runsc, dataDir: filepath.Join(tmp, "data"),
		prefix: fmt.Sprintf("sbb%02x", slot), cidr: fmt.Sprintf("10.216.%d.0/22", 4*slot),
	})
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	defer func() {
		logf("stopping the daemon and checking for leftovers")
		if cerr := d.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("daemon cleanup: %w", cerr))
		}
	}()

	layer, err := d.imageLayerDir(ctx, "busybox")
	if err != nil {
		return fmt.Errorf("busybox image: %w", err)
	}
	r, err := newRaw(o.runsc, filepath.Join(tmp, "raw"), layer)
	if err != nil {
		return fmt.Errorf("raw engine: %w", err)
	}
	defer func() {
		if cerr := r.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("raw cleanup: %w", cerr))
		}
	}()

	e := &env{n: o.n, daemon: d, client: d.client(), raw: r, logf: logf}
	rep := report{
		Time: time.Now().UTC(), N: o.n, Cores: runtime.NumCPU(), Kernel: kernelRelease(),
	}
	for _, s := range todo {
		logf("section %s", s.name)
		figs, err := s.run(ctx, e)
		if err != nil {
			return fmt.Errorf("section %s: %w", s.name, err)
		}
		rep.Sections = append(rep.Sections, sectionReport{Name: s.name, Figures: figs})
		printTable(os.Stdout, s.name, figs)
	}
	if o.jsonPath != "" {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonPath, b.Bytes(), 0o644); err != nil {
			return err
		}
		logf("wrote %s", o.jsonPath)
	}
	return nil
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
