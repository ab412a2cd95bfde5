package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Setup gives sandboxID a new network namespace named IfPrefix-sandboxID,
// with "eth0" (the sandbox end of a veth) holding the sandbox address, a
// default route via the host end, and lo up. The host end stays in the host
// namespace with the host address.
//
// It returns ErrInvalidArgument for a bad id, ErrAlreadyExists when the
// namespace or host link exists, ErrResourceExhausted when the pool is full.
// On any error everything made so far is undone. A restored sandbox gets a
// fresh Setup: new namespace, new addresses.
func (m *Manager) Setup(ctx context.Context, sandboxID string) (_ Endpoint, err error) {
	if !validID.MatchString(sandboxID) {
		return Endpoint{}, errdefs.Invalid("sandbox id %q: not usable as a namespace name", sandboxID)
	}
	log := m.log.With("sandbox_id", sandboxID)
	name := m.netnsName(sandboxID)
	// ep is local, not the named result: the undo steps below capture it and
	// must still see it after a "return Endpoint{}, err".
	ep := Endpoint{
		NetNSName: name,
		NetNSPath: filepath.Join(m.cfg.NetNSDir, name),
		HostIf:    m.hostIfName(sandboxID),
	}

	var u undo
	defer func() {
		if err != nil {
			if uerr := u.run(); uerr != nil {
				log.Warn("undo network setup", "err", uerr)
			}
		}
	}()

	l, err := m.alloc.allocate(name)
	if err != nil {
		return Endpoint{}, err
	}
	u.add(func() error { m.alloc.release(name, l.host, l.sandbox, l.bits); return nil })
	ep.HostIP, ep.SandboxIP, ep.PrefixLen = l.host, l.sandbox, l.bits

	if err := m.ensureDir(); err != nil {
		return Endpoint{}, err
	}
	if err := ctx.Err(); err != nil {
		return Endpoint{}, err
	}
	if err := createNetNS(ep.NetNSPath); err != nil {
		return Endpoint{}, err
	}
	u.add(func() error { return removeNetNS(ep.NetNSPath) })

	if err := m.addVeth(ep); err != nil {
		return Endpoint{}, err
	}
	u.add(func() error { return m.delLink(ep.HostIf) })

	if err := ctx.Err(); err != nil {
		return Endpoint{}, err
	}
	if err := m.configureHostEnd(ep); err != nil {
		return Endpoint{}, err
	}
	nsnl, err := netlinkIn(ep.NetNSPath)
	if err != nil {
		return Endpoint{}, err
	}
	defer nsnl.Close()
	if err := configureSandboxEnd(nsnl, ep); err != nil {
		return Endpoint{}, err
	}
	host, eth, err := m.waitOperUp(ctx, nsnl, ep)
	if err != nil {
		return Endpoint{}, err
	}
	if err := m.addStaticNeighbors(nsnl, ep, host, eth); err != nil {
		return Endpoint{}, err
	}
	u.release()
	log.Debug("network set up", "netns", ep.NetNSName, "host_if", ep.HostIf, "sandbox_ip", ep.SandboxIP)
	return ep, nil
}

// ensureDir prepares NetNSDir once per Manager (retried after a failure).
func (m *Manager) ensureDir() error {
	m.dirMu.Lock()
	defer m.dirMu.Unlock()
	if m.dirReady {
		return nil
	}
	if err := ensureNetNSDir(m.cfg.NetNSDir); err != nil {
		return err
	}
	m.dirReady = true
	return nil
}

// addVeth creates the veth pair with its peer born inside the namespace as
// eth0, so no rename and no name clash in the host namespace.
func (m *Manager) addVeth(ep Endpoint) error {
	fd, err := unix.Open(ep.NetNSPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer unix.Close(fd)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ep.HostIf},
		PeerName:      sandboxIf,
		PeerNamespace: netlink.NsFd(fd),
	}
	err = m.nl.LinkAdd(veth)
	if errors.Is(err, unix.EEXIST) {
		return errdefs.AlreadyExists("host link %s exists", ep.HostIf)
	}
	if err != nil {
		return fmt.Errorf("create veth: %w", err)
	}
	return nil
}

// configureHostEnd turns IPv6 off on the host end (the sandbox must not
// reach the host over a link-local address either), sets the host address
// and brings the link up.
func (m *Manager) configureHostEnd(ep Endpoint) error {
	link, err := m.nl.LinkByName(ep.HostIf)
	if err != nil {
		return fmt.Errorf("find host link: %w", err)
	}
	sysctl := filepath.Join("/proc/sys/net/ipv6/conf", ep.HostIf, "disable_ipv6")
	if err := os.WriteFile(sysctl, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable ipv6 on host link: %w", err)
	}
	addr := &netlink.Addr{IPNet: ipNet(ep.HostIP.AsSlice(), ep.PrefixLen)}
	if err := m.nl.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add host address: %w", err)
	}
	if err := m.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring host link up: %w", err)
	}
	return nil
}

// netlinkIn returns a netlink handle bound to the namespace at path, usable
// from any thread. The caller closes it.
func netlinkIn(path string) (h *netlink.Handle, err error) {
	err = inNetNS(path, func() error {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns: %w", err)
	}
	return h, nil
}

// configureSandboxEnd brings lo up, gives eth0 its address and brings it
// up, and routes everything via the host end; h is bound to the namespace.
func configureSandboxEnd(h *netlink.Handle, ep Endpoint) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	eth, err := h.LinkByName(sandboxIf)
	if err != nil {
		return fmt.Errorf("find %s: %w", sandboxIf, err)
	}
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(ep.SandboxIP.AsSlice(), ep.PrefixLen)}); err != nil {
		return fmt.Errorf("add sandbox address: %w", err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring %s up: %w", sandboxIf, err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: ep.HostIP.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route: %w", err)
	}
	return nil
}

// addStaticNeighbors makes each end of the link know the other's hardware
// address for good (NUD_PERMANENT), so that no first packet waits for ARP:
// not the host's first dial of the agent, not the sandbox's answer. runsc
// copies permanent entries of the namespace into gVisor's netstack when it
// starts or restores the sandbox; the entries go with the veth pair.
func (m *Manager) addStaticNeighbors(nsnl *netlink.Handle, ep Endpoint, host, eth netlink.Link) error {
	if err := m.nl.NeighSet(&netlink.Neigh{
		LinkIndex: host.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: ep.SandboxIP.AsSlice(), HardwareAddr: eth.Attrs().HardwareAddr,
	}); err != nil {
		return fmt.Errorf("add the sandbox's neighbor entry: %w", err)
	}
	if err := nsnl.NeighSet(&netlink.Neigh{
		LinkIndex: eth.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: ep.HostIP.AsSlice(), HardwareAddr: host.Attrs().HardwareAddr,
	}); err != nil {
		return fmt.Errorf("add the host's neighbor entry in the namespace: %w", err)
	}
	return nil
}

// Until the kernel's link watcher has run for both ends (about a
// millisecond after they come up), their queues drop packets; an ARP request
// lost there stalls the first connection for a second (the ARP retry). So
// Setup waits for both to be operationally up.
const (
	operUpTimeout = 2 * time.Second
	operUpPoll    = 200 * time.Microsecond
)

// waitOperUp waits for both ends of ep to be operationally up and returns
// both links as last read.
func (m *Manager) waitOperUp(ctx context.Context, nsnl *netlink.Handle, ep Endpoint) (host, eth netlink.Link, err error) {
	deadline := time.Now().Add(operUpTimeout)
	for {
		host, err := m.nl.LinkByName(ep.HostIf)
		if err != nil {
			return nil, nil, fmt.Errorf("find host link: %w", err)
		}
		eth, err := nsnl.LinkByName(sandboxIf)
		if err != nil {
			return nil, nil, fmt.Errorf("find %s: %w", sandboxIf, err)
		}
		if host.Attrs().OperState == netlink.OperUp && eth.Attrs().OperState == netlink.OperUp {
			return host, eth, nil
		}
		if time.Now().After(deadline) {
			return nil, nil, errdefs.Unavailable("veth %s: not up after %v (host end %v, sandbox end %v)",
				ep.HostIf, operUpTimeout, host.Attrs().OperState, eth.Attrs().OperState)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(operUpPoll):
		}
	}
}

func ipNet(ip net.IP, bits int) *net.IPNet {
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, 8*len(ip))}
}

// Teardown removes what Setup made for ep: the veth pair (deleting the host
// end removes both), the namespace file, and the address lease. Idempotent:
// parts already gone are skipped. It refuses (ErrInvalidArgument) an
// endpoint whose names are not this Manager's. It does not stop for a
// canceled ctx: a half-done teardown helps nobody. Deleting the veth takes
// most of its time (about 25 ms here: the kernel waits for RCU).
func (m *Manager) Teardown(_ context.Context, ep Endpoint) error {
	if err := m.checkOwn(ep); err != nil {
		return err
	}
	var errs []error
	if err := m.delLink(ep.HostIf); err != nil {
		errs = append(errs, err)
	}
	if err := removeNetNS(ep.NetNSPath); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		m.alloc.release(ep.NetNSName, ep.HostIP, ep.SandboxIP, ep.PrefixLen)
	}
	return errors.Join(errs...)
}

// Reserve marks ep's addresses as in use, for endpoints re-adopted after a
// daemon restart. Idempotent for the same endpoint; ErrAlreadyExists when
// another endpoint holds them, ErrInvalidArgument when they are not from the
// pool or the names not this Manager's.
func (m *Manager) Reserve(ep Endpoint) error {
	if err := m.checkOwn(ep); err != nil {
		return err
	}
	return m.alloc.reserve(ep.NetNSName, ep.HostIP, ep.SandboxIP, ep.PrefixLen)
}

// Release frees ep's addresses without touching the namespace or links.
// Teardown does it already; Release is for endpoints whose objects are gone.
// Idempotent.
func (m *Manager) Release(ep Endpoint) {
	m.alloc.release(ep.NetNSName, ep.HostIP, ep.SandboxIP, ep.PrefixLen)
}

// checkOwn refuses endpoints this Manager could not have made.
func (m *Manager) checkOwn(ep Endpoint) error {
	id, ok := strings.CutPrefix(ep.NetNSName, m.cfg.IfPrefix+"-")
	if !ok || !validID.MatchString(id) ||
		ep.NetNSPath != filepath.Join(m.cfg.NetNSDir, ep.NetNSName) ||
		ep.HostIf != m.hostIfName(id) {
		return errdefs.Invalid("endpoint %s/%s is not one of this manager's", ep.NetNSName, ep.HostIf)
	}
	return nil
}

// delLink deletes a host link by name; a missing link is not an error.
func (m *Manager) delLink(name string) error {
	link, err := m.nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := m.nl.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}
