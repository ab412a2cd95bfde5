package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// Config is the daemon's whole configuration, parsed once from flags.
type Config struct {
	DataDir      string
	Listen       string
	RunscPath    string
	AgentBin     string
	NetworkCIDR  string
	IfPrefix     string
	DefaultImage string
	CacheDir     string
	Mirror       string
	Debug        bool
	// CheckDigests checks every layer digest computed during extraction
	// against a walk of the extracted tree (slower; for tests).
	CheckDigests bool
	// LayerFormat is how new layers are stored: "auto" (EROFS images where
	// the kernel mounts them from files, else trees) or "tree".
	LayerFormat string
	NoBaseBuild bool
	// MaxFileSize caps files written through the file API (bytes; 0: none).
	MaxFileSize int64
	// RestoreTargets is how many memory snapshots get a restore prepared
	// ahead (sandbox.Snapshots.SetRestoreTargets).
	RestoreTargets int
	// FinishedRetention is how long finished sandboxes stay listable, with
	// their logs (0: forever).
	FinishedRetention time.Duration
	// WarmPools are the --warm-pool flags, parsed by validate into Pools.
	WarmPools []string
	Pools     []sandbox.PoolSpec
}

// AddFlags registers the flags.
func (c *Config) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&c.DataDir, "data-dir", "/var/lib/sandboxd", "where sandboxd keeps its metadata, images and sandboxes")
	f.StringVar(&c.Listen, "listen", "127.0.0.1:7423", "address of the API (loopback unless you mean otherwise)")
	f.StringVar(&c.RunscPath, "runsc", "", "the runsc binary (default: runsc on PATH)")
	f.StringVar(&c.AgentBin, "agent", "", "the static sandbox-agent binary (default: sandbox-agent beside this binary)")
	f.StringVar(&c.NetworkCIDR, "network-cidr", "10.211.0.0/16", "address pool of the sandboxes' links to the host (one /30 each)")
	f.StringVar(&c.IfPrefix, "if-prefix", "sbx", "prefix of the sandboxes' host links and namespaces (1-7 lowercase letters or digits)")
	f.StringVar(&c.DefaultImage, "default-image", "debian-slim", "image of sandboxes created without one")
	f.StringVar(&c.CacheDir, "cache-dir", "/var/cache/sandboxd", "cache of built base images, shared by data directories")
	f.StringVar(&c.Mirror, "debian-mirror", "", "Debian mirror for the debian-slim image (default: the host's apt sources)")
	f.BoolVar(&c.Debug, "debug", false, "debug logging, runsc debug logs under DATA/logs/runsc")
	f.BoolVar(&c.CheckDigests, "check-digests", false, "check each layer digest computed while extracting against a walk of the extracted tree (slower; for tests)")
	f.StringVar(&c.LayerFormat, "layer-format", "auto", `how new layers are stored: "auto" (one EROFS image file each, mounted, where the kernel can; else a tree of files) or "tree"`)
	f.BoolVar(&c.NoBaseBuild, "no-base-build", false, "serve: do not build missing base images at start-up")
	f.Int64Var(&c.MaxFileSize, "max-file-size", 0, "serve: largest file (bytes) a write of the file API may make; 0 means no limit")
	f.DurationVar(&c.FinishedRetention, "finished-retention", sandbox.DefaultRetention, "serve: how long a finished sandbox stays listable, with its logs, before it is forgotten; 0: forever")
	f.StringArrayVar(&c.WarmPools, "warm-pool", nil, "serve: keep sandboxes booted ahead for creates that ask for this image and these limits: size=N[,image=REF][,cpu=C][,memory=MIB][,pids=N] (image: the default image; limits: the create defaults); repeat for more pools")
	f.IntVar(&c.RestoreTargets, "restore-targets", 2, "serve: how many memory snapshots (the latest taken or restored) keep a restore prepared ahead, each an idle engine container; 0: none")
}

func (c *Config) validate() error {
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	c.DataDir = abs
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: %w", c.Listen, err)
	}
	for _, w := range c.WarmPools {
		p, err := sandbox.ParsePoolSpec(w)
		if err != nil {
			return fmt.Errorf("--warm-pool: %w", err)
		}
		c.Pools = append(c.Pools, p)
	}
	if c.AgentBin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.AgentBin = filepath.Join(filepath.Dir(exe), "sandbox-agent")
	}
	if _, err := os.Stat(c.AgentBin); err != nil {
		return fmt.Errorf("agent binary: %w (build it with scripts/build.sh, or pass --agent)", err)
	}
	if c.RunscPath == "" {
		p, err := lookRunsc()
		if err != nil {
			return err
		}
		c.RunscPath = p
	}
	return nil
}

func lookRunsc() (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH") + ":/usr/local/bin:/usr/bin") {
		p := filepath.Join(dir, "runsc")
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("runsc not found on PATH (install it with scripts/deps.sh, or pass --runsc)")
}
