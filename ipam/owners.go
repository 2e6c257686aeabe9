package ipam

import (
	"net/netip"
	"slices"
)

// Owned is a prefix of a pool that one node owns: one or more of its
// address blocks.
type Owned struct {
	Prefix netip.Prefix
	Node   string
}

// Owners maps every pool's subnet to the prefixes its nodes own: each
// node's blocks merged into as few prefixes as cover them exactly, sorted
// by address. It is what the dataplane routes to each host (WireGuard
// AllowedIPs), computed from the same views as Status, so that routes and
// meshctl never disagree. Blocks nobody owns (orphaned, unknown) are left
// out; a granted block stays with its granter until claimed.
func (a *IPAM) Owners() map[netip.Prefix][]Owned {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[netip.Prefix][]Owned{}
	for _, k := range a.poolKeysLocked() {
		v := a.viewLocked(k)
		if v == nil {
			continue
		}
		byNode := map[string][]netip.Prefix{}
		for i := range v.blocks {
			if o := v.blocks[i].owner; o != "" {
				byNode[o] = append(byNode[o], v.geo.blockPrefix(i).Masked())
			}
		}
		var owned []Owned
		for node, ps := range byNode {
			for _, p := range mergePrefixes(ps) {
				owned = append(owned, Owned{Prefix: p, Node: node})
			}
		}
		slices.SortFunc(owned, func(x, y Owned) int { return x.Prefix.Addr().Compare(y.Prefix.Addr()) })
		if len(owned) > 0 {
			out[v.subnet.Masked()] = owned
		}
	}
	return out
}

// mergePrefixes merges sibling prefixes (two halves of one parent) until no
// two are siblings: the exact cover of the same addresses, in fewer routes.
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	for {
		slices.SortFunc(ps, func(a, b netip.Prefix) int {
			if c := a.Addr().Compare(b.Addr()); c != 0 {
				return c
			}
			return a.Bits() - b.Bits()
		})
		ps = slices.Compact(ps)
		merged := false
		for i := 0; i+1 < len(ps); i++ {
			a, b := ps[i], ps[i+1]
			if a.Bits() == b.Bits() && a.Bits() > 0 {
				parent := netip.PrefixFrom(a.Addr(), a.Bits()-1).Masked()
				if parent.Addr() == a.Addr() && parent.Contains(b.Addr()) {
					ps[i] = parent
					ps = slices.Delete(ps, i+1, i+2)
					merged = true
				}
			}
		}
		if !merged {
			return ps
		}
	}
}
