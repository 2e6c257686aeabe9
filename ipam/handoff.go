// Handoff: asking a donor for blocks, answering requests with grants, and
// claiming what was granted (doc.go, "Handoff").

package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/meshnet/meshnet/gossip"
)

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
		lp.req.tried = make(map[string]triedDonor)
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
	if hasCur && cur.Origin == v.origin && cur.Block != blockStr {
		m, ok := v.members[cur.Donor]
		if ok && m.up && m.rec.Answered[a.self] < cur.Seq && now.Sub(lp.req.sentAt) < a.cfg.RequestTimeout {
			// Another waiter's request (for another block, or for any) is
			// out, and a pool has one request record: rewriting it would
			// take turns with that waiter at every store change, a write
			// each time, and no answer would match the request it
			// answers. Wait until it is answered or timed out.
			return nil
		}
	}
	if hasCur && cur.Origin == v.origin && cur.Block == blockStr {
		m, ok := v.members[cur.Donor]
		answered := ok && m.rec.Answered[a.self] >= cur.Seq
		switch {
		case !answered && ok && m.up && now.Sub(lp.req.sentAt) < a.cfg.RequestTimeout:
			if !lp.req.reannounced && now.Sub(lp.req.sentAt) >= a.cfg.RequestTimeout/4 {
				// No answer yet from a donor that answers within a gossip
				// round or two: its copy of the request, or of this node's
				// pool record (without which the request is not a member's),
				// may have been lost. Gossip both once more.
				lp.req.reannounced = true
				a.store.Announce(KindPool, lp.key)
				a.store.Announce(KindRequest, lp.key)
				a.log.Debug("no answer yet; request gossiped again", "subnet", lp.key, "donor", cur.Donor, "seq", cur.Seq)
			}
			return nil // in flight
		case answered && (adopted || owned > lp.req.owned):
			// It gave; ask again, maybe the same donor.
		case !lp.req.judged:
			// It said no, or did not answer in time: prefer others for a
			// while (once per request, so that the while can end).
			lp.req.tried[cur.Donor] = triedDonor{at: now, answered: answered}
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
// the member with the most spare blocks that is up and has given nothing
// to this node's requests within RequestTimeout; failing that, the one of
// those that did not answer at all (asked again at once). It returns ""
// without error when the only candidates said no lately but still
// advertise spare blocks: the caller waits and asks again.
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
	silent, silentSpare := "", 0
	var down []string
	waitFor := false
	better := func(n string, spare int, than string, thanSpare int) bool {
		return spare > thanSpare || (spare == thanSpare && n < than)
	}
	for n, m := range v.members {
		if n == a.self || m.rec.Spare <= 0 {
			continue
		}
		if !m.up {
			down = append(down, n)
			continue
		}
		if t, ok := lp.req.tried[n]; ok && a.cfg.Clock.Now().Sub(t.at) < a.cfg.RequestTimeout {
			if t.answered {
				// It said no yet advertises spare blocks: a passing state
				// (its blocks frozen by a merge, say). Ask again later.
				waitFor = true
			} else if silent == "" || better(n, m.rec.Spare, silent, silentSpare) {
				silent, silentSpare = n, m.rec.Spare
			}
			continue
		}
		if best == "" || better(n, m.rec.Spare, best, bestSpare) {
			best, bestSpare = n, m.rec.Spare
		}
	}
	if best == "" {
		best = silent
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
