// Releasing addresses: Docker's releases, and leaks the daemon found.

package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Allocations returns the addresses this node holds in a pool.
func (a *IPAM) Allocations(poolID string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	lp, ok := a.pools[poolID]
	if !ok {
		return nil
	}
	out := make([]netip.Addr, 0, len(lp.addrs))
	for ad := range lp.addrs {
		out = append(out, ad)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// ReleaseAddress frees an address of this node. Releasing the gateway or
// an address not held here is a no-op.
func (a *IPAM) ReleaseAddress(poolID string, addr netip.Addr) error {
	addr = addr.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	lp, ok := a.pools[poolID]
	if !ok {
		return &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("release %s: this node has no pool %s", addr, poolID)}
	}
	return a.releaseLocked(lp, addr)
}

// ReleaseStale frees an address the caller found held by no container (a
// leak: meshnetd died between allocating it and Docker's use of it, or
// Docker's release never arrived), but only if this node has held it since
// before the caller started watching it: an address released and handed
// out again meanwhile belongs to a new container and is kept. It reports
// whether the address was freed.
func (a *IPAM) ReleaseStale(poolID string, addr netip.Addr, unusedSince time.Time) (bool, error) {
	addr = addr.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	lp, ok := a.pools[poolID]
	if !ok {
		return false, nil
	}
	if _, held := lp.addrs[addr]; !held || lp.takenAt[addr].After(unusedSince) {
		return false, nil
	}
	if err := a.releaseLocked(lp, addr); err != nil {
		return false, err
	}
	return true, nil
}

func (a *IPAM) releaseLocked(lp *localPool, addr netip.Addr) error {
	if _, ok := lp.addrs[addr]; !ok {
		return nil
	}
	delete(lp.addrs, addr)
	if err := a.persistLocked(); err != nil {
		lp.addrs[addr] = struct{}{}
		return fmt.Errorf("release %s: %w", addr, err)
	}
	delete(lp.takenAt, addr)
	if lp.counts != nil {
		if v := a.viewLocked(lp.key); v != nil && v.geo.blockBits == lp.countBits {
			if i, ok := v.geo.blockOf(addr); ok {
				lp.counts[i]--
			}
		} else {
			lp.counts = nil
		}
	}
	return nil
}
