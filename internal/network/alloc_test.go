package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func TestAllocatorExhaustsWithoutDuplicates(t *testing.T) {
	for _, cidr := range []string{"10.212.0.0/30", "10.212.0.0/28", "10.212.0.0/24", "10.212.0.0/16"} {
		t.Run(cidr, func(t *testing.T) {
			a, err := newAllocator(cidr)
			if err != nil {
				t.Fatal(err)
			}
			pool := netip.MustParsePrefix(cidr)
			seen := map[netip.Addr]bool{}
			for i := range a.slots {
				l, err := a.allocate(fmt.Sprint("o", i))
				if err != nil {
					t.Fatalf("allocate #%d: %v", i, err)
				}
				for _, ip := range []netip.Addr{l.host, l.sandbox} {
					if seen[ip] || !pool.Contains(ip) {
						t.Fatalf("allocate #%d: %s is a duplicate or outside %s", i, ip, pool)
					}
					seen[ip] = true
				}
				if l.bits != 30 || l.sandbox != l.host.Next() {
					t.Fatalf("allocate #%d: got %s, want host+1 as sandbox in a /30", i, l)
				}
			}
			if want := 1 << (30 - pool.Bits()); a.slots != want {
				t.Errorf("slots: got %d, want %d", a.slots, want)
			}
			_, err = a.allocate("one too many")
			if !errors.Is(err, errdefs.ErrResourceExhausted) {
				t.Errorf("allocate on a full pool: got %v, want ErrResourceExhausted", err)
			}
		})
	}
}

func TestAllocatorReleaseAndReuse(t *testing.T) {
	a, _ := newAllocator("10.212.0.0/28") // 4 slots
	var ls []lease
	for i := range 4 {
		l, err := a.allocate(fmt.Sprint("o", i))
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	a.release("someone else", ls[1].host, ls[1].sandbox, 30) // not the owner: no effect
	if got := a.inUse(); got != 4 {
		t.Fatalf("after a foreign release: got %d in use, want 4", got)
	}
	a.release("o1", ls[1].host, ls[1].sandbox, 30)
	a.release("o1", ls[1].host, ls[1].sandbox, 30) // idempotent
	if got := a.inUse(); got != 3 {
		t.Fatalf("after release: got %d in use, want 3", got)
	}
	l, err := a.allocate("new")
	if err != nil {
		t.Fatalf("allocate after release: %v", err)
	}
	if l != ls[1] {
		t.Errorf("allocate after release: got %s, want the freed %s", l, ls[1])
	}
}

func TestAllocatorReserve(t *testing.T) {
	host, sbx := netip.MustParseAddr("10.212.0.5"), netip.MustParseAddr("10.212.0.6")
	tests := []struct {
		name          string
		owner         string
		host, sandbox netip.Addr
		bits          int
		want          error // class, nil for success
	}{
		{"same owner again", "a", host, sbx, 30, nil},
		{"other owner", "b", host, sbx, 30, errdefs.ErrAlreadyExists},
		{"outside pool", "a", netip.MustParseAddr("10.99.0.5"), netip.MustParseAddr("10.99.0.6"), 30, errdefs.ErrInvalidArgument},
		{"not a slot's host", "a", netip.MustParseAddr("10.212.0.6"), netip.MustParseAddr("10.212.0.7"), 30, errdefs.ErrInvalidArgument},
		{"wrong prefix length", "a", host, sbx, 24, errdefs.ErrInvalidArgument},
		{"free slot", "c", netip.MustParseAddr("10.212.0.9"), netip.MustParseAddr("10.212.0.10"), 30, nil},
	}
	a, _ := newAllocator("10.212.0.0/28")
	if err := a.reserve("a", host, sbx, 30); err != nil {
		t.Fatalf("first reserve: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.reserve(tt.owner, tt.host, tt.sandbox, tt.bits)
			if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("reserve: got %v, want %v", err, tt.want)
			}
		})
	}
	// The reserved slots are skipped by allocate.
	for range 2 {
		l, err := a.allocate("x")
		if err != nil {
			t.Fatal(err)
		}
		if l.host == host || l.host == netip.MustParseAddr("10.212.0.9") {
			t.Errorf("allocate returned reserved %s", l)
		}
	}
	if _, err := a.allocate("x"); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("allocate: got %v, want ErrResourceExhausted", err)
	}
}

func TestNewAllocatorRejects(t *testing.T) {
	for _, cidr := range []string{"", "10.0.0.0/31", "10.0.0.0/32", "fd00::/64", "nonsense"} {
		if _, err := newAllocator(cidr); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("newAllocator(%q): got %v, want ErrInvalidArgument", cidr, err)
		}
	}
}

func TestNames(t *testing.T) {
	m, _ := newFakeManager(t)
	for _, id := range []string{"a", "0123456789abcdef0123456789abcdef", "sb-x.y_z"} {
		hi := m.hostIfName(id)
		if len(hi) != 15 || hi != m.hostIfName(id) || !m.isHostIfName(hi) {
			t.Errorf("hostIfName(%q) = %q: want 15 chars, stable, recognised", id, hi)
		}
		if got, want := m.netnsName(id), "sbt-"+id; got != want {
			t.Errorf("netnsName(%q): got %q, want %q", id, got, want)
		}
	}
	if m.hostIfName("a") == m.hostIfName("b") {
		t.Errorf("hostIfName gives a and b the same name")
	}
	if m.isHostIfName("sbtXYZ") || m.isHostIfName("eth0") || m.isHostIfName("sbxabcdefabcdef") {
		t.Errorf("isHostIfName accepts foreign names")
	}
}

func TestEndpointJSONAndOwnership(t *testing.T) {
	m, _ := newFakeManager(t)
	ep := Endpoint{
		NetNSName: "sbt-abc", NetNSPath: "/var/run/netns/sbt-abc", HostIf: m.hostIfName("abc"),
		HostIP: netip.MustParseAddr("10.212.0.1"), SandboxIP: netip.MustParseAddr("10.212.0.2"), PrefixLen: 30,
	}
	b, err := json.Marshal(ep)
	if err != nil {
		t.Fatal(err)
	}
	var back Endpoint
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != ep {
		t.Errorf("JSON round trip: got %+v, want %+v", back, ep)
	}
	if got, want := ep.AgentAddr(49983), "10.212.0.2:49983"; got != want {
		t.Errorf("AgentAddr: got %q, want %q", got, want)
	}
	if err := m.Reserve(ep); err != nil {
		t.Errorf("Reserve: %v", err)
	}
	m.Release(ep)
	if n := m.alloc.inUse(); n != 0 {
		t.Errorf("after Release: %d in use, want 0", n)
	}
	for name, bad := range map[string]Endpoint{
		"foreign prefix": {NetNSName: "sbx-abc", NetNSPath: "/var/run/netns/sbx-abc", HostIf: ep.HostIf},
		"path elsewhere": {NetNSName: "sbt-abc", NetNSPath: "/etc/passwd", HostIf: ep.HostIf},
		"foreign link":   {NetNSName: "sbt-abc", NetNSPath: "/var/run/netns/sbt-abc", HostIf: "eth0"},
	} {
		if err := m.Teardown(t.Context(), bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Teardown(%s): got %v, want ErrInvalidArgument", name, err)
		}
	}
}
