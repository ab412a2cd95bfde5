package network

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// tLog sends slog output to t.Log.
type tLog struct{ t testing.TB }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newFakeManager(t *testing.T) (*Manager, *fakeIptables) {
	t.Helper()
	ipt := newFakeIptables()
	m, err := newManager(Config{CIDR: "10.212.0.0/24", IfPrefix: "sbt", GuardChain: "SBT-GUARD"}, testLogger(t), ipt)
	if err != nil {
		t.Fatalf("newManager: %v", err)
	}
	t.Cleanup(m.Close)
	return m, ipt
}

const (
	wantAccept = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
	wantJump   = "-i sbt+ -j SBT-GUARD"
)

func TestEnsureGuard(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		before    map[string][]string // chains added to the fake before the call
		wantCalls []string
	}{
		{
			name: "from nothing",
			wantCalls: []string{
				"-N SBT-GUARD",
				"-I SBT-GUARD 1 " + wantAccept,
				"-I SBT-GUARD 2 -j DROP",
				"-I INPUT 1 " + wantJump,
				"-I FORWARD 1 " + wantJump,
			},
		},
		{
			name: "already in place",
			before: map[string][]string{
				"SBT-GUARD": {wantAccept, "-j DROP"},
				"INPUT":     {"-i lo -j ACCEPT", wantJump},
				"FORWARD":   {wantJump},
			},
			wantCalls: nil,
		},
		{
			name: "chain with wrong rules, jump missing in FORWARD",
			before: map[string][]string{
				"SBT-GUARD": {"-j DROP", "-j ACCEPT"},
				"INPUT":     {wantJump},
			},
			wantCalls: []string{
				"-I SBT-GUARD 1 " + wantAccept,
				"-I SBT-GUARD 2 -j DROP",
				"-D SBT-GUARD 3",
				"-D SBT-GUARD 3",
				"-I FORWARD 1 " + wantJump,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ipt := newFakeManager(t)
			for c, r := range tt.before {
				ipt.chains[c] = r
			}
			if err := m.EnsureGuard(ctx); err != nil {
				t.Fatalf("EnsureGuard: %v", err)
			}
			if !slices.Equal(ipt.calls, tt.wantCalls) {
				t.Errorf("calls:\n got %q\nwant %q", ipt.calls, tt.wantCalls)
			}
			if got, want := ipt.chains["SBT-GUARD"], []string{wantAccept, "-j DROP"}; !slices.Equal(got, want) {
				t.Errorf("guard chain: got %q, want %q", got, want)
			}
			for _, hook := range []string{"INPUT", "FORWARD"} {
				if n := count(ipt.chains[hook], wantJump); n != 1 {
					t.Errorf("%s holds the jump %d times, want 1", hook, n)
				}
			}
			ipt.calls = nil
			if err := m.EnsureGuard(ctx); err != nil {
				t.Fatalf("second EnsureGuard: %v", err)
			}
			if len(ipt.calls) != 0 {
				t.Errorf("second EnsureGuard changed rules: %q", ipt.calls)
			}
		})
	}
}

func TestRemoveGuard(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		before map[string][]string
	}{
		{name: "nothing there"},
		{name: "in place", before: map[string][]string{
			"SBT-GUARD": {wantAccept, "-j DROP"},
			"INPUT":     {"-i lo -j ACCEPT", wantJump},
			"FORWARD":   {wantJump},
		}},
		{name: "duplicate jumps", before: map[string][]string{
			"SBT-GUARD": {wantAccept, "-j DROP"},
			"INPUT":     {wantJump, "-i lo -j ACCEPT", wantJump},
			"FORWARD":   {wantJump},
		}},
		{name: "chain without jumps", before: map[string][]string{"SBT-GUARD": {"-j DROP"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ipt := newFakeManager(t)
			for c, r := range tt.before {
				ipt.chains[c] = r
			}
			for i := range 2 { // idempotent
				if err := m.RemoveGuard(ctx); err != nil {
					t.Fatalf("RemoveGuard #%d: %v", i+1, err)
				}
			}
			if _, ok := ipt.chains["SBT-GUARD"]; ok {
				t.Errorf("guard chain still there")
			}
			for _, hook := range []string{"INPUT", "FORWARD"} {
				if n := count(ipt.chains[hook], wantJump); n != 0 {
					t.Errorf("%s holds the jump %d times, want 0", hook, n)
				}
			}
			if tt.before != nil && !slices.Equal(ipt.chains["INPUT"], []string(nil)) &&
				!slices.Equal(ipt.chains["INPUT"], []string{"-i lo -j ACCEPT"}) {
				t.Errorf("INPUT: got %q, want only foreign rules left", ipt.chains["INPUT"])
			}
		})
	}
}

func count(rules []string, r string) int {
	n := 0
	for _, x := range rules {
		if x == r {
			n++
		}
	}
	return n
}
