// The reconcile pass Run makes on every store change: what this node owes
// the cluster for each pool, and the steps that keep its own stance true
// (retire a lost lineage, join the winner, concede lost blocks, publish).

package ipam

import (
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/meshnet/meshnet/gossip"
)

// reconcileLocked brings this node's records in line with what it sees:
// see reconcilePoolLocked.
func (a *IPAM) reconcileLocked() {
	keys := make([]string, 0, len(a.pools))
	for k := range a.pools {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		a.reconcilePoolLocked(a.pools[k])
	}
}

// reconcilePoolLocked does, for one pool, everything this node owes the
// cluster, in an order that keeps every intermediate state safe:
//
//  1. retire its records of a lineage that lost (or that a removal hid),
//     publishing the addresses it still holds there before letting go;
//  2. join the winning lineage;
//  3. concede blocks it lost, listing the addresses it still holds there;
//  4. claim blocks handed to it;
//  5. claim orphaned blocks if it is the heir;
//  6. answer requests for blocks;
//  7. list its own addresses that others also list (conflicts);
//  8. refresh its pool record; ask for a block if it has no free address;
//     log new conflicts.
//
// Every step is idempotent: the store skips writes that change nothing.
func (a *IPAM) reconcilePoolLocked(lp *localPool) {
	a.persistCacheLocked()
	if v := a.viewOrRecreateLocked(lp); v == nil {
		return
	}
	a.retireForeignLocked(lp)
	a.joinLineageLocked(lp)
	a.concedeLostLocked(lp)
	a.claimGrantsLocked(lp)
	a.inheritLocked(lp)
	a.answerRequestsLocked(lp)
	a.publishConflictsLocked(lp)
	a.publishPoolLocked(lp, false)
	a.requestIfShortLocked(lp)
	a.logConflictsLocked(lp)
}

// viewOrRecreateLocked returns the pool's view. When no record of a pool
// in use here is visible, ours included (our state was lost, or a removal
// hid it), it starts a lineage again, once the node has heard from its
// cluster (joined.go): an older lineage, when it shows up, wins and this
// one is retired. It returns nil while there is still no view.
func (a *IPAM) viewOrRecreateLocked(lp *localPool) *poolView {
	if v := a.viewLocked(lp.key); v != nil {
		lp.noView = false
		return v
	}
	if lp.released || lp.refs == 0 {
		return nil
	}
	if a.joined == nil {
		// What it held here may be another lineage's by now: only the
		// cluster can say.
		if !lp.noViewWait {
			lp.noViewWait = true
			a.log.Warn("no record of a pool in use here; waiting to hear from the cluster before creating it again", "subnet", lp.key)
		}
		return nil
	}
	if !lp.noView {
		lp.noView = true
		a.log.Warn("no record of a pool in use here; creating it again", "subnet", lp.key)
	}
	if err := a.createLocked(lp, 1, firstHost(lp.subnet), 0); err != nil {
		a.log.Error("re-create pool", "subnet", lp.key, "err", err)
	}
	return nil
}

// persistCacheLocked writes what this node knows of others to disk when it
// changed, before the node acts on it.
func (a *IPAM) persistCacheLocked() {
	a.clusterLocked()
	if a.cache.persisted {
		return
	}
	if err := a.persistClusterLocked(a.cache.all); err != nil {
		a.log.Error("persist cluster cache", "err", err)
		return
	}
	a.cache.persisted = true
}

// addrsIn returns this node's addresses inside p.
func addrsIn(lp *localPool, p netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for ad := range lp.addrs {
		if p.Contains(ad) {
			out = append(out, ad)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// byBlock groups this node's addresses by block of the view's geometry.
func byBlock(lp *localPool, g geometry) map[int][]netip.Addr {
	out := make(map[int][]netip.Addr)
	for ad := range lp.addrs {
		if i, ok := g.blockOf(ad); ok {
			out[i] = append(out[i], ad)
		}
	}
	for _, s := range out {
		slices.SortFunc(s, netip.Addr.Compare)
	}
	return out
}

func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(x, netip.Addr.Compare)
	slices.SortFunc(y, netip.Addr.Compare)
	return slices.Equal(x, y)
}

type ownBlock struct {
	rec    gossip.Record
	v      BlockRecord
	prefix netip.Prefix
	hidden bool
}

// retireForeignLocked handles this node's block records that no longer
// count: those of a lineage that lost, and those a removal of this node
// hid. Where the node still holds addresses it writes single-block
// concessions listing them, then concedes the covering record naming
// those blocks (HeldIn); where it holds nothing it deletes the record.
// Deleting matters: after a restart, before any gossip, a node trusts its
// own records, so they must never claim more than it owns.
func (a *IPAM) retireForeignLocked(lp *localPool) {
	v := a.viewLocked(lp.key)
	upTo, removedSelf := v.removed[a.self]
	var foreign []ownBlock
	if removedSelf {
		for _, r := range a.store.Owned() {
			if r.Kind != gossip.KindBlock || r.Deleted || !strings.HasPrefix(r.ID, lp.key+" ") {
				continue
			}
			if b, _ := a.dec.get(r, parseBlock).(*blockRec); b != nil {
				hidden := r.Version <= upTo
				if b.v.Origin != v.origin || hidden {
					foreign = append(foreign, ownBlock{rec: r, v: b.v, prefix: b.prefix, hidden: hidden})
				}
			}
		}
	} else {
		for _, b := range v.recs {
			if b.owner == a.self && b.v.Origin != v.origin {
				r, _ := a.ownRecord(gossip.KindBlock, b.id)
				foreign = append(foreign, ownBlock{rec: r, v: b.v, prefix: b.prefix})
			}
		}
	}
	// Covering records first: they must stop pointing at a single-block
	// record before it is deleted.
	sort.SliceStable(foreign, func(i, j int) bool { return foreign[i].prefix.Bits() < foreign[j].prefix.Bits() })
	for _, f := range foreign {
		mine := addrsIn(lp, f.prefix)
		single := f.prefix.Bits() >= v.geo.blockLen
		switch {
		case len(mine) == 0:
			if err := a.store.Delete(gossip.KindBlock, f.rec.ID); err != nil {
				a.log.Error("retire block record", "record", f.rec.Key.String(), "err", err)
			}
		case single:
			c := f.v
			c.Conceded, c.To, c.ForSeq, c.HeldIn = true, "", 0, nil
			c.Held = encodeAddrs(mine)
			if err := a.putLocked(gossip.KindBlock, f.rec.ID, c); err != nil {
				a.log.Error("concede block", "record", f.rec.Key.String(), "err", err)
			}
		default:
			var heldIn []string
			held := byBlock(lp, v.geo)
			idx := make([]int, 0, len(held))
			for i := range held {
				idx = append(idx, i)
			}
			slices.Sort(idx)
			for _, i := range idx {
				p, addrs := v.geo.blockPrefix(i), held[i]
				if !f.prefix.Overlaps(p) || (f.v.Origin == v.origin && v.blocks[i].owner == a.self) {
					continue // (a block it owns again keeps its claim)
				}
				id := blockID(lp.key, p.String(), f.v.Origin)
				if _, ok := a.ownRecord(gossip.KindBlock, id); ok && slices.ContainsFunc(foreign, func(o ownBlock) bool { return o.rec.ID == id }) {
					// Its own record of that block (one it was handed in the
					// lost lineage) is conceded as a single block below:
					// writing it here too, from the covering record's
					// generation, made the two writes take turns at every
					// pass, each a store change that started another.
					heldIn = append(heldIn, p.String())
					continue
				}
				c := BlockRecord{Pool: lp.key, Prefix: p.String(), Origin: f.v.Origin, Gen: f.v.Gen, Conceded: true, Held: encodeAddrs(addrs)}
				if err := a.putLocked(gossip.KindBlock, id, c); err != nil {
					a.log.Error("concede block", "block", p, "err", err)
					return // the covering record stays unconceded: the owner keeps waiting
				}
				heldIn = append(heldIn, p.String())
			}
			slices.Sort(heldIn)
			c := f.v
			c.Conceded, c.To, c.ForSeq, c.Held, c.HeldIn = true, "", 0, nil, heldIn
			if err := a.putLocked(gossip.KindBlock, f.rec.ID, c); err != nil {
				a.log.Error("concede block", "record", f.rec.Key.String(), "err", err)
			}
		}
	}
}

// joinLineageLocked writes this node's pool record in the winning lineage
// with the cluster's settings.
func (a *IPAM) joinLineageLocked(lp *localPool) {
	v := a.viewLocked(lp.key)
	cur, ok := a.ownPoolRecord(lp.key)
	_, visible := v.members[a.self]
	if ok && visible && cur.Origin == v.origin && cur.Gateway == v.gateway.String() && cur.BlockBits == v.geo.blockBits && cur.Released == lp.released {
		return
	}
	if ok && cur.Origin != v.origin {
		a.log.Warn("pool was created twice; following the first creation", "subnet", lp.key, "winner", v.origin.String(), "was", cur.Origin.String())
	}
	if err := a.putPoolRecordLocked(lp, v.origin, v.gateway, v.geo.blockBits, nil); err != nil {
		a.log.Error("join pool lineage", "subnet", lp.key, "err", err)
	}
}

// concedeLostLocked gives up, in writing, every block of the winning
// lineage this node's records still claim but that it does not own, and
// lists the addresses it holds in blocks it does not own.
func (a *IPAM) concedeLostLocked(lp *localPool) {
	v := a.viewLocked(lp.key)
	mineBy := byBlock(lp, v.geo)
	for i := range v.blocks {
		b := &v.blocks[i]
		if b.owner == a.self {
			continue // owned, or handed to us and about to be claimed
		}
		m, my := b.mine, mineBy[i]
		if len(my) == 0 && (m == nil || (m.v.Conceded || isGrant(m.v)) && len(m.held) == 0) {
			continue // nothing held, nothing claimed: the common case
		}
		p := v.geo.blockPrefix(i)
		id := blockID(lp.key, p.String(), v.origin)
		switch {
		case m == nil || m.prefix.Bits() < v.geo.blockLen:
			needConcede := m != nil && !m.v.Conceded && !isGrant(m.v)
			if !needConcede && len(my) == 0 {
				continue
			}
			gen := b.maxGen
			if m != nil {
				gen = m.v.Gen
			}
			c := BlockRecord{Pool: lp.key, Prefix: p.String(), Origin: v.origin, Gen: gen, Conceded: true, Held: encodeAddrs(my)}
			if err := a.putLocked(gossip.KindBlock, id, c); err != nil {
				a.log.Error("concede block", "block", p, "err", err)
			}
		default:
			needConcede := !m.v.Conceded && !isGrant(m.v)
			if !needConcede && sameAddrs(m.held, my) {
				continue
			}
			c := m.v
			if needConcede {
				c.Conceded = true
				a.log.Warn("lost a block to another node", "block", p, "owner", b.owner, "holding", len(my))
			}
			c.Held = encodeAddrs(my)
			if err := a.putLocked(gossip.KindBlock, id, c); err != nil {
				a.log.Error("concede block", "block", p, "err", err)
			}
		}
	}
}

// publishPoolLocked refreshes this node's pool record: spare blocks, and
// the allocated count (at most every PublishInterval unless force).
func (a *IPAM) publishPoolLocked(lp *localPool, force bool) {
	v := a.viewLocked(lp.key)
	if v == nil {
		return
	}
	cur, ok := a.ownPoolRecord(lp.key)
	if !ok || cur.Origin != v.origin {
		return // joinLineageLocked writes it
	}
	next := cur
	next.Released = lp.released
	next.Spare = len(a.giveableLocked(lp, v, nil))
	now := a.cfg.Clock.Now()
	changed := next.Spare != cur.Spare || next.Released != cur.Released
	if next.Allocated != len(lp.addrs) && (force || changed || now.Sub(lp.published) >= a.cfg.PublishInterval || len(lp.addrs) == 0) {
		next.Allocated = len(lp.addrs)
		changed = true
	}
	if !changed {
		return
	}
	if err := a.putLocked(KindPool, lp.key, next); err != nil {
		a.log.Error("publish pool record", "subnet", lp.key, "err", err)
		return
	}
	lp.published = now
}
