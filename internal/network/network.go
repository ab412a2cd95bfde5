package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Config sets where the Manager takes addresses and names from. Zero fields
// take the defaults. Two Managers with different IfPrefix (and GuardChain) on
// one host never touch each other's namespaces, links or rules.
type Config struct {
	CIDR       string // address pool, one /30 per sandbox; default "10.211.0.0/16"
	NetNSDir   string // where namespace files are bind-mounted; default /var/run/netns
	IfPrefix   string // prefix of host veth names and namespace names, 1-7 chars; default "sbx"
	GuardChain string // iptables chain of the host guard; default "SANDBOXD-GUARD"
}

const (
	DefaultCIDR       = "10.211.0.0/16"
	DefaultNetNSDir   = "/var/run/netns"
	DefaultIfPrefix   = "sbx"
	DefaultGuardChain = "SANDBOXD-GUARD"

	sandboxIf = "eth0"
	maxIfName = 15 // IFNAMSIZ - 1
)

var (
	validPrefix = regexp.MustCompile(`^[a-z][a-z0-9]{0,6}$`)
	validID     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	validChain  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,28}$`)
)

// Manager creates and removes sandbox network endpoints. Safe for
// concurrent use; Setup and Teardown of one sandbox id must not race each
// other.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	alloc *allocator
	ipt   iptables
	nl    *netlink.Handle // bound to the namespace New ran in: the host's

	dirMu    sync.Mutex
	dirReady bool // NetNSDir is a shared mount point
}

// New returns a Manager for cfg. It opens a netlink socket in the calling
// thread's network namespace, which must be the host's.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	return newManager(cfg, log, execIptables{})
}

func newManager(cfg Config, log *slog.Logger, ipt iptables) (*Manager, error) {
	if cfg.CIDR == "" {
		cfg.CIDR = DefaultCIDR
	}
	if cfg.NetNSDir == "" {
		cfg.NetNSDir = DefaultNetNSDir
	}
	if cfg.IfPrefix == "" {
		cfg.IfPrefix = DefaultIfPrefix
	}
	if cfg.GuardChain == "" {
		cfg.GuardChain = DefaultGuardChain
	}
	if !validPrefix.MatchString(cfg.IfPrefix) {
		return nil, errdefs.Invalid("interface prefix %q: want 1-7 lowercase letters or digits", cfg.IfPrefix)
	}
	if !validChain.MatchString(cfg.GuardChain) {
		return nil, errdefs.Invalid("guard chain %q: want 1-28 letters, digits, '-' or '_'", cfg.GuardChain)
	}
	a, err := newAllocator(cfg.CIDR)
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Manager{cfg: cfg, log: log, alloc: a, ipt: ipt, nl: h}, nil
}

// Close releases the Manager's netlink socket. It removes nothing.
func (m *Manager) Close() { m.nl.Close() }

// Config returns the configuration with defaults filled in.
func (m *Manager) Config() Config { return m.cfg }

// netnsName is the namespace name of a sandbox.
func (m *Manager) netnsName(sandboxID string) string { return m.cfg.IfPrefix + "-" + sandboxID }

// hostIfName derives the host veth name from the sandbox id: the prefix and
// as many hex digits of the id's SHA-256 as fit in 15 characters (at least
// 8, so collisions are unlikely; Setup refuses one if it happens).
func (m *Manager) hostIfName(sandboxID string) string {
	sum := sha256.Sum256([]byte(sandboxID))
	return m.cfg.IfPrefix + hex.EncodeToString(sum[:])[:maxIfName-len(m.cfg.IfPrefix)]
}
