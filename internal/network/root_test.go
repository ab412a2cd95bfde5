package network

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
	"github.com/sandboxd/sandboxd/internal/testutil"
)

// Root tests use a pool, prefix and chain of their own, chosen per test
// process, so they touch neither a running daemon nor other test processes
// on the same host (which may use this package with "sbt" and 10.212.0.0/24).
// All traffic stays between the host and namespaces these tests made.
var rootConfig = sync.OnceValues(func() (Config, error) {
	b := make([]byte, 4)
	rand.Read(b)
	suffix := ""
	for _, c := range b {
		suffix += string("abcdefghijklmnopqrstuvwxyz0123456789"[int(c)%36])
	}
	// A /24 in 10.212.16.0-10.212.255.0 that no host address or route touches.
	routes, err := netlink.RouteList(nil, unix.AF_INET)
	if err != nil {
		return Config{}, err
	}
	for range 100 {
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 212, byte(16 + mathrand.IntN(240)), 0}), 24)
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			p := prefixOfNet(r.Dst)
			return p.Bits() > 0 && p.Overlaps(cidr)
		}) {
			return Config{CIDR: cidr.String(), IfPrefix: "nt" + suffix, GuardChain: "NT-GUARD-" + strings.ToUpper(suffix)}, nil
		}
	}
	return Config{}, fmt.Errorf("no free /24 in 10.212.0.0/16")
})

func prefixOfNet(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP.To4())
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

// testConfig returns this process's root test configuration.
func testConfig(t *testing.T) Config {
	t.Helper()
	cfg, err := rootConfig()
	if err != nil {
		t.Fatalf("choose test network: %v", err)
	}
	return cfg
}

// requireRoot: see testutil.RequireRoot.
func requireRoot(t testing.TB) { testutil.RequireRoot(t, "network namespaces, veth, iptables") }

// newRootManager returns a real Manager. On cleanup it fails the test if
// anything it made is left behind, then removes it all.
func newRootManager(t *testing.T) *Manager {
	t.Helper()
	requireRoot(t)
	cfg := testConfig(t)
	t.Logf("test network: %+v", cfg)
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx := context.Background()
	if l, err := m.Leftovers(ctx); err != nil || !l.Empty() {
		t.Fatalf("before the test: leftovers %+v, err %v", l, err)
	}
	t.Cleanup(func() {
		defer m.Close()
		if l, err := m.Leftovers(ctx); err != nil || !l.Empty() {
			t.Errorf("leak check: leftovers %+v, err %v", l, err)
		}
		if _, err := m.CleanupAll(ctx, nil); err != nil {
			t.Errorf("CleanupAll: %v", err)
		}
		if err := m.RemoveGuard(ctx); err != nil {
			t.Errorf("RemoveGuard: %v", err)
		}
	})
	return m
}

// setup runs Setup and registers a Teardown.
func setup(t *testing.T, m *Manager, id string) Endpoint {
	t.Helper()
	ep, err := m.Setup(t.Context(), id)
	if err != nil {
		t.Fatalf("Setup(%q): %v", id, err)
	}
	t.Cleanup(func() {
		if err := m.Teardown(context.Background(), ep); err != nil {
			t.Errorf("Teardown(%s): %v", id, err)
		}
	})
	return ep
}

// listenIn starts an echo server inside ep's namespace on addr.
func listenIn(t *testing.T, ep Endpoint, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := inNetNS(ep.NetNSPath, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s on %s: %v", ep.NetNSName, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveEcho(ln)
	return ln
}

func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); io.Copy(c, c) }()
	}
}

// echo checks that a server at the other end of c echoes.
func echo(c net.Conn) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return fmt.Errorf("echo: got %q, want ping", buf)
	}
	return nil
}

// dialFrom dials addr from inside ep's namespace.
func dialFrom(ep Endpoint, addr string, timeout time.Duration) (c net.Conn, err error) {
	err = inNetNS(ep.NetNSPath, func() error {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

func TestSetupTwoEndpoints(t *testing.T) {
	m := newRootManager(t)
	eps := []Endpoint{setup(t, m, "net-a"), setup(t, m, "net-b")}
	if eps[0].SandboxIP == eps[1].SandboxIP || eps[0].HostIf == eps[1].HostIf {
		t.Fatalf("two endpoints share an address or link: %+v", eps)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, ep := range eps {
		t.Run(ep.NetNSName, func(t *testing.T) {
			if !strings.Contains(string(out), ep.NetNSName) {
				t.Errorf("ip netns list does not show %s:\n%s", ep.NetNSName, out)
			}
			checkHostEnd(t, m, ep)
			checkSandboxEnd(t, ep)
			checkStaticNeighbors(t, ep)
			ln := listenIn(t, ep, ep.AgentAddr(0))
			start := time.Now()
			c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
			if err != nil {
				t.Fatalf("dial sandbox from host: %v", err)
			}
			if err := echo(c); err != nil {
				t.Fatalf("echo through veth: %v", err)
			}
			t.Logf("host -> %s: connect and echo in %v", ln.Addr(), time.Since(start))
		})
	}
}

func checkHostEnd(t *testing.T, m *Manager, ep Endpoint) {
	t.Helper()
	link, err := m.nl.LinkByName(ep.HostIf)
	if err != nil {
		t.Fatalf("host link: %v", err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host link %s is down", ep.HostIf)
	}
	if !hasAddr(t, m.nl, link, ep.HostIP, ep.PrefixLen) {
		t.Errorf("host link %s lacks %s/%d", ep.HostIf, ep.HostIP, ep.PrefixLen)
	}
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + ep.HostIf + "/disable_ipv6")
	if err == nil && strings.TrimSpace(string(b)) != "1" {
		t.Errorf("host link %s: IPv6 is on", ep.HostIf)
	}
}

func checkSandboxEnd(t *testing.T, ep Endpoint) {
	t.Helper()
	err := inNetNS(ep.NetNSPath, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("lo is down in %s", ep.NetNSName)
		}
		eth, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		if eth.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("eth0 is down in %s", ep.NetNSName)
		}
		if !hasAddr(t, h, eth, ep.SandboxIP, ep.PrefixLen) {
			t.Errorf("eth0 in %s lacks %s/%d", ep.NetNSName, ep.SandboxIP, ep.PrefixLen)
		}
		routes, err := h.RouteList(eth, unix.AF_INET)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(ep.HostIP.AsSlice())
		}) {
			t.Errorf("no default route via %s in %s: %v", ep.HostIP, ep.NetNSName, routes)
		}
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		if len(links) != 2 {
			t.Errorf("%s holds %d links, want lo and eth0", ep.NetNSName, len(links))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("inspect %s: %v", ep.NetNSName, err)
	}
}

func hasAddr(t *testing.T, h *netlink.Handle, link netlink.Link, ip netip.Addr, bits int) bool {
	t.Helper()
	addrs, err := h.AddrList(link, unix.AF_INET)
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	for _, a := range addrs {
		if ones, _ := a.Mask.Size(); a.IP.Equal(ip.AsSlice()) && ones == bits {
			return true
		}
	}
	return false
}

// countingIptables counts the mutating calls reaching the real iptables.
type countingIptables struct {
	iptables
	mutations int
}

func (c *countingIptables) newChain(ctx context.Context, ch string) error {
	c.mutations++
	return c.iptables.newChain(ctx, ch)
}
func (c *countingIptables) insert(ctx context.Context, ch string, pos int, r []string) error {
	c.mutations++
	return c.iptables.insert(ctx, ch, pos, r)
}
func (c *countingIptables) deleteAt(ctx context.Context, ch string, pos int) error {
	c.mutations++
	return c.iptables.deleteAt(ctx, ch, pos)
}

func TestGuard(t *testing.T) {
	m := newRootManager(t)
	ctx := t.Context()
	ipt := &countingIptables{iptables: execIptables{}}
	m.ipt = ipt
	ep := setup(t, m, "guard")

	// A host service bound to the host end's address only.
	host, err := net.Listen("tcp", netip.AddrPortFrom(ep.HostIP, 0).String())
	if err != nil {
		t.Fatalf("host listener: %v", err)
	}
	t.Cleanup(func() { host.Close() })
	go serveEcho(host)
	inside := listenIn(t, ep, ep.AgentAddr(0))

	reach := func(t *testing.T, wantHost bool) {
		t.Helper()
		c, err := dialFrom(ep, host.Addr().String(), 300*time.Millisecond)
		if err == nil {
			err = echo(c)
		}
		if wantHost && err != nil {
			t.Errorf("sandbox -> host %s: got %v, want a connection", host.Addr(), err)
		}
		if !wantHost && err == nil {
			t.Errorf("sandbox -> host %s: connected, want the guard to drop it", host.Addr())
		}
		// The daemon's direction works either way.
		c, err = net.DialTimeout("tcp", inside.Addr().String(), 2*time.Second)
		if err == nil {
			err = echo(c)
		}
		if err != nil {
			t.Errorf("host -> sandbox %s: %v", inside.Addr(), err)
		}
	}

	t.Run("without guard", func(t *testing.T) { reach(t, true) })

	if err := m.EnsureGuard(ctx); err != nil {
		t.Fatalf("EnsureGuard: %v", err)
	}
	ipt.mutations = 0
	if err := m.EnsureGuard(ctx); err != nil {
		t.Fatalf("second EnsureGuard: %v", err)
	}
	if ipt.mutations != 0 {
		t.Errorf("second EnsureGuard made %d changes, want 0 (rule spelling differs from iptables -S?)", ipt.mutations)
	}
	t.Run("with guard", func(t *testing.T) { reach(t, false) })

	for range 2 {
		if err := m.RemoveGuard(ctx); err != nil {
			t.Fatalf("RemoveGuard: %v", err)
		}
	}
	out, err := exec.Command("iptables", "-w", "-S").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -S: %v: %s", err, out)
	}
	if chain := m.Config().GuardChain; strings.Contains(string(out), chain) {
		t.Errorf("after RemoveGuard iptables still mentions %s:\n%s", chain, out)
	}
	t.Run("guard removed", func(t *testing.T) { reach(t, true) })
}

func TestTeardownIdempotentAndClean(t *testing.T) {
	m := newRootManager(t)
	ctx := t.Context()
	ep, err := m.Setup(ctx, "tear")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	for i := range 3 {
		if err := m.Teardown(ctx, ep); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
	}
	if l, err := m.Leftovers(ctx); err != nil || !l.Empty() {
		t.Errorf("after Teardown: leftovers %+v, err %v", l, err)
	}
	if _, err := os.Stat(ep.NetNSPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns file %s: got %v, want it gone", ep.NetNSPath, err)
	}
	if n := m.alloc.inUse(); n != 0 {
		t.Errorf("after Teardown: %d addresses in use, want 0", n)
	}
}

func TestSetupFailuresUndo(t *testing.T) {
	m := newRootManager(t)
	ctx := t.Context()

	t.Run("same id twice", func(t *testing.T) {
		first := setup(t, m, "twice")
		if _, err := m.Setup(ctx, "twice"); !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Fatalf("second Setup: got %v, want ErrAlreadyExists", err)
		}
		checkSandboxEnd(t, first) // the first one is untouched
		if n := m.alloc.inUse(); n != 1 {
			t.Errorf("%d addresses in use, want 1", n)
		}
	})

	t.Run("host link name taken", func(t *testing.T) {
		// A link squatting on the name Setup derives: veth creation
		// fails after the namespace exists, which must then be undone.
		name := m.hostIfName("squat")
		squat := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: m.Config().IfPrefix + "peer"}
		if err := m.nl.LinkAdd(squat); err != nil {
			t.Fatalf("add squatting veth: %v", err)
		}
		t.Cleanup(func() { m.delLink(name) })
		_, err := m.Setup(ctx, "squat")
		if !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Fatalf("Setup: got %v, want ErrAlreadyExists", err)
		}
		if _, err := os.Stat(filepath.Join(m.Config().NetNSDir, m.netnsName("squat"))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns file left after failed Setup: %v", err)
		}
		if n := m.alloc.inUse(); n != 0 {
			t.Errorf("%d addresses in use after failed Setup, want 0", n)
		}
	})

	t.Run("canceled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := m.Setup(cctx, "canceled"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Setup: got %v, want context.Canceled", err)
		}
		if n := m.alloc.inUse(); n != 0 {
			t.Errorf("%d addresses in use after failed Setup, want 0", n)
		}
	})

	t.Run("bad id", func(t *testing.T) {
		for _, id := range []string{"", "../x", "a/b", strings.Repeat("x", 200)} {
			if _, err := m.Setup(ctx, id); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("Setup(%q): got %v, want ErrInvalidArgument", id, err)
			}
		}
	})

	t.Run("pool exhausted", func(t *testing.T) {
		cfg := m.Config()
		last := netip.MustParsePrefix(cfg.CIDR).Addr().As4()
		last[3] = 252 // m allocates from the bottom and never gets here
		cfg.CIDR = netip.PrefixFrom(netip.AddrFrom4(last), 30).String()
		small, err := New(cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer small.Close()
		setup(t, small, "only")
		if _, err := small.Setup(ctx, "more"); !errors.Is(err, errdefs.ErrResourceExhausted) {
			t.Errorf("Setup on a full pool: got %v, want ErrResourceExhausted", err)
		}
	})
}

func TestCleanupAllKeepsKnown(t *testing.T) {
	m := newRootManager(t)
	ctx := t.Context()
	keep := setup(t, m, "keep")
	lost, err := m.Setup(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.Leftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(l.NetNS)
	if want := []string{m.netnsName("keep"), m.netnsName("lost")}; !slices.Equal(l.NetNS, want) || len(l.Links) != 2 {
		t.Fatalf("Leftovers: got %+v, want netns %v and two links", l, want)
	}
	// A restarted daemon: new Manager, re-adopts what its metadata knows.
	m2, err := New(m.Config(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if err := m2.Reserve(keep); err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	removed, err := m2.CleanupAll(ctx, []Endpoint{keep})
	if err != nil {
		t.Fatalf("CleanupAll: %v", err)
	}
	if !slices.Equal(removed.NetNS, []string{lost.NetNSName}) || !slices.Equal(removed.Links, []string{lost.HostIf}) {
		t.Errorf("CleanupAll removed %+v, want only %s", removed, lost.NetNSName)
	}
	checkSandboxEnd(t, keep)
	next, err := m2.Setup(ctx, "after-restart")
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Teardown(ctx, next)
	if next.SandboxIP == keep.SandboxIP {
		t.Errorf("Setup after Reserve reused the reserved %s", keep.SandboxIP)
	}
	m.Release(lost) // m made it; CleanupAll does not touch leases
}

func TestSetupTeardownTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("timing in -short mode")
	}
	m := newRootManager(t)
	ctx := t.Context()
	const n = 20
	var setups, teardowns []time.Duration
	for i := range n {
		start := time.Now()
		ep, err := m.Setup(ctx, fmt.Sprintf("time-%02d", i))
		if err != nil {
			t.Fatalf("Setup: %v", err)
		}
		setups = append(setups, time.Since(start))
		start = time.Now()
		if err := m.Teardown(ctx, ep); err != nil {
			t.Fatalf("Teardown: %v", err)
		}
		teardowns = append(teardowns, time.Since(start))
	}
	t.Logf("Setup    p50 %v p90 %v max %v (n=%d)", pct(setups, 50), pct(setups, 90), pct(setups, 100), n)
	t.Logf("Teardown p50 %v p90 %v max %v (n=%d)", pct(teardowns, 50), pct(teardowns, 90), pct(teardowns, 100), n)
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

// TestFirstConnectionRightAfterSetup guards against the link watcher race:
// a connection made the moment Setup returns must not lose its ARP request
// (which would stall it for a second).
func TestFirstConnectionRightAfterSetup(t *testing.T) {
	m := newRootManager(t)
	ctx := t.Context()
	for i := range 10 {
		ep, err := m.Setup(ctx, fmt.Sprintf("first-%d", i))
		if err != nil {
			t.Fatalf("Setup: %v", err)
		}
		host, err := net.Listen("tcp", netip.AddrPortFrom(ep.HostIP, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := dialFrom(ep, host.Addr().String(), 300*time.Millisecond)
		if err != nil {
			t.Errorf("round %d: first dial sandbox -> host: %v", i, err)
		} else {
			c.Close()
		}
		host.Close()
		if err := m.Teardown(ctx, ep); err != nil {
			t.Fatalf("Teardown: %v", err)
		}
	}
}

func TestConcurrentSetup(t *testing.T) {
	m := newRootManager(t)
	const n = 8
	eps := make([]Endpoint, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { eps[i], errs[i] = m.Setup(t.Context(), fmt.Sprintf("conc-%d", i)) })
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, ep := range eps {
		if errs[i] != nil {
			t.Errorf("Setup #%d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { m.Teardown(context.Background(), ep) })
		if seen[ep.SandboxIP] {
			t.Errorf("address %s given twice", ep.SandboxIP)
		}
		seen[ep.SandboxIP] = true
		checkSandboxEnd(t, ep)
	}
}

// checkStaticNeighbors asserts that each end has the other's hardware
// address as a permanent neighbor entry (no ARP before a first packet).
func checkStaticNeighbors(t *testing.T, ep Endpoint) {
	t.Helper()
	show := func(args ...string) string {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	hostMAC := strings.TrimSpace(show("-br", "link", "show", "dev", ep.HostIf))
	ethMAC := strings.TrimSpace(show("-n", ep.NetNSName, "-br", "link", "show", "dev", "eth0"))
	field := func(s string) string { // "NAME STATE MAC FLAGS"
		f := strings.Fields(s)
		if len(f) < 3 {
			t.Fatalf("unexpected link line %q", s)
		}
		return f[2]
	}
	onHost := show("neigh", "show", ep.SandboxIP.String(), "dev", ep.HostIf)
	if !strings.Contains(onHost, field(ethMAC)) || !strings.Contains(onHost, "PERMANENT") {
		t.Errorf("host: no permanent entry %s -> %s: %q", ep.SandboxIP, field(ethMAC), onHost)
	}
	inNS := show("-n", ep.NetNSName, "neigh", "show", ep.HostIP.String(), "dev", "eth0")
	if !strings.Contains(inNS, field(hostMAC)) || !strings.Contains(inNS, "PERMANENT") {
		t.Errorf("namespace: no permanent entry %s -> %s: %q", ep.HostIP, field(hostMAC), inNS)
	}
}
