package ipam

import (
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
)

func TestOwnersMergesEachNodesBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		a, b := n1.ipamOf(), n2.ipamOf()
		pool := mustPool(t, a, subnet16, nil)
		mustPool(t, b, subnet16, nil)
		y := alloc(t, b, pool) // waits for a block from n1
		i := blockIndex(a, pool, y)
		net.eventually(t, "n1 sees n2 own its block", func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			blk := a.viewLocked(pool).blocks[i]
			return blk.owner == "n2" && blk.state == StateOwned
		})
		subnet := netip.MustParsePrefix(pool)
		owned := a.Owners()[subnet]
		if len(owned) == 0 {
			t.Fatalf("no owners of %s: %v", subnet, a.Owners())
		}
		byNode := map[string][]netip.Prefix{}
		for j, o := range owned {
			if !subnet.Contains(o.Prefix.Addr()) || o.Prefix.Bits() < subnet.Bits() || o.Prefix != o.Prefix.Masked() {
				t.Errorf("%v is no masked prefix of %s", o, subnet)
			}
			for _, p := range owned[:j] {
				if p.Prefix.Overlaps(o.Prefix) {
					t.Errorf("%v overlaps %v", p, o)
				}
			}
			byNode[o.Node] = append(byNode[o.Node], o.Prefix)
		}
		// Every block Status gives an owner is in one of that owner's
		// prefixes, and no node has two prefixes Owners could have merged.
		a.mu.Lock()
		v := a.viewLocked(pool)
		for j, blk := range v.blocks {
			bp := v.geo.blockPrefix(j)
			if blk.owner != "" && !slices.ContainsFunc(byNode[blk.owner], func(p netip.Prefix) bool { return p.Contains(bp.Addr()) }) {
				t.Errorf("block %s of %s is not in its prefixes %v", bp, blk.owner, byNode[blk.owner])
			}
		}
		a.mu.Unlock()
		for node, ps := range byNode {
			if merged := mergePrefixes(ps); len(merged) != len(ps) {
				t.Errorf("%s: %v merge further into %v", node, ps, merged)
			}
		}
		if !slices.ContainsFunc(byNode["n2"], func(p netip.Prefix) bool { return p.Contains(y) }) {
			t.Errorf("n2's address %s is in none of its prefixes %v", y, byNode["n2"])
		}
		if b := b.Owners()[subnet]; !slices.Equal(b, owned) {
			t.Errorf("n2 sees owners\n%v\nn1 sees\n%v", b, owned)
		}
	})
}

func TestMergePrefixes(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct{ in, want []netip.Prefix }{
		{nil, nil},
		{[]netip.Prefix{p("10.0.0.16/28"), p("10.0.0.0/28"), p("10.0.0.32/27")}, []netip.Prefix{p("10.0.0.0/26")}},
		{[]netip.Prefix{p("10.0.0.16/28"), p("10.0.0.32/28")}, []netip.Prefix{p("10.0.0.16/28"), p("10.0.0.32/28")}},
		{[]netip.Prefix{p("10.0.0.0/28"), p("10.0.0.0/28")}, []netip.Prefix{p("10.0.0.0/28")}},
	} {
		if got := mergePrefixes(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("mergePrefixes(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
