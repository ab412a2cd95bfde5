package network

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// slotBits is the prefix length of one sandbox's link: a /30 holds the
// network address, the host end (+1), the sandbox end (+2) and the broadcast
// address. A /31 would halve the use of the pool but point-to-point /31s are
// less well trodden in gVisor's netstack.
const slotBits = 30

// allocator hands out one /30 per owner from an IPv4 pool. It lives in
// memory only: after a restart the daemon re-marks what it knows with
// reserve. Safe for concurrent use.
type allocator struct {
	pool netip.Prefix

	mu    sync.Mutex
	used  map[int]string // slot -> owner
	next  int            // where the next search starts (next fit)
	slots int
}

// newAllocator returns an allocator over cidr, which must be an IPv4 prefix
// of length 30 or less.
func newAllocator(cidr string) (*allocator, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, errdefs.Invalid("network pool %q: %v", cidr, err)
	}
	if !p.Addr().Is4() || p.Bits() > slotBits {
		return nil, errdefs.Invalid("network pool %q: want an IPv4 prefix of /%d or shorter", cidr, slotBits)
	}
	return &allocator{pool: p.Masked(), used: map[int]string{}, slots: 1 << (slotBits - p.Bits())}, nil
}

// lease is one allocated /30.
type lease struct {
	host, sandbox netip.Addr
	bits          int
}

func (a *allocator) leaseOf(slot int) lease {
	b := a.pool.Addr().As4()
	base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	base += uint32(slot) << (32 - slotBits)
	return lease{host: u32addr(base + 1), sandbox: u32addr(base + 2), bits: slotBits}
}

func u32addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// slotOf returns the slot whose host address is host, checking that sandbox
// and bits match it.
func (a *allocator) slotOf(host, sandbox netip.Addr, bits int) (int, error) {
	if !a.pool.Contains(host) || bits != slotBits {
		return 0, errdefs.Invalid("address %s/%d is not from pool %s", host, bits, a.pool)
	}
	h, p := host.As4(), a.pool.Addr().As4()
	off := (uint32(h[0])<<24 | uint32(h[1])<<16 | uint32(h[2])<<8 | uint32(h[3])) -
		(uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3]))
	slot := int(off >> (32 - slotBits))
	if l := a.leaseOf(slot); l.host != host || l.sandbox != sandbox {
		return 0, errdefs.Invalid("addresses %s and %s are not one slot of pool %s", host, sandbox, a.pool)
	}
	return slot, nil
}

// allocate gives owner a free /30. It returns an ErrResourceExhausted error
// when the pool is full.
func (a *allocator) allocate(owner string) (lease, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := 0; i < a.slots; i++ {
		s := (a.next + i) % a.slots
		if _, ok := a.used[s]; !ok {
			a.used[s] = owner
			a.next = (s + 1) % a.slots
			return a.leaseOf(s), nil
		}
	}
	return lease{}, errdefs.Exhausted("network pool %s: all %d addresses in use", a.pool, a.slots)
}

// reserve marks the slot of (host, sandbox) as owner's. It is idempotent for
// the same owner and returns an ErrAlreadyExists error when another owner
// holds the slot.
func (a *allocator) reserve(owner string, host, sandbox netip.Addr, bits int) error {
	slot, err := a.slotOf(host, sandbox, bits)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if o, ok := a.used[slot]; ok && o != owner {
		return errdefs.AlreadyExists("address %s is in use by %s", sandbox, o)
	}
	a.used[slot] = owner
	return nil
}

// release frees the slot of host if owner holds it. Releasing a free slot,
// or one held by another owner, does nothing.
func (a *allocator) release(owner string, host, sandbox netip.Addr, bits int) {
	slot, err := a.slotOf(host, sandbox, bits)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.used[slot] == owner {
		delete(a.used, slot)
	}
}

// inUse returns the number of allocated slots.
func (a *allocator) inUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}

func (l lease) String() string { return fmt.Sprintf("%s<->%s/%d", l.host, l.sandbox, l.bits) }
