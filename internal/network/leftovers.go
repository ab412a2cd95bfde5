package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Leftovers are namespaces and host links that carry this Manager's names.
type Leftovers struct {
	NetNS []string // namespace names in NetNSDir (IfPrefix-<id>)
	Links []string // host veth names (IfPrefix + hex)
}

// Empty reports whether nothing was found.
func (l Leftovers) Empty() bool { return len(l.NetNS) == 0 && len(l.Links) == 0 }

// Leftovers lists every namespace file and host link named like this
// Manager's, whether or not something still uses them. The daemon compares
// them with its metadata at start-up; tests use them as a leak check.
func (m *Manager) Leftovers(ctx context.Context) (Leftovers, error) {
	var l Leftovers
	entries, err := os.ReadDir(m.cfg.NetNSDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return l, fmt.Errorf("list netns dir: %w", err)
	}
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), m.cfg.IfPrefix+"-"); ok && validID.MatchString(id) {
			l.NetNS = append(l.NetNS, e.Name())
		}
	}
	links, err := m.nl.LinkList()
	if err != nil {
		return l, fmt.Errorf("list links: %w", err)
	}
	for _, link := range links {
		if name := link.Attrs().Name; m.isHostIfName(name) && link.Type() == "veth" {
			l.Links = append(l.Links, name)
		}
	}
	return l, nil
}

// isHostIfName reports whether name has the shape hostIfName gives.
func (m *Manager) isHostIfName(name string) bool {
	rest, ok := strings.CutPrefix(name, m.cfg.IfPrefix)
	if !ok || len(name) != maxIfName {
		return false
	}
	return strings.Trim(rest, "0123456789abcdef") == ""
}

// CleanupAll removes every leftover that belongs to none of keep: the
// daemon passes the endpoints its metadata knows. It does not touch address
// leases (Reserve the kept endpoints). It returns what it removed; on errors
// it carries on and returns them joined.
func (m *Manager) CleanupAll(ctx context.Context, keep []Endpoint) (Leftovers, error) {
	l, err := m.Leftovers(ctx)
	if err != nil {
		return Leftovers{}, err
	}
	keepNS, keepIf := map[string]bool{}, map[string]bool{}
	for _, ep := range keep {
		keepNS[ep.NetNSName], keepIf[ep.HostIf] = true, true
	}
	var removed Leftovers
	var errs []error
	for _, name := range l.Links {
		if keepIf[name] {
			continue
		}
		if err := m.delLink(name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed.Links = append(removed.Links, name)
	}
	for _, name := range l.NetNS {
		if keepNS[name] {
			continue
		}
		if err := removeNetNS(filepath.Join(m.cfg.NetNSDir, name)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed.NetNS = append(removed.NetNS, name)
	}
	if !removed.Empty() {
		m.log.Info("removed network leftovers", "netns", removed.NetNS, "links", removed.Links)
	}
	return removed, errors.Join(errs...)
}
