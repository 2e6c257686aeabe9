package ipam

import (
	"net/netip"
	"slices"
)

// Status is what ipam reports for meshctl; the daemon copies it into the
// control package's types, which own the JSON form.
type Status struct {
	Node      string
	Pools     []PoolStatus
	Conflicts []Conflict
}

// PoolStatus is one pool as this node sees it.
type PoolStatus struct {
	Subnet    string
	Gateway   string
	BlockLen  int    // e.g. 26: blocks are /26
	BlockSize uint64 // addresses per block (saturates)
	NumBlocks int
	Origin    Origin
	// Lineages lists every creation of the subnet seen, the winner first;
	// more than one means it was created on two sides of a partition.
	Lineages []Origin
	// Heir claims the blocks of removed nodes.
	Heir   string
	Local  *LocalPoolStatus
	Ranges []BlockRange
	Usage  []NodeUsage
}

// LocalPoolStatus is this node's use of a pool.
type LocalPoolStatus struct {
	Refs      int
	Released  bool
	Allocated int
	Waiting   int
}

// BlockRange is a run of consecutive blocks in the same hands and state.
type BlockRange struct {
	First     string
	Last      string
	Blocks    int
	Owner     string
	State     BlockState
	Contested bool
	Frozen    bool
}

// NodeUsage is one node's share of a pool.
type NodeUsage struct {
	Node string
	// Blocks it owns; Spare of them it would hand away.
	Blocks int
	Spare  int
	// Allocated addresses (exact for this node; for others as last
	// published).
	Allocated int
	Released  bool
	Up        bool
}

// Conflict is an address that two nodes or more hold: it happens only when
// a pool was created on two sides of a partition (or a node was removed
// while still running). It is never handed out again while any of them
// holds it.
type Conflict struct {
	Subnet string
	Addr   string
	Nodes  []string
}

// poolKeysLocked lists every pool this node knows of (its own, and those
// of KindPool records), sorted by address.
func (a *IPAM) poolKeysLocked() []string {
	keys := map[string]bool{}
	for k := range a.pools {
		keys[k] = true
	}
	for _, r := range a.store.Snapshot().Records(KindPool) {
		keys[r.ID] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.SortFunc(sorted, func(x, y string) int {
		px, _ := netip.ParsePrefix(x)
		py, _ := netip.ParsePrefix(y)
		return px.Addr().Compare(py.Addr())
	})
	return sorted
}

// Status reports every pool this node knows of.
func (a *IPAM) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{Node: a.self, Pools: []PoolStatus{}, Conflicts: []Conflict{}}
	for _, k := range a.poolKeysLocked() {
		v := a.viewLocked(k)
		lp := a.pools[k]
		if v == nil {
			continue
		}
		st.Pools = append(st.Pools, a.poolStatusLocked(v, lp))
		st.Conflicts = append(st.Conflicts, a.conflictsLocked(lp, v)...)
	}
	sortConflicts(st.Conflicts)
	return st
}

func (a *IPAM) poolStatusLocked(v *poolView, lp *localPool) PoolStatus {
	ps := PoolStatus{
		Subnet:    v.key,
		Gateway:   v.gateway.String(),
		BlockLen:  v.geo.blockLen,
		BlockSize: uint64(1) << min(v.geo.blockBits, 63),
		NumBlocks: v.geo.nblocks,
		Origin:    v.origin,
		Ranges:    []BlockRange{},
		Usage:     []NodeUsage{},
	}
	if len(v.lineages) > 1 {
		ps.Lineages = v.lineages
	}
	usage := map[string]*NodeUsage{}
	use := func(n string) *NodeUsage {
		u, ok := usage[n]
		if !ok {
			u = &NodeUsage{Node: n}
			if m, ok := v.members[n]; ok {
				u.Allocated, u.Spare, u.Released, u.Up = m.rec.Allocated, m.rec.Spare, m.rec.Released, m.up
			}
			usage[n] = u
		}
		return u
	}
	for n := range v.members {
		use(n)
	}
	orphans := false
	for i := range v.blocks {
		b := &v.blocks[i]
		if b.owner != "" {
			use(b.owner).Blocks++
		} else {
			orphans = true
		}
		n := len(ps.Ranges)
		last := v.geo.addrAt(i, ones(v.geo.blockBits))
		if n > 0 {
			r := &ps.Ranges[n-1]
			if r.Owner == b.owner && r.State == b.state && r.Contested == b.contested && r.Frozen == b.frozen {
				r.Last, r.Blocks = last.String(), r.Blocks+1
				continue
			}
		}
		ps.Ranges = append(ps.Ranges, BlockRange{
			First: v.geo.addrAt(i, u128{}).String(), Last: last.String(), Blocks: 1,
			Owner: b.owner, State: b.state, Contested: b.contested, Frozen: b.frozen,
		})
	}
	if orphans {
		ps.Heir = v.heir
	}
	if lp != nil {
		ps.Local = &LocalPoolStatus{Refs: lp.refs, Released: lp.released, Allocated: len(lp.addrs), Waiting: lp.waiters}
		u := use(a.self)
		u.Allocated, u.Released, u.Up = len(lp.addrs), lp.released, true
		u.Spare = len(a.giveableLocked(lp, v, nil))
	}
	for _, u := range usage {
		ps.Usage = append(ps.Usage, *u)
	}
	slices.SortFunc(ps.Usage, func(x, y NodeUsage) int {
		switch {
		case x.Node < y.Node:
			return -1
		case x.Node > y.Node:
			return 1
		}
		return 0
	})
	return ps
}
