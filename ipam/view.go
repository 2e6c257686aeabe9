package ipam

import (
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/meshnet/meshnet/gossip"
)

// BlockState is where a block stands in its life (diagram in doc.go).
type BlockState string

// Block states.
const (
	// StateOwned: the owner's claim has the highest generation.
	StateOwned BlockState = "owned"
	// StateGranted: the owner handed the block on; the grantee has not
	// claimed it yet. Nobody allocates in it meanwhile.
	StateGranted BlockState = "granted"
	// StateOrphaned: the block's last holder was removed (meshctl rmpeer);
	// the heir claims it.
	StateOrphaned BlockState = "orphaned"
	// StateUnknown: no record of the block has reached this node (it
	// restarted alone, say). Nobody takes it on that ground.
	StateUnknown BlockState = "unknown"
)

// blockRec is one decoded block record.
type blockRec struct {
	owner   string
	version uint64
	id      string
	prefix  netip.Prefix
	v       BlockRecord
	held    []netip.Addr
}

type memberInfo struct {
	rec     PoolRecord
	version uint64
	up      bool
}

// blockInfo is what every node computes for one block from the records.
type blockInfo struct {
	owner     string
	state     BlockState
	gen       uint64    // generation of the winning stance
	maxGen    uint64    // highest live generation (an heir claims maxGen+1)
	grant     *blockRec // the winning grant while StateGranted
	contested bool      // rival claims: same generation, or another lineage
	frozen    bool      // a rival claim is not conceded yet: the owner waits
	mine      *blockRec // the local node's stance, if any
}

type requestInfo struct {
	from    string
	version uint64
	r       RequestRecord
}

// poolView is the cluster's state of one pool as the local node sees it
// in one snapshot. It is a pure function of the snapshot, so every node
// holding the same records computes the same owners, winner and conflicts.
type poolView struct {
	self      string
	subnet    netip.Prefix
	key       string
	origin    Origin   // the winning lineage
	lineages  []Origin // all lineages seen, best first
	settings  PoolRecord
	gateway   netip.Addr
	geo       geometry
	members   map[string]memberInfo // pool records in the winning lineage
	rivals    map[string]PoolRecord // pool records in other lineages
	blocks    []blockInfo
	recs      []*blockRec             // visible block records of the pool
	gone      []*blockRec             // block records a removal hides
	hidden    map[*blockRec]bool      // the records in gone
	byID      map[string]*blockRec    // owner + "\x00" + id
	heldBy    map[netip.Addr][]string // Held lists and endpoint records
	declared  map[netip.Addr][]string // Held lists only: what conflicts are made of
	othersIn  map[int]int             // addresses in heldBy by another node, per block
	conflicts []Conflict              // addresses declared by two nodes or more
	heir      string
	requests  []requestInfo     // addressed to the local node
	removed   map[string]uint64 // node -> version up to which its records are hidden
	removedAt map[string]uint64 // node -> version of its latest removal record
}

type endpointAddr struct {
	owner string
	addr  netip.Addr
}

// decoder caches decoded records by key and version: a snapshot differs
// from the last one in a record or two, and decoding every record on every
// change would cost more than everything else together. Decoded values
// are shared and never modified.
type decoder struct{ m map[gossip.Key]decoded }

type decoded struct {
	version uint64
	val     any
}

func newDecoder() *decoder { return &decoder{m: make(map[gossip.Key]decoded)} }

func (d *decoder) get(r gossip.Record, parse func(gossip.Record) any) any {
	if d == nil {
		return parse(r)
	}
	if e, ok := d.m[r.Key]; ok && e.version == r.Version {
		return e.val
	}
	v := parse(r)
	d.m[r.Key] = decoded{version: r.Version, val: v}
	return v
}

// prune forgets records the snapshot no longer has, once the cache has
// grown well past it.
func (d *decoder) prune(all []gossip.Record) {
	if len(d.m) < 1024 || len(d.m) < 2*len(all) {
		return
	}
	keep := make(map[gossip.Key]decoded, len(all))
	for _, r := range all {
		if e, ok := d.m[r.Key]; ok && e.version == r.Version {
			keep[r.Key] = e
		}
	}
	d.m = keep
}

// The parsers below wrap the record layer's (gossip/decode.go) for the
// decoder cache; a record that does not parse is cached as nil.

func parsePool(r gossip.Record) any {
	p, err := gossip.ParsePool(r)
	if err != nil {
		return (*PoolRecord)(nil)
	}
	return &p
}

func parseRequest(r gossip.Record) any {
	rr, err := gossip.ParseRequest(r)
	if err != nil {
		return (*RequestRecord)(nil)
	}
	return &rr
}

// endpointEntry is an endpoint record's addresses, by pool: its subnet's,
// and on a dual-stack network its IPv6 subnet's.
type endpointEntry struct {
	subnet  string
	addr    endpointAddr
	subnet6 string // "" on a single-family network
	addr6   endpointAddr
}

func parseEndpoint(r gossip.Record) any {
	ep, err := gossip.ParseEndpoint(r)
	if err != nil {
		return (*endpointEntry)(nil)
	}
	e := &endpointEntry{subnet: ep.Info.Subnet, addr: endpointAddr{owner: r.Owner, addr: ep.Addr}}
	if ep.Addr6.IsValid() {
		e.subnet6, e.addr6 = ep.Info.Subnet6, endpointAddr{owner: r.Owner, addr: ep.Addr6}
	}
	return e
}

func parseBlock(r gossip.Record) any {
	b, err := gossip.ParseBlock(r)
	if err != nil {
		return (*blockRec)(nil)
	}
	return &blockRec{owner: b.Owner, version: b.Version, id: b.ID, prefix: b.Prefix, v: b.Value, held: b.Held}
}

// endpointIndex groups every endpoint record's address by subnet string.
func endpointIndex(c *cluster, d *decoder) map[string][]endpointAddr {
	out := make(map[string][]endpointAddr)
	for _, r := range c.visible[gossip.KindEndpoint] {
		if e, _ := d.get(r, parseEndpoint).(*endpointEntry); e != nil {
			out[e.subnet] = append(out[e.subnet], e.addr)
			if e.subnet6 != "" {
				out[e.subnet6] = append(out[e.subnet6], e.addr6)
			}
		}
	}
	return out
}

// grantOrphaned reports a grant written before its grantee was last
// removed: the grantee will never claim it (a node that comes back claims
// only grants made after its removal).
func (v *poolView) grantOrphaned(g *blockRec) bool {
	at, ok := v.removedAt[g.v.To]
	return ok && g.version < at
}

func removedFor(removed map[string]uint64, node string, version uint64) bool {
	upTo, ok := removed[node]
	return ok && version <= upTo
}

// buildView computes a pool's view, or nil when no node has a usable
// record of the pool.
func buildView(c *cluster, subnet netip.Prefix, eps []endpointAddr, d *decoder) *poolView {
	key := subnet.String()
	v := &poolView{
		self:      c.self,
		subnet:    subnet,
		key:       key,
		members:   make(map[string]memberInfo),
		rivals:    make(map[string]PoolRecord),
		byID:      make(map[string]*blockRec),
		heldBy:    make(map[netip.Addr][]string),
		declared:  make(map[netip.Addr][]string),
		othersIn:  make(map[int]int),
		removed:   c.removed,
		removedAt: c.removedAt,
		hidden:    make(map[*blockRec]bool),
	}

	type poolRec struct {
		owner   string
		version uint64
		rec     PoolRecord
	}
	var pools []poolRec
	for _, r := range c.visible[KindPool] {
		if r.ID != key {
			continue
		}
		if p, _ := d.get(r, parsePool).(*PoolRecord); p != nil {
			pools = append(pools, poolRec{r.Owner, r.Version, *p})
		}
	}
	if len(pools) == 0 {
		return nil
	}
	best := pools[0].rec.Origin
	for _, p := range pools {
		if !slices.Contains(v.lineages, p.rec.Origin) {
			v.lineages = append(v.lineages, p.rec.Origin)
		}
		if better(p.rec.Origin, best) {
			best = p.rec.Origin
		}
	}
	sort.Slice(v.lineages, func(i, j int) bool { return better(v.lineages[i], v.lineages[j]) })
	v.origin = best

	// Settings come from the creator's record; every member copies them,
	// so any member's copy stands in when the creator was removed.
	var settings *PoolRecord
	for i := range pools {
		p := &pools[i]
		if p.rec.Origin != best {
			v.rivals[p.owner] = p.rec
			continue
		}
		v.members[p.owner] = memberInfo{rec: p.rec, version: p.version, up: c.up(p.owner)}
		if settings == nil || p.owner == best.Node {
			settings = &p.rec
		}
	}
	v.settings = *settings
	geo, err := newGeometry(subnet, settings.BlockBits)
	if err != nil {
		return nil
	}
	v.geo = geo
	gw, err := netip.ParseAddr(settings.Gateway)
	if err != nil || !subnet.Contains(gw) {
		gw = firstHost(subnet)
	}
	v.gateway = gw

	// Block records of this pool, of every lineage.
	for _, r := range c.visible[gossip.KindBlock] {
		if !strings.HasPrefix(r.ID, key+" ") {
			continue
		}
		rec, _ := d.get(r, parseBlock).(*blockRec)
		if rec == nil || rec.v.Pool != key {
			continue
		}
		v.recs = append(v.recs, rec)
		v.byID[r.Owner+"\x00"+r.ID] = rec
	}
	for _, r := range c.hidden {
		if !strings.HasPrefix(r.ID, key+" ") {
			continue
		}
		if rec, _ := d.get(r, parseBlock).(*blockRec); rec != nil && rec.v.Pool == key {
			v.gone = append(v.gone, rec)
			v.hidden[rec] = true
		}
	}

	v.judgeBlocks()
	v.applyRivals()
	v.collectHeld(eps)
	v.findHeir(c)
	for _, r := range c.visible[KindRequest] {
		if r.ID != key {
			continue
		}
		rr, _ := d.get(r, parseRequest).(*RequestRecord)
		if rr == nil || rr.Donor != v.self || rr.Origin != best {
			continue
		}
		if _, ok := v.members[r.Owner]; !ok {
			continue
		}
		v.requests = append(v.requests, requestInfo{from: r.Owner, version: r.Version, r: *rr})
	}
	return v
}

// judgeBlocks names each block's owner in the winning lineage. A node's
// stance on a block is its most specific record covering it; the highest
// generation among live (unconceded) stances wins; at equal generation the
// smallest node name wins and the others must concede.
func (v *poolView) judgeBlocks() {
	g := v.geo
	byPrefix := make(map[netip.Prefix][]*blockRec)
	var levels []int
	for _, r := range slices.Concat(v.recs, v.gone) {
		if r.v.Origin != v.origin || r.prefix.Bits() > g.blockLen {
			continue
		}
		if len(byPrefix[r.prefix]) == 0 && !slices.Contains(levels, r.prefix.Bits()) {
			levels = append(levels, r.prefix.Bits())
		}
		byPrefix[r.prefix] = append(byPrefix[r.prefix], r)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(levels))) // most specific first

	v.blocks = make([]blockInfo, g.nblocks)
	stances := make([]*blockRec, 0, 8)
	for i := range v.blocks {
		stances = stances[:0]
		start := numAddr(g.blockStart(i), g.is4)
		for _, l := range levels {
			for _, r := range byPrefix[netip.PrefixFrom(start, l).Masked()] {
				if !slices.ContainsFunc(stances, func(s *blockRec) bool { return s.owner == r.owner }) {
					stances = append(stances, r)
				}
			}
		}
		v.blocks[i] = v.judge(stances)
	}
}

func (v *poolView) judge(stances []*blockRec) blockInfo {
	var b blockInfo
	for _, s := range stances {
		if s.owner == v.self && !v.hidden[s] {
			b.mine = s
		}
		if !s.v.Conceded && s.v.Gen > b.maxGen {
			b.maxGen = s.v.Gen
		}
	}
	var names []string
	removedHolder := false
	for _, s := range stances {
		if s.v.Conceded || s.v.Gen != b.maxGen {
			continue
		}
		name := s.owner
		switch {
		case v.hidden[s]:
			removedHolder = true // its holder was removed
			continue
		case isGrant(s.v) && v.grantOrphaned(s):
			removedHolder = true // handed to a node removed since
			continue
		case isGrant(s.v):
			name = s.v.To
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		// Orphaned only on evidence that its holder was removed: a node
		// that never heard of a block (one restarted alone, say) must
		// not take it.
		b.state = StateUnknown
		if removedHolder {
			b.state = StateOrphaned
		}
		return b
	}
	slices.Sort(names)
	b.owner, b.gen, b.contested = names[0], b.maxGen, len(names) > 1
	b.state = StateGranted
	for _, s := range stances {
		if s.v.Conceded || s.v.Gen != b.maxGen || v.hidden[s] {
			continue
		}
		switch {
		case !isGrant(s.v) && s.owner == b.owner:
			b.state = StateOwned
		case !isGrant(s.v):
			b.frozen = true // a rival's claim, not conceded yet
		case s.v.To == b.owner && b.grant == nil && !v.grantOrphaned(s):
			b.grant = s
		}
	}
	return b
}

// inert reports a record of a lineage its owner has left behind with
// nothing in it: released and holding no address.
func (v *poolView) inert(r *blockRec) bool {
	p, ok := v.rivals[r.owner]
	if !ok {
		return false
	}
	return p.Origin == r.v.Origin && p.Released && p.Allocated == 0
}

// applyRivals freezes blocks that a node's unconceded claim of a losing
// lineage overlaps, and blocks a conceded record says hold addresses whose
// per-block list has not arrived yet.
func (v *poolView) applyRivals() {
	freeze := func(p netip.Prefix, by string) {
		first, last, ok := v.geo.blocksIn(p)
		if !ok {
			return
		}
		for i := first; i <= last; i++ {
			v.blocks[i].contested = v.blocks[i].contested || v.blocks[i].owner != by
			if v.blocks[i].owner != by {
				v.blocks[i].frozen = true
			}
		}
	}
	for _, r := range v.recs {
		if r.v.Conceded {
			for _, hp := range r.v.HeldIn {
				p, err := netip.ParsePrefix(hp)
				if err != nil {
					freeze(r.prefix, r.owner)
					continue
				}
				d, ok := v.byID[r.owner+"\x00"+blockID(v.key, p.String(), r.v.Origin)]
				if !ok || (!d.v.Conceded && r.v.Origin != v.origin) {
					freeze(p, r.owner)
				}
			}
			continue
		}
		if r.v.Origin == v.origin || isGrant(r.v) || v.inert(r) {
			continue
		}
		freeze(r.prefix, r.owner)
	}
}

func addHolder(m map[netip.Addr][]string, a netip.Addr, node string) {
	if !slices.Contains(m[a], node) {
		m[a] = append(m[a], node)
	}
}

// collectHeld gathers every address some node says it holds: Held lists
// of block records and the addresses of endpoint records (of any node,
// live or dead).
func (v *poolView) collectHeld(eps []endpointAddr) {
	for _, r := range v.recs {
		for _, a := range r.held {
			addHolder(v.declared, a, r.owner)
			addHolder(v.heldBy, a, r.owner)
		}
	}
	for _, e := range eps {
		if v.subnet.Contains(e.addr) {
			addHolder(v.heldBy, e.addr, e.owner)
		}
	}
	for a, nodes := range v.heldBy {
		if i, ok := v.geo.blockOf(a); ok && slices.ContainsFunc(nodes, func(n string) bool { return n != v.self }) {
			v.othersIn[i]++
		}
	}
	for a, nodes := range v.declared {
		if len(nodes) > 1 {
			ns := slices.Clone(nodes)
			slices.Sort(ns)
			v.conflicts = append(v.conflicts, Conflict{Subnet: v.key, Addr: a.String(), Nodes: ns})
		}
	}
	sortConflicts(v.conflicts)
}

// findHeir picks who claims orphaned blocks: the node that removed a
// holder (first removal first), if it is an active member, else the
// active member with the smallest name, else any member. Only records
// decide it, so every node that has them picks the same heir.
func (v *poolView) findHeir(c *cluster) {
	active := func(n string) bool {
		m, ok := v.members[n]
		return ok && !m.rec.Released
	}
	rms := slices.Clone(c.visible[gossip.KindRemoval])
	sort.SliceStable(rms, func(i, j int) bool {
		if rms[i].Version != rms[j].Version {
			return rms[i].Version < rms[j].Version
		}
		return rms[i].Owner < rms[j].Owner
	})
	for _, r := range rms {
		if active(r.Owner) {
			v.heir = r.Owner
			return
		}
	}
	names := make([]string, 0, len(v.members))
	for n := range v.members {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if active(n) {
			v.heir = n
			return
		}
	}
	if len(names) > 0 {
		v.heir = names[0]
	}
}

// heldByOthers reports whether anyone but self says it holds a.
func (v *poolView) heldByOthers(a netip.Addr) []string {
	var out []string
	for _, n := range v.heldBy[a] {
		if n != v.self {
			out = append(out, n)
		}
	}
	return out
}

// active reports whether a lineage member still uses the pool.
func (m memberInfo) active() bool { return !m.rec.Released || m.rec.Allocated > 0 }

// idle reports that nobody uses the pool any more: every member released
// it and holds nothing, and no rival lineage is in use.
func (v *poolView) idle() bool {
	for _, m := range v.members {
		if m.active() {
			return false
		}
	}
	for _, p := range v.rivals {
		if !p.Released || p.Allocated > 0 {
			return false
		}
	}
	return true
}

func sortConflicts(cs []Conflict) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Subnet != cs[j].Subnet {
			return cs[i].Subnet < cs[j].Subnet
		}
		ai, _ := netip.ParseAddr(cs[i].Addr)
		aj, _ := netip.ParseAddr(cs[j].Addr)
		return ai.Less(aj)
	})
}
