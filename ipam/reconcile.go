package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

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

// putLocked writes one of this node's records. A record hidden by this
// node's own removal is deleted first, so that the rewrite gets a version
// above the removal even when its value did not change.
func (a *IPAM) putLocked(kind gossip.Kind, id string, value any) error {
	if upTo, ok := a.store.Snapshot().Removed[a.self]; ok {
		if r, ok := a.ownRecord(kind, id); ok && r.Version <= upTo {
			if err := a.store.Delete(kind, id); err != nil {
				return err
			}
		}
	}
	_, err := a.store.Put(kind, id, value)
	return err
}

// ownRecord reads one of this node's live records. They are all in the
// snapshot unless a removal of this node hides some.
func (a *IPAM) ownRecord(kind gossip.Kind, id string) (gossip.Record, bool) {
	snap := a.store.Snapshot()
	if _, removed := snap.Removed[a.self]; !removed {
		return snap.Get(kind, a.self, id)
	}
	for _, r := range a.store.Owned() {
		if r.Kind == kind && r.ID == id && !r.Deleted {
			return r, true
		}
	}
	return gossip.Record{}, false
}

func (a *IPAM) ownRequest(key string) (RequestRecord, bool) {
	r, ok := a.ownRecord(KindRequest, key)
	if !ok {
		return RequestRecord{}, false
	}
	rr, _ := a.dec.get(r, parseRequest).(*RequestRecord)
	if rr == nil {
		return RequestRecord{}, false
	}
	return *rr, true
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
				c := BlockRecord{Pool: lp.key, Prefix: p.String(), Origin: f.v.Origin, Gen: f.v.Gen, Conceded: true, Held: encodeAddrs(addrs)}
				if err := a.putLocked(gossip.KindBlock, blockID(lp.key, p.String(), f.v.Origin), c); err != nil {
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
		if len(my) == 0 && (m == nil || (m.v.Conceded || m.v.grant()) && len(m.held) == 0) {
			continue // nothing held, nothing claimed: the common case
		}
		p := v.geo.blockPrefix(i)
		id := blockID(lp.key, p.String(), v.origin)
		switch {
		case m == nil || m.prefix.Bits() < v.geo.blockLen:
			needConcede := m != nil && !m.v.Conceded && !m.v.grant()
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
			needConcede := !m.v.Conceded && !m.v.grant()
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

// claimGrantsLocked claims the blocks other nodes handed to this node.
func (a *IPAM) claimGrantsLocked(lp *localPool) {
	v := a.viewLocked(lp.key)
	for i := range v.blocks {
		b := &v.blocks[i]
		if b.owner != a.self || b.state != StateGranted || b.grant == nil || v.grantOrphaned(b.grant) {
			continue // (a grant made before this node was removed is the heir's)
		}
		p := v.geo.blockPrefix(i)
		c := BlockRecord{Pool: lp.key, Prefix: p.String(), Origin: v.origin, Gen: b.gen, From: b.grant.owner}
		if err := a.putLocked(gossip.KindBlock, blockID(lp.key, p.String(), v.origin), c); err != nil {
			a.log.Error("claim handed block", "block", p, "err", err)
			continue
		}
		a.log.Debug("claimed block", "block", p, "from", b.grant.owner)
	}
}

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

// giveableLocked lists the blocks this node could hand away, in the order
// it would: empty blocks from the top (allocation fills from the bottom),
// then blocks it uses lightly (a quarter or less), least used first —
// their grant lists the addresses it keeps, which the new owner avoids
// (Weave's donor likewise gives free space out of a used range). Only
// owned, uncontested blocks in which no other node holds an address
// qualify. An active node keeps enough to have a free address itself.
func (a *IPAM) giveableLocked(lp *localPool, v *poolView, exclude map[int]bool) []int {
	counts := a.countsLocked(lp, v)
	size := 1 << min(v.geo.blockBits, 20)
	var empty, partial []int
	free := 0 // free addresses in blocks not on the list
	for i := range v.blocks {
		if !a.usable(v, i) || v.blocks[i].contested || exclude[i] {
			continue
		}
		switch {
		case v.othersIn[i] > 0:
			free += max(0, size-3-counts[i]-v.othersIn[i])
		case counts[i] == 0:
			empty = append(empty, i)
		case counts[i]*4 <= size:
			partial = append(partial, i)
		default:
			free += max(0, size-3-counts[i])
		}
	}
	slices.Reverse(empty)
	sort.SliceStable(partial, func(x, y int) bool { return counts[partial[x]] < counts[partial[y]] })
	give := append(empty, partial...)
	if !lp.released && free == 0 && len(give) > 0 {
		give = give[:len(give)-1] // the block it would give last, it keeps
	}
	return give
}

// answerRequestsLocked hands spare blocks to nodes that asked this one.
// A grant is written before the request is marked answered: after a crash
// in between, the request is answered again (an extra block, never a lost
// or doubled one).
func (a *IPAM) answerRequestsLocked(lp *localPool) {
	v := a.viewLocked(lp.key)
	if len(v.requests) == 0 {
		return
	}
	cur, _ := a.ownPoolRecord(lp.key)
	answered := make(map[string]uint64, len(cur.Answered))
	if cur.Origin == v.origin {
		for k, s := range cur.Answered {
			answered[k] = s
		}
	}
	changed := false
	granted := map[int]bool{}
	reqs := slices.Clone(v.requests)
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].from < reqs[j].from })
	for _, rq := range reqs {
		if rq.r.Seq <= answered[rq.from] {
			continue
		}
		if m, ok := v.members[rq.from]; !ok || !m.up || removedFor(v.removed, rq.from, rq.version) {
			continue
		}
		giveable := a.giveableLocked(lp, v, granted)
		var give []int
		if rq.r.Block != "" {
			if p, err := netip.ParsePrefix(rq.r.Block); err == nil {
				if i, ok := v.geo.blockOf(p.Addr()); ok && v.geo.blockPrefix(i) == p && slices.Contains(giveable, i) {
					give = []int{i}
				}
			}
		} else {
			give = giveable[:min(max(rq.r.Want, 1), 16, len(giveable))]
		}
		if len(give) == 0 {
			frozen := countBlocks(v, func(b blockInfo) bool { return b.frozen || b.contested })
			a.log.Debug("no spare block for a request", "subnet", lp.key, "from", rq.from, "seq", rq.r.Seq, "block", rq.r.Block,
				"owned", a.ownedCount(v), "frozen_or_contested", frozen)
			if rq.r.Block == "" && frozen > 0 {
				// A rival creation of the pool still freezes blocks; it
				// gives way within a gossip round or two. Leave the request
				// open and look again at the next reconcile, rather than
				// say no and have the requester wait out its timeout.
				continue
			}
		}
		ok := true
		for _, i := range give {
			p := v.geo.blockPrefix(i)
			// The grant lists what this node keeps in the block: in the
			// same record, so nobody sees the block handed over without it.
			keep := addrsIn(lp, p)
			g := BlockRecord{Pool: lp.key, Prefix: p.String(), Origin: v.origin, Gen: v.blocks[i].gen + 1, To: rq.from, ForSeq: rq.r.Seq, Held: encodeAddrs(keep)}
			if err := a.putLocked(gossip.KindBlock, blockID(lp.key, p.String(), v.origin), g); err != nil {
				a.log.Error("hand block", "block", p, "to", rq.from, "err", err)
				ok = false
				break
			}
			granted[i] = true
			a.log.Info("handed block", "block", p, "to", rq.from, "kept", len(keep))
		}
		if ok {
			answered[rq.from] = rq.r.Seq
			changed = true
		}
	}
	if changed {
		if err := a.putPoolRecordLocked(lp, v.origin, v.gateway, v.geo.blockBits, answered); err != nil {
			a.log.Error("record answered requests", "subnet", lp.key, "err", err)
		}
	}
}

func countBlocks(v *poolView, f func(blockInfo) bool) int {
	n := 0
	for _, b := range v.blocks {
		if f(b) {
			n++
		}
	}
	return n
}

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

// requestIfShortLocked asks for a block when an active node has no free
// address left, so the next container does not wait.
func (a *IPAM) requestIfShortLocked(lp *localPool) {
	if lp.released || lp.waiters > 0 {
		return // waiters drive their own requests
	}
	v := a.viewLocked(lp.key)
	hint, off := lp.hintBlock, lp.hintOff
	_, ok := a.findFreeLocked(lp, v)
	lp.hintBlock, lp.hintOff = hint, off
	if ok {
		return
	}
	if err := a.ensureRequestLocked(lp, v, netip.Prefix{}); err != nil {
		a.log.Debug("no block to ask for", "subnet", lp.key, "err", err)
	}
}

// ownedCount counts the blocks this node owns or was handed.
func (a *IPAM) ownedCount(v *poolView) int {
	n := 0
	for i := range v.blocks {
		if v.blocks[i].owner == a.self {
			n++
		}
	}
	return n
}

// ensureRequestLocked makes sure a request for a block (any, or the given
// one) is out to a donor that is up and has not already said no.
func (a *IPAM) ensureRequestLocked(lp *localPool, v *poolView, block netip.Prefix) error {
	now := a.cfg.Clock.Now()
	if lp.req.tried == nil {
		lp.req.tried = make(map[string]time.Time)
	}
	owned := a.ownedCount(v)
	blockStr := ""
	if block.IsValid() {
		blockStr = block.String()
	}
	cur, hasCur := a.ownRequest(lp.key)
	adopted := false
	if hasCur && lp.req.seq != cur.Seq {
		// Written by an earlier run: give it its time, but an answer
		// to it says nothing about what the donor has now.
		lp.req = requestState{seq: cur.Seq, donor: cur.Donor, sentAt: now, owned: owned, tried: lp.req.tried}
		adopted = true
	}
	if hasCur && cur.Origin == v.origin && cur.Block == blockStr {
		m, ok := v.members[cur.Donor]
		answered := ok && m.rec.Answered[a.self] >= cur.Seq
		switch {
		case !answered && ok && m.up && now.Sub(lp.req.sentAt) < a.cfg.RequestTimeout:
			return nil // in flight
		case answered && (adopted || owned > lp.req.owned):
			// It gave; ask again, maybe the same donor.
		case !lp.req.judged:
			// It said no, or did not answer in time: skip it for a
			// while (once per request, so that the while can end).
			lp.req.tried[cur.Donor] = now
			lp.req.judged = true
		}
	}
	donor, err := a.pickDonorLocked(lp, v, block)
	if err != nil || donor == "" {
		return err // donor "": wait for a donor's record to change
	}
	seq := uint64(1)
	if hasCur {
		seq = cur.Seq + 1
		// Asking again: the donor may have missed this node's pool record
		// (without it the request is not one of the pool's members') or the
		// request itself; gossip the pool record once more with it.
		a.store.Announce(KindPool, lp.key)
	}
	want := 1
	if lp.waiters > 0 && v.geo.blockBits < 20 {
		want = 1 + lp.waiters/(1<<v.geo.blockBits)
	}
	rec := RequestRecord{Subnet: lp.key, Origin: v.origin, Seq: seq, Donor: donor, Want: want, Block: blockStr}
	if err := a.putLocked(KindRequest, lp.key, rec); err != nil {
		return fmt.Errorf("ask %s for a block of %s: %w", donor, lp.key, err)
	}
	lp.req = requestState{seq: seq, donor: donor, sentAt: now, owned: owned, tried: lp.req.tried}
	a.log.Debug("asked for a block", "subnet", lp.key, "donor", donor, "seq", seq, "block", blockStr)
	return nil
}

// pickDonorLocked chooses whom to ask: the owner of a wanted block, else
// the member with the most spare blocks that is up and has not said no
// within RequestTimeout. It returns "" without error when the only
// candidates said no lately but still advertise spare blocks: the caller
// waits and asks again.
func (a *IPAM) pickDonorLocked(lp *localPool, v *poolView, block netip.Prefix) (string, error) {
	if block.IsValid() {
		i, _ := v.geo.blockOf(block.Addr())
		owner := v.blocks[i].owner
		if m, ok := v.members[owner]; !ok || !m.up {
			return "", &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("block %s is owned by host %s, which is down: choose another address", block, owner)}
		}
		return owner, nil
	}
	best, bestSpare := "", 0
	var down []string
	waitFor := false
	for n, m := range v.members {
		if n == a.self || m.rec.Spare <= 0 {
			continue
		}
		if !m.up {
			down = append(down, n)
			continue
		}
		if t, ok := lp.req.tried[n]; ok && a.cfg.Clock.Now().Sub(t) < a.cfg.RequestTimeout {
			// It said no yet advertises spare blocks: a passing state
			// (its blocks frozen by a merge, say). Ask again later.
			waitFor = true
			continue
		}
		if m.rec.Spare > bestSpare || (m.rec.Spare == bestSpare && n < best) {
			best, bestSpare = n, m.rec.Spare
		}
	}
	if best != "" || waitFor {
		return best, nil
	}
	for i := range v.blocks {
		if v.blocks[i].frozen {
			// A second creation of the pool (or a concession whose list has
			// not arrived) holds blocks: it gives way as soon as it hears of
			// the winning lineage, so wait rather than call the pool full.
			return "", nil
		}
	}
	slices.Sort(down)
	orphans := 0
	for i := range v.blocks {
		if v.blocks[i].state == StateOrphaned {
			orphans++
		}
	}
	switch {
	case len(down) > 0:
		return "", &Error{Kind: ErrExhausted, Msg: fmt.Sprintf(
			"pool %s: no free address on this host, and the nodes with spare blocks are down (%s): bring them back, or remove them with meshctl rmpeer so that their blocks are inherited",
			lp.key, strings.Join(down, ", "))}
	case orphans > 0:
		return "", &Error{Kind: ErrExhausted, Msg: fmt.Sprintf(
			"pool %s: no free address on this host; %d blocks of removed nodes wait for %s to inherit them: retry shortly", lp.key, orphans, v.heir)}
	}
	return "", &Error{Kind: ErrExhausted, Msg: fmt.Sprintf(
		"pool %s is exhausted: no node has a spare block (%d blocks of /%d, %d nodes): release addresses, or create the network on a larger subnet",
		lp.key, v.geo.nblocks, v.geo.blockLen, len(v.members))}
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
