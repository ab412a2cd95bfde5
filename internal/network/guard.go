package network

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// The host guard keeps untrusted code from reaching host services through
// the host end of its veth. Traffic entering from any IfPrefix+ link, to the
// host (INPUT) or through it (FORWARD), jumps to GuardChain, which accepts
// replies to connections the host opened (the daemon dials into sandboxes)
// and drops everything else.

// guardRules returns the guard chain's rules, spelled as `iptables -S`
// prints them so that EnsureGuard can compare.
func guardRules() [][]string {
	return [][]string{
		{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-j", "DROP"},
	}
}

// jumpRule is the rule in INPUT and FORWARD that sends sandbox traffic to
// the guard chain.
func (m *Manager) jumpRule() []string {
	return []string{"-i", m.cfg.IfPrefix + "+", "-j", m.cfg.GuardChain}
}

var guardHooks = []string{"INPUT", "FORWARD"}

// EnsureGuard installs the guard chain and its jumps. Idempotent: it changes
// nothing when they are in place, and repairs a chain whose rules differ
// without a moment in which sandbox traffic is unguarded (new rules go in
// on top before the old ones leave). Call it before the first Setup.
func (m *Manager) EnsureGuard(ctx context.Context) error {
	chain := m.cfg.GuardChain
	have, found, err := m.ipt.listRules(ctx, chain)
	if err != nil {
		return fmt.Errorf("list guard chain: %w", err)
	}
	if !found {
		if err := m.ipt.newChain(ctx, chain); err != nil {
			return fmt.Errorf("create guard chain: %w", err)
		}
	}
	want := guardRules()
	if !slices.Equal(have, joinRules(want)) {
		for i, r := range want {
			if err := m.ipt.insert(ctx, chain, i+1, r); err != nil {
				return fmt.Errorf("insert guard rule: %w", err)
			}
		}
		for range have { // the old rules, now below the new ones
			if err := m.ipt.deleteAt(ctx, chain, len(want)+1); err != nil {
				return fmt.Errorf("delete old guard rule: %w", err)
			}
		}
	}
	for _, hook := range guardHooks {
		ok, err := m.ipt.exists(ctx, hook, m.jumpRule())
		if err != nil {
			return fmt.Errorf("check guard jump in %s: %w", hook, err)
		}
		if !ok {
			if err := m.ipt.insert(ctx, hook, 1, m.jumpRule()); err != nil {
				return fmt.Errorf("add guard jump in %s: %w", hook, err)
			}
		}
	}
	m.log.Debug("host guard in place", "chain", chain)
	return nil
}

// RemoveGuard removes the jumps (every copy) and the guard chain.
// Idempotent. Sandboxes set up afterwards can reach the host.
func (m *Manager) RemoveGuard(ctx context.Context) error {
	chain := m.cfg.GuardChain
	_, found, err := m.ipt.listRules(ctx, chain)
	if err != nil {
		return fmt.Errorf("list guard chain: %w", err)
	}
	if !found { // no chain, so no jump can point to it
		return nil
	}
	for _, hook := range guardHooks {
		for {
			ok, err := m.ipt.exists(ctx, hook, m.jumpRule())
			if err != nil {
				return fmt.Errorf("check guard jump in %s: %w", hook, err)
			}
			if !ok {
				break
			}
			if err := m.ipt.deleteRule(ctx, hook, m.jumpRule()); err != nil {
				return fmt.Errorf("delete guard jump in %s: %w", hook, err)
			}
		}
	}
	if err := m.ipt.deleteChain(ctx, chain); err != nil {
		return fmt.Errorf("delete guard chain: %w", err)
	}
	return nil
}

func joinRules(rules [][]string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = strings.Join(r, " ")
	}
	return out
}
