// Pools: taking part in a subnet's pool (create or join a lineage),
// releasing it, and what a pool says of itself (gateway, removal check).

package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/meshnet/meshnet/gossip"
)

// nextVersion is a creation stamp: above every version seen, at least the
// wall clock, so that "first created" compares across nodes.
func (a *IPAM) nextVersion() uint64 {
	return max(a.store.Clock()+1, uint64(a.cfg.Clock.Now().UnixNano()))
}

// KnowsPool reports whether subnet is a pool this node uses or one the
// cluster's records name: RequestPool would join it rather than create it.
func (a *IPAM) KnowsPool(subnet netip.Prefix) bool {
	key := subnet.String()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.pools[key]; ok {
		return true
	}
	v := a.viewLocked(key)
	return v != nil && !v.idle()
}

// RequestPool makes this node take part in the pool of subnet: it creates
// the pool (owning all of it) when no node has it, or joins the lineage
// that wins. It is idempotent per subnet and reference counted; the pool ID
// is the subnet string. opts may carry "block-prefix" (e.g. "26").
func (a *IPAM) RequestPool(subnet netip.Prefix, opts map[string]string) (string, error) {
	if !subnet.IsValid() {
		return "", &Error{Kind: ErrNoSubnet, Msg: ErrNoSubnet.Error()}
	}
	if subnet.Addr().Is4In6() || subnet.Addr().Zone() != "" {
		return "", &Error{Kind: ErrBadSubnet, Msg: fmt.Sprintf("subnet %s: use a plain IPv4 or IPv6 prefix", subnet)}
	}
	if subnet != subnet.Masked() {
		return "", &Error{Kind: ErrBadSubnet, Msg: fmt.Sprintf("subnet %s has host bits set: did you mean %s?", subnet, subnet.Masked())}
	}
	wantBits, err := blockBitsOption(subnet, opts)
	if err != nil {
		return "", err
	}
	key := subnet.String()

	a.mu.Lock()
	defer a.mu.Unlock()
	if lp, ok := a.pools[key]; ok {
		if v := a.viewLocked(key); v != nil && wantBits != 0 && wantBits != v.geo.blockBits {
			return "", a.optionsError(v, wantBits)
		}
		lp.refs++
		lp.released = false
		if err := a.persistLocked(); err != nil {
			lp.refs--
			return "", fmt.Errorf("request pool %s: %w", key, err)
		}
		a.reconcilePoolLocked(lp)
		return key, nil
	}
	if err := a.checkOverlapLocked(subnet); err != nil {
		return "", err
	}
	v := a.viewLocked(key)
	lp := &localPool{subnet: subnet, key: key, refs: 1, addrs: make(map[netip.Addr]struct{})}
	switch {
	case v != nil && !v.idle():
		if wantBits != 0 && wantBits != v.geo.blockBits {
			return "", a.optionsError(v, wantBits)
		}
		if err := a.putPoolRecordLocked(lp, v.origin, v.gateway, v.geo.blockBits, nil); err != nil {
			return "", fmt.Errorf("request pool %s: join: %w", key, err)
		}
		a.log.Info("joined pool", "subnet", key, "origin", v.origin.String())
	default:
		epoch := uint64(1)
		if v != nil {
			epoch = v.lineages[0].Epoch + 1
		}
		if err := a.createLocked(lp, epoch, firstHost(subnet), wantBits); err != nil {
			return "", err
		}
	}
	a.pools[key] = lp
	if err := a.persistLocked(); err != nil {
		delete(a.pools, key)
		return "", fmt.Errorf("request pool %s: %w", key, err)
	}
	a.reconcilePoolLocked(lp)
	return key, nil
}

func blockBitsOption(subnet netip.Prefix, opts map[string]string) (int, error) {
	s, ok := opts["block-prefix"]
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(s, "/"))
	addrBits := subnet.Addr().BitLen()
	if err != nil || n < subnet.Bits() || n > addrBits-2 || n-subnet.Bits() > 16 {
		return 0, &Error{Kind: ErrOptions, Msg: fmt.Sprintf(
			"--ipam-opt block-prefix=%s: want a prefix length from /%d to /%d (at most 65536 blocks, at least 4 addresses each)",
			s, subnet.Bits(), min(addrBits-2, subnet.Bits()+16))}
	}
	return addrBits - n, nil
}

func (a *IPAM) optionsError(v *poolView, wantBits int) error {
	have := v.geo.blockLen
	return &Error{Kind: ErrOptions, Msg: fmt.Sprintf(
		"pool %s already exists in the cluster with blocks of /%d (created by %s); leave out --ipam-opt block-prefix or use block-prefix=%d (asked for /%d)",
		v.key, have, v.origin.Node, have, v.geo.addrBits-wantBits)}
}

// checkOverlapLocked refuses a subnet overlapping another pool in use.
func (a *IPAM) checkOverlapLocked(subnet netip.Prefix) error {
	for key, lp := range a.pools {
		if key != subnet.String() && lp.subnet.Overlaps(subnet) && !lp.released {
			return a.overlapError(subnet, lp.subnet, []string{a.self})
		}
	}
	seen := map[string]bool{}
	for _, r := range a.store.Snapshot().Records(KindPool) {
		if seen[r.ID] || r.ID == subnet.String() {
			continue
		}
		seen[r.ID] = true
		other, err := netip.ParsePrefix(r.ID)
		if err != nil || !other.Overlaps(subnet) {
			continue
		}
		v := a.viewLocked(r.ID)
		if v == nil || v.idle() {
			continue
		}
		var users []string
		for n, m := range v.members {
			if m.active() {
				users = append(users, n)
			}
		}
		slices.Sort(users)
		return a.overlapError(subnet, other, users)
	}
	return nil
}

func (a *IPAM) overlapError(subnet, other netip.Prefix, users []string) error {
	return &Error{Kind: ErrOverlap, Msg: fmt.Sprintf(
		"subnet %s overlaps meshnet pool %s (in use on %s): choose a subnet outside %s, or use --subnet %s to join that network",
		subnet, other, strings.Join(users, ", "), other, other)}
}

// createLocked starts a new lineage of the pool with this node owning all
// of it.
func (a *IPAM) createLocked(lp *localPool, epoch uint64, gateway netip.Addr, wantBits int) error {
	if a.joined == nil {
		return a.notJoinedError("create pool " + lp.key)
	}
	bb := wantBits
	members := a.upMembers()
	switch {
	case bb != 0:
	case a.cfg.BlockBits != 0:
		bb = min(a.cfg.BlockBits, lp.subnet.Addr().BitLen()-lp.subnet.Bits())
	default:
		var err error
		if bb, err = chooseBlockBits(lp.subnet, members, a.cfg.MinBlockBits); err != nil {
			return err
		}
	}
	geo, err := newGeometry(lp.subnet, bb)
	if err != nil {
		return &Error{Kind: ErrTooSmall, Msg: fmt.Sprintf("pool %s: %v", lp.key, err)}
	}
	if geo.nblocks < members {
		return &Error{Kind: ErrTooSmall, Msg: fmt.Sprintf(
			"subnet %s gives only %d blocks of /%d for %d nodes: use /%d or larger, or a smaller block-prefix",
			lp.key, geo.nblocks, geo.blockLen, members, geo.blockLen-log2ceil(members))}
	}
	origin := Origin{Epoch: epoch, Version: a.nextVersion(), Node: a.self}
	if err := a.putPoolRecordLocked(lp, origin, gateway, bb, nil); err != nil {
		return fmt.Errorf("create pool %s: %w", lp.key, err)
	}
	root := BlockRecord{Pool: lp.key, Prefix: lp.key, Origin: origin, Gen: 1}
	if err := a.putLocked(gossip.KindBlock, blockID(lp.key, lp.key, origin), root); err != nil {
		return fmt.Errorf("create pool %s: claim it: %w", lp.key, err)
	}
	a.log.Info("created pool", "subnet", lp.key, "gateway", gateway, "block", "/"+strconv.Itoa(geo.blockLen), "origin", origin.String())
	return nil
}

// upMembers counts the nodes that are up, this one included.
func (a *IPAM) upMembers() int {
	snap := a.store.Snapshot()
	n := 1
	for name, m := range snap.Members {
		if name != a.self && m.State.Up() {
			n++
		}
	}
	return n
}

// putPoolRecordLocked writes this node's pool record; answered nil keeps
// the current Answered map.
func (a *IPAM) putPoolRecordLocked(lp *localPool, origin Origin, gateway netip.Addr, blockBits int, answered map[string]uint64) error {
	cur, _ := a.ownPoolRecord(lp.key)
	if answered == nil && cur.Origin == origin {
		answered = cur.Answered
	}
	rec := PoolRecord{
		Subnet:    lp.key,
		Gateway:   gateway.String(),
		BlockBits: blockBits,
		Origin:    origin,
		Released:  lp.released,
		Allocated: len(lp.addrs),
		Spare:     cur.Spare,
		Answered:  answered,
	}
	if cur.Origin != origin {
		rec.Spare = 0
	}
	return a.putLocked(KindPool, lp.key, rec)
}

// ReleasePool drops one reference to the pool. At zero the node stops
// allocating from it but keeps what it owns, and hands blocks to whoever
// asks.
func (a *IPAM) ReleasePool(poolID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	lp, ok := a.pools[poolID]
	if !ok || (lp.released && lp.refs == 0) {
		return &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("release pool %s: this node has no such pool", poolID)}
	}
	prevRefs, prevReleased := lp.refs, lp.released
	if lp.refs > 0 {
		lp.refs--
	}
	if lp.refs == 0 {
		lp.released = true
	}
	if err := a.persistLocked(); err != nil {
		lp.refs, lp.released = prevRefs, prevReleased
		return fmt.Errorf("release pool %s: %w", poolID, err)
	}
	if lp.released {
		a.publishPoolLocked(lp, true)
		a.log.Info("released pool", "subnet", poolID, "still_allocated", len(lp.addrs))
	}
	return nil
}

// Gateway returns the cluster's gateway address of a pool.
func (a *IPAM) Gateway(subnet netip.Prefix) (netip.Addr, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.viewLocked(subnet.Masked().String())
	if v == nil {
		return netip.Addr{}, false
	}
	return v.gateway, true
}

// CanRemove says whether an operator may remove node (meshctl rmpeer):
// never this node, never a node that is up. Removal hands the node's blocks
// to an heir; it is only safe when the node is really gone.
func (a *IPAM) CanRemove(node string) error {
	if node == a.self {
		return fmt.Errorf("cannot remove %s from itself: run meshctl rmpeer %s on another node", node, node)
	}
	snap := a.store.Snapshot()
	if m, ok := snap.Members[node]; ok && m.State.Up() {
		return fmt.Errorf("node %s is %s: meshctl rmpeer only removes dead nodes; stop meshnetd on %s first, or wait until the cluster declares it dead", node, m.State, node)
	}
	return nil
}

// Pools returns the IDs of the pools this node has (created or joined, and
// those released by Docker that still hold addresses).
func (a *IPAM) Pools() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.pools))
	for id := range a.pools {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
