package network

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// fakeIptables is an in-memory filter table. It records every mutating
// call, so tests can check what EnsureGuard and RemoveGuard did.
type fakeIptables struct {
	chains map[string][]string // chain -> rules, joined with spaces
	calls  []string            // mutations, e.g. "-I INPUT 1 -i sbt+ -j X"
}

var _ iptables = (*fakeIptables)(nil)

func newFakeIptables() *fakeIptables {
	return &fakeIptables{chains: map[string][]string{"INPUT": nil, "FORWARD": nil, "OUTPUT": nil}}
}

func (f *fakeIptables) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeIptables) listRules(_ context.Context, chain string) ([]string, bool, error) {
	r, ok := f.chains[chain]
	return slices.Clone(r), ok, nil
}

func (f *fakeIptables) newChain(_ context.Context, chain string) error {
	f.record("-N %s", chain)
	if _, ok := f.chains[chain]; ok {
		return fmt.Errorf("chain %s exists", chain)
	}
	f.chains[chain] = nil
	return nil
}

func (f *fakeIptables) deleteChain(_ context.Context, chain string) error {
	f.record("-X %s", chain)
	for c, rules := range f.chains {
		for _, r := range rules {
			if strings.HasSuffix(r, "-j "+chain) {
				return fmt.Errorf("chain %s is referenced from %s", chain, c)
			}
		}
	}
	delete(f.chains, chain)
	return nil
}

func (f *fakeIptables) exists(_ context.Context, chain string, rule []string) (bool, error) {
	rules, ok := f.chains[chain]
	if !ok {
		return false, fmt.Errorf("no chain %s", chain)
	}
	return slices.Contains(rules, strings.Join(rule, " ")), nil
}

func (f *fakeIptables) insert(_ context.Context, chain string, pos int, rule []string) error {
	r := strings.Join(rule, " ")
	f.record("-I %s %d %s", chain, pos, r)
	rules, ok := f.chains[chain]
	if !ok || pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("bad insert into %s at %d", chain, pos)
	}
	f.chains[chain] = slices.Insert(rules, pos-1, r)
	return nil
}

func (f *fakeIptables) deleteRule(_ context.Context, chain string, rule []string) error {
	r := strings.Join(rule, " ")
	f.record("-D %s %s", chain, r)
	i := slices.Index(f.chains[chain], r)
	if i < 0 {
		return fmt.Errorf("no rule %q in %s", r, chain)
	}
	f.chains[chain] = slices.Delete(f.chains[chain], i, i+1)
	return nil
}

func (f *fakeIptables) deleteAt(_ context.Context, chain string, pos int) error {
	f.record("-D %s %d", chain, pos)
	rules := f.chains[chain]
	if pos < 1 || pos > len(rules) {
		return fmt.Errorf("no rule %d in %s", pos, chain)
	}
	f.chains[chain] = slices.Delete(rules, pos-1, pos)
	return nil
}
