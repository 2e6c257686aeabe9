// Allocation: RequestAddress and the search for a free address in the
// blocks this node owns. It claims blocks handed to it and asks for one;
// the rest of the pool's upkeep is Run's (reconcile.go).

package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// RequestAddress allocates an address of the pool on this node: the
// gateway (gateway true), a preferred address, or any free one. When the
// node owns no free address it claims the blocks handed to it, else asks
// another node for a block and waits, bounded by ctx and
// Config.HandoffWait; it does nothing else of the pool's upkeep, which is
// Run's (Run must be running for handoffs to complete). The result
// carries the subnet's prefix length.
func (a *IPAM) RequestAddress(ctx context.Context, poolID string, preferred netip.Addr, gateway bool) (netip.Prefix, error) {
	preferred = preferred.Unmap()
	a.mu.Lock()
	lp, ok := a.pools[poolID]
	if !ok || lp.released {
		a.mu.Unlock()
		return netip.Prefix{}, &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("pool %s is not requested on this node: create the network first", poolID)}
	}
	bits := lp.subnet.Bits()
	if gateway {
		gw, err := a.gatewayLocked(lp, preferred)
		a.mu.Unlock()
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(gw, bits), nil
	}
	a.mu.Unlock()

	started := a.cfg.Clock.Now()
	deadline := a.cfg.Clock.NewTimer(a.cfg.HandoffWait)
	defer deadline.Stop()
	ch, cancel := a.store.Subscribe()
	defer cancel()
	tick := a.cfg.Clock.NewTicker(max(a.cfg.RequestTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	waiting := false
	defer func() {
		if waiting {
			a.mu.Lock()
			lp.waiters--
			if lp.waiters == 0 {
				lp.wantBlock = netip.Prefix{}
			}
			a.mu.Unlock()
		}
	}()
	for {
		a.mu.Lock()
		if a.pools[poolID] != lp || lp.released {
			a.mu.Unlock()
			return netip.Prefix{}, &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("pool %s was released while waiting", poolID)}
		}
		// Fast path: any free address in what the node owns. Otherwise
		// claim the blocks handed to it, then try again or ask for one.
		// Everything else this node owes the cluster (answering others,
		// conceding, inheriting) is Run's: each change it makes wakes
		// this loop through the store.
		a.persistCacheLocked()
		if v := a.viewLocked(lp.key); v != nil && !preferred.IsValid() {
			if ad, ok := a.findFreeLocked(lp, v); ok {
				err := a.takeLocked(lp, v, ad)
				a.mu.Unlock()
				if err != nil {
					return netip.Prefix{}, err
				}
				return netip.PrefixFrom(ad, bits), nil
			}
		}
		if a.viewOrRecreateLocked(lp) != nil {
			a.claimGrantsLocked(lp)
		}
		ad, wait, err := a.allocateLocked(lp, preferred)
		if err == nil && !wait {
			a.mu.Unlock()
			return netip.PrefixFrom(ad, bits), nil
		}
		if a.joined == nil && (err == nil || errors.Is(err, ErrExhausted)) {
			// No free address in what it owns, and nobody to ask yet:
			// say so now rather than after HandoffWait.
			a.mu.Unlock()
			return netip.Prefix{}, a.notJoinedError(fmt.Sprintf("pool %s: no free address in the blocks this node owns", poolID))
		}
		if err == nil && !waiting {
			waiting = true
			lp.waiters++
		}
		a.mu.Unlock()
		if err != nil && !(errors.Is(err, ErrExhausted) && a.cfg.Clock.Now().Sub(started) < a.cfg.FullAfter) {
			return netip.Prefix{}, err
		}
		select {
		case <-ch:
		case <-tick.C():
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("request address in %s: waiting for a block from another node: %w", poolID, ctx.Err())
		case <-deadline.C():
			return netip.Prefix{}, &Error{Kind: ErrHandoffTimeout, Msg: fmt.Sprintf(
				"pool %s: this node owns no free address and no other node handed it a block within %s; check meshctl status for down nodes and for blocks two creations of the pool still claim, then retry", poolID, a.cfg.HandoffWait)}
		}
	}
}

// allocateLocked tries once. wait is set when a block was requested from
// another node and the caller should wait for it.
func (a *IPAM) allocateLocked(lp *localPool, preferred netip.Addr) (netip.Addr, bool, error) {
	v := a.viewLocked(lp.key)
	if v == nil {
		return netip.Addr{}, false, &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("pool %s has no cluster record yet: retry once this node has joined the cluster", lp.key)}
	}
	if preferred.IsValid() {
		return a.allocatePreferredLocked(lp, v, preferred)
	}
	if ad, ok := a.findFreeLocked(lp, v); ok {
		return ad, false, a.takeLocked(lp, v, ad)
	}
	if err := a.ensureRequestLocked(lp, v, netip.Prefix{}); err != nil {
		return netip.Addr{}, false, err
	}
	return netip.Addr{}, true, nil
}

func (a *IPAM) allocatePreferredLocked(lp *localPool, v *poolView, ad netip.Addr) (netip.Addr, bool, error) {
	if !lp.subnet.Contains(ad) {
		return ad, false, &Error{Kind: ErrNotInPool, Msg: fmt.Sprintf("address %s is outside pool %s", ad, lp.key)}
	}
	if v.geo.reserved(ad, v.gateway) {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is reserved in pool %s (subnet, broadcast or gateway address %s)", ad, lp.key, v.gateway)}
	}
	if _, ok := lp.addrs[ad]; ok {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is already in use on this host (%s)", ad, a.self)}
	}
	if holders := v.heldBy[ad]; len(holders) > 0 {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in use on host %s: choose another address", ad, strings.Join(holders, ", "))}
	}
	i, _ := v.geo.blockOf(ad)
	b := &v.blocks[i]
	block := v.geo.blockPrefix(i)
	switch {
	case b.owner == a.self && b.state == StateOwned && !b.frozen:
		return ad, false, a.takeLocked(lp, v, ad)
	case b.frozen || b.contested:
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in block %s, which two nodes claim (see meshctl status): choose another address", ad, block)}
	case b.owner == "":
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in block %s, whose owner was removed; %s will inherit it: retry shortly, or choose another address", ad, block, v.heir)}
	case b.owner == a.self: // granted to us, not claimed yet: reconcile claims it
		return ad, true, nil
	case b.state == StateGranted:
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in block %s, which is being handed to host %s: choose another address", ad, block, b.owner)}
	}
	m, ok := v.members[b.owner]
	if !ok || !m.up {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in block %s, owned by host %s, which is down: choose another address", ad, block, b.owner)}
	}
	cur, _ := a.ownRequest(lp.key)
	if lp.wantBlock == block && cur.Block == block.String() && cur.Donor == b.owner && cur.Seq == lp.req.seq && m.rec.Answered[a.self] >= cur.Seq {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf(
			"address %s is in block %s, owned by host %s, which has addresses in use there: choose an address in a block this host owns (meshctl status), or leave out --ip", ad, block, b.owner)}
	}
	lp.wantBlock = block
	if err := a.ensureRequestLocked(lp, v, block); err != nil {
		return ad, false, err
	}
	return ad, true, nil
}

// takeLocked records an allocation and persists it before it is returned.
func (a *IPAM) takeLocked(lp *localPool, v *poolView, ad netip.Addr) error {
	lp.addrs[ad] = struct{}{}
	if err := a.persistLocked(); err != nil {
		delete(lp.addrs, ad)
		return fmt.Errorf("allocate %s: %w", ad, err)
	}
	if lp.takenAt == nil {
		lp.takenAt = make(map[netip.Addr]time.Time)
	}
	lp.takenAt[ad] = a.cfg.Clock.Now()
	if i, ok := v.geo.blockOf(ad); ok {
		a.countsLocked(lp, v)[i]++
	}
	return nil
}

func (a *IPAM) countsLocked(lp *localPool, v *poolView) map[int]int {
	if lp.counts == nil || lp.countBits != v.geo.blockBits {
		lp.counts = make(map[int]int)
		lp.countBits = v.geo.blockBits
		for ad := range lp.addrs {
			if i, ok := v.geo.blockOf(ad); ok {
				lp.counts[i]++
			}
		}
	}
	return lp.counts
}

// usable reports whether this node may allocate in block i.
func (a *IPAM) usable(v *poolView, i int) bool {
	b := &v.blocks[i]
	return b.owner == a.self && b.state == StateOwned && !b.frozen
}

// findFreeLocked finds a free address in the blocks this node owns,
// filling one block before starting the next.
func (a *IPAM) findFreeLocked(lp *localPool, v *poolView) (netip.Addr, bool) {
	counts := a.countsLocked(lp, v)
	n := v.geo.nblocks
	start := lp.hintBlock
	if start >= n {
		start = 0
	}
	for k := 0; k < n; k++ {
		i := (start + k) % n
		if !a.usable(v, i) {
			continue
		}
		if v.geo.blockBits < 63 && uint64(counts[i]) >= uint64(1)<<v.geo.blockBits {
			continue
		}
		if ad, ok := a.freeInBlock(lp, v, i); ok {
			lp.hintBlock = i
			return ad, true
		}
	}
	return netip.Addr{}, false
}

// maxProbes bounds the search in one (IPv6-sized) block.
const maxProbes = 1 << 16

func (a *IPAM) freeInBlock(lp *localPool, v *poolView, i int) (netip.Addr, bool) {
	mask := ones(v.geo.blockBits)
	var from uint64
	if i == lp.hintBlock {
		from = lp.hintOff
	}
	limit := uint64(maxProbes)
	if v.geo.blockBits < 16 {
		limit = uint64(1) << v.geo.blockBits
	}
	for p := uint64(0); p < limit; p++ {
		off := u64(from + p)
		off = u128{off.hi & mask.hi, off.lo & mask.lo}
		ad := v.geo.addrAt(i, off)
		if v.geo.reserved(ad, v.gateway) {
			continue
		}
		if _, ok := lp.addrs[ad]; ok {
			continue
		}
		if len(v.heldBy[ad]) > 0 {
			continue
		}
		lp.hintOff = off.lo + 1
		return ad, true
	}
	return netip.Addr{}, false
}

// gatewayLocked answers a gateway request: the cluster's gateway, or a new
// one when this node alone uses the pool (it re-creates the pool then).
func (a *IPAM) gatewayLocked(lp *localPool, preferred netip.Addr) (netip.Addr, error) {
	v := a.viewLocked(lp.key)
	if v == nil {
		return netip.Addr{}, &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("pool %s has no cluster record yet: retry once this node has joined the cluster", lp.key)}
	}
	if !preferred.IsValid() || preferred == v.gateway {
		return v.gateway, nil
	}
	if !lp.subnet.Contains(preferred) || preferred == lp.subnet.Addr() || (v.geo.reserved(preferred, netip.Addr{}) && preferred != v.gateway) {
		return netip.Addr{}, &Error{Kind: ErrNotInPool, Msg: fmt.Sprintf("gateway %s is not a host address of %s", preferred, lp.key)}
	}
	if a.aloneInPoolLocked(lp, v) && len(v.heldBy[preferred]) == 0 {
		// Only this node uses the pool (typically: it was just created
		// and Docker now asks for --gateway): start a new lineage with
		// that gateway.
		if err := a.createLocked(lp, v.lineages[0].Epoch+1, preferred, v.geo.blockBits); err != nil {
			return netip.Addr{}, err
		}
		// Run retires the lineage this one replaces: the records just
		// written wake it.
		return preferred, nil
	}
	return netip.Addr{}, &Error{Kind: ErrGateway, Msg: fmt.Sprintf(
		"gateway %s requested, but the cluster's gateway for %s is %s (pool created by %s): create the network with --gateway %s, or without --gateway",
		preferred, lp.key, v.gateway, v.origin.Node, v.gateway)}
}

// aloneInPoolLocked: no other node uses the pool, nobody holds an address
// in it, this node included.
func (a *IPAM) aloneInPoolLocked(lp *localPool, v *poolView) bool {
	if len(lp.addrs) > 0 || len(v.heldBy) > 0 {
		return false
	}
	for n, m := range v.members {
		if n != a.self && m.active() {
			return false
		}
	}
	for n, p := range v.rivals {
		if n != a.self && (!p.Released || p.Allocated > 0) {
			return false
		}
	}
	return true
}
