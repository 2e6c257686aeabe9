// Conflicts: addresses two nodes hold after a pool was created on both
// sides of a partition; published, reported and logged (doc.go,
// "Conflicts").

package ipam

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/meshnet/meshnet/gossip"
)

// publishConflictsLocked lists, in this node's record of each block it
// owns, the addresses it holds that another node lists too, so that every
// node sees the conflict, not only the two involved.
func (a *IPAM) publishConflictsLocked(lp *localPool) {
	v := a.viewLocked(lp.key)
	mineBy := byBlock(lp, v.geo)
	for i := range v.blocks {
		b := &v.blocks[i]
		if b.owner != a.self || b.state != StateOwned || b.mine == nil {
			continue
		}
		var inter []netip.Addr
		for _, ad := range mineBy[i] {
			if slices.ContainsFunc(v.declared[ad], func(n string) bool { return n != a.self }) {
				inter = append(inter, ad)
			}
		}
		m := b.mine
		perBlock := m.prefix.Bits() == v.geo.blockLen
		if len(inter) == 0 && (!perBlock || len(m.v.Held) == 0) {
			continue
		}
		if perBlock && sameAddrs(m.held, inter) {
			continue
		}
		p := v.geo.blockPrefix(i)
		c := m.v
		c.Prefix, c.Held, c.HeldIn = p.String(), encodeAddrs(inter), nil
		if err := a.putLocked(gossip.KindBlock, blockID(lp.key, p.String(), m.v.Origin), c); err != nil {
			a.log.Error("publish conflicting addresses", "block", p, "err", err)
		}
	}
}

// conflictsLocked lists addresses of the pool held by two nodes or more:
// those every node sees in the records, and those this node holds and
// another lists.
func (a *IPAM) conflictsLocked(lp *localPool, v *poolView) []Conflict {
	byAddr := map[string]int{}
	var out []Conflict
	for i, c := range v.conflicts {
		out = append(out, Conflict{Subnet: c.Subnet, Addr: c.Addr, Nodes: slices.Clone(c.Nodes)})
		byAddr[c.Addr] = i
	}
	if lp != nil {
		for ad := range lp.addrs {
			others := slices.DeleteFunc(slices.Clone(v.declared[ad]), func(n string) bool { return n == a.self })
			if len(others) == 0 {
				continue
			}
			if i, ok := byAddr[ad.String()]; ok {
				if c := &out[i]; !slices.Contains(c.Nodes, a.self) {
					c.Nodes = append(c.Nodes, a.self)
					slices.Sort(c.Nodes)
				}
				continue
			}
			nodes := append(others, a.self)
			slices.Sort(nodes)
			out = append(out, Conflict{Subnet: v.key, Addr: ad.String(), Nodes: nodes})
		}
	}
	sortConflicts(out)
	return out
}

func (a *IPAM) logConflictsLocked(lp *localPool) {
	v := a.viewLocked(lp.key)
	for _, c := range a.conflictsLocked(lp, v) {
		k := c.Subnet + "|" + c.Addr + "|" + strings.Join(c.Nodes, ",")
		if a.reported[k] {
			continue
		}
		a.reported[k] = true
		a.log.Warn("address held by two nodes: it will not be handed out again while either holds it",
			"subnet", c.Subnet, "addr", c.Addr, "nodes", strings.Join(c.Nodes, ","))
	}
}
