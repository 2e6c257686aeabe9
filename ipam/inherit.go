// Inheritance: the heir claims the blocks of removed nodes (doc.go,
// "Removal").

package ipam

import (
	"net/netip"
	"slices"

	"github.com/meshnet/meshnet/gossip"
)

// inheritLocked claims orphaned blocks when this node is the heir, in as
// few records as aligned prefixes allow.
func (a *IPAM) inheritLocked(lp *localPool) {
	v := a.viewLocked(lp.key)
	if v.heir != a.self {
		return
	}
	if !slices.ContainsFunc(v.blocks, func(b blockInfo) bool { return b.state == StateOrphaned }) {
		return
	}
	claim := func(p netip.Prefix, gen uint64) {
		c := BlockRecord{Pool: lp.key, Prefix: p.String(), Origin: v.origin, Gen: gen, From: "heir"}
		if err := a.putLocked(gossip.KindBlock, blockID(lp.key, p.String(), v.origin), c); err != nil {
			a.log.Error("inherit block", "prefix", p, "err", err)
			return
		}
		a.log.Info("inherited orphaned blocks", "prefix", p)
	}
	var walk func(p netip.Prefix)
	walk = func(p netip.Prefix) {
		first, last, _ := v.geo.blocksIn(p)
		all, none := true, true
		var gen uint64
		for i := first; i <= last; i++ {
			b := &v.blocks[i]
			if b.state != StateOrphaned || (b.mine != nil && b.mine.prefix.Bits() > p.Bits()) {
				all = false
			}
			if b.state == StateOrphaned {
				none = false
				gen = max(gen, b.maxGen)
			}
		}
		switch {
		case none:
		case all || first == last:
			claim(p, gen+1)
		default:
			lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
			hi := netip.PrefixFrom(v.geo.addrAt(first+(last-first+1)/2, u128{}), p.Bits()+1)
			walk(lo)
			walk(hi)
		}
	}
	walk(v.subnet)
}
