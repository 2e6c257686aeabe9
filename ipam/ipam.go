package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/atomicfile"
	"github.com/meshnet/meshnet/internal/clock"
)

// Config configures an IPAM. Zero values take the defaults of DefaultConfig.
type Config struct {
	// Store is the replicated state. Its Persist hook must be wired, and
	// the node's own records loaded (Store.Load) before New: what a node
	// owns and what it handed away is only in those records.
	Store *gossip.Store
	// Dir holds the local allocation table (StateFile).
	Dir string
	Log *slog.Logger
	// BlockBits is the number of host bits in a block of a pool this node
	// creates (6 = 64 addresses); 0 chooses per subnet (doc.go). A pool's
	// block size is fixed by its creator; --ipam-opt block-prefix=N
	// overrides it for one pool.
	BlockBits int
	// MinBlockBits is the smallest block the automatic choice makes
	// (4 = 16 addresses, a /28 in IPv4).
	MinBlockBits int
	// RequestTimeout is how long a request for blocks waits for one donor
	// before asking another.
	RequestTimeout time.Duration
	// HandoffWait bounds how long RequestAddress waits for a block from
	// another node (the caller's context may bound it more).
	HandoffWait time.Duration
	// FullAfter is how long a pool must look full before RequestAddress
	// says so: other nodes' spare counts are gossip, and right after a
	// rival creation of the pool gives way they lag the blocks it freed.
	FullAfter time.Duration
	// PublishInterval is how often the count of allocated addresses in the
	// node's pool record is refreshed (it is only a hint for status).
	PublishInterval time.Duration
	// ResyncInterval is how often Run re-checks without a store change
	// (request timeouts, lazy counts).
	ResyncInterval time.Duration
	// Clock tells the time and makes the timers of RequestAddress and Run
	// (tests pass a clock.Fake and advance it instead of sleeping).
	Clock clock.Clock
}

// DefaultConfig returns the defaults, without Store and Dir.
func DefaultConfig() Config {
	return Config{
		BlockBits:       0,                // per subnet, see chooseBlockBits
		MinBlockBits:    minBlockBits,     // /28: 13 usable addresses at worst
		RequestTimeout:  5 * time.Second,  // a live donor answers within a gossip round or two
		HandoffWait:     20 * time.Second, // under Docker's 30 s plugin call timeout
		FullAfter:       3 * time.Second,  // a few gossip rounds
		PublishInterval: 10 * time.Second, // status hint only
		ResyncInterval:  time.Second,
		Clock:           clock.Real{},
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MinBlockBits == 0 {
		c.MinBlockBits = d.MinBlockBits
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.HandoffWait == 0 {
		c.HandoffWait = d.HandoffWait
	}
	if c.FullAfter == 0 {
		c.FullAfter = d.FullAfter
	}
	if c.PublishInterval == 0 {
		c.PublishInterval = d.PublishInterval
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = d.ResyncInterval
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// IPAM hands out addresses of meshnet pools so that no two hosts ever hold
// the same one. It is safe for concurrent use.
type IPAM struct {
	cfg       Config
	store     *gossip.Store
	self      string
	log       *slog.Logger
	path      string
	cachePath string
	// writeFile persists the allocation table (tests replace it to
	// simulate a crash in the middle of a write).
	writeFile func(path string, data []byte) error

	mu       sync.Mutex
	pools    map[string]*localPool // by subnet string (= pool ID)
	cache    viewCache
	cacheFP  string // fingerprint of the cluster cache last written
	dec      *decoder
	reported map[string]bool // conflicts already logged
	joined   *JoinInfo       // nil until the node heard from its cluster (joined.go)
}

type viewCache struct {
	persisted bool // the cluster cache was checked against this snapshot
	snap      *gossip.Snapshot
	all       []gossip.Record
	cluster   *cluster
	views     map[string]*poolView
	eps       map[string][]endpointAddr
}

// localPool is one pool as this node uses it.
type localPool struct {
	subnet   netip.Prefix
	key      string
	refs     int
	released bool
	addrs    map[netip.Addr]struct{}

	// Volatile helpers.
	takenAt    map[netip.Addr]time.Time // when this process allocated an address (ReleaseStale)
	countBits  int                      // block size the counts were made for
	counts     map[int]int              // this node's allocations per block
	hintBlock  int
	hintOff    uint64
	req        requestState
	waiters    int
	wantBlock  netip.Prefix // a waiter needs this block for a preferred address
	published  time.Time
	noView     bool // warned that no record of the pool is visible
	noViewWait bool // warned that it waits to hear from the cluster to re-create it
}

// requestState follows this node's outstanding request for blocks.
type requestState struct {
	seq    uint64
	donor  string
	sentAt time.Time
	owned  int                  // blocks owned when the request was sent
	judged bool                 // its outcome was taken into account
	tried  map[string]time.Time // donors that gave nothing, and when: not asked again for RequestTimeout
}

// New returns an IPAM over cfg.Store, loading the allocation table from
// cfg.Dir. A damaged table is an error that says what to do.
func New(cfg Config) (*IPAM, error) {
	cfg = cfg.withDefaults()
	if cfg.Store == nil {
		return nil, errors.New("ipam: Config.Store is required")
	}
	if cfg.Dir == "" {
		return nil, errors.New("ipam: Config.Dir is required")
	}
	if cfg.BlockBits != 0 && cfg.BlockBits < 2 {
		return nil, fmt.Errorf("ipam: BlockBits %d is below the minimum of 2", cfg.BlockBits)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam: create state directory: %w", err)
	}
	a := &IPAM{
		cfg:       cfg,
		store:     cfg.Store,
		self:      cfg.Store.Self(),
		log:       cfg.Log,
		path:      filepath.Join(cfg.Dir, StateFile),
		cachePath: filepath.Join(cfg.Dir, ClusterCacheFile),
		pools:     make(map[string]*localPool),
		dec:       newDecoder(),
		reported:  make(map[string]bool),
	}
	a.writeFile = func(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }
	st, err := loadState(a.path)
	if err != nil {
		return nil, err
	}
	if err := a.loadClusterCache(); err != nil {
		return nil, err
	}
	if st.Node != "" && st.Node != a.self {
		return nil, fmt.Errorf("ipam state file %s belongs to node %q, not %q: use the old --node-name, or a fresh --state-dir", a.path, st.Node, a.self)
	}
	for key, fp := range st.Pools {
		subnet, _ := netip.ParsePrefix(key)
		lp := &localPool{subnet: subnet, key: key, refs: fp.Refs, released: fp.Released, addrs: make(map[netip.Addr]struct{})}
		for _, s := range fp.Addrs {
			ad, _ := netip.ParseAddr(s)
			lp.addrs[ad] = struct{}{}
		}
		a.pools[key] = lp
	}
	return a, nil
}

// Run answers other nodes (handoff requests), claims blocks handed to this
// node, concedes what it lost, and reports conflicts, on every store change
// and every ResyncInterval, until ctx ends.
func (a *IPAM) Run(ctx context.Context) error {
	ch, cancel := a.store.Subscribe()
	defer cancel()
	t := a.cfg.Clock.NewTicker(a.cfg.ResyncInterval)
	defer t.Stop()
	for {
		a.mu.Lock()
		a.reconcileLocked()
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		case <-t.C():
		}
	}
}

func (a *IPAM) persistLocked() error {
	st := &fileState{Node: a.self, Pools: make(map[string]*filePool, len(a.pools))}
	for key, lp := range a.pools {
		addrs := make([]netip.Addr, 0, len(lp.addrs))
		for ad := range lp.addrs {
			addrs = append(addrs, ad)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		fp := &filePool{Refs: lp.refs, Released: lp.released, Addrs: make([]string, len(addrs))}
		for i, ad := range addrs {
			fp.Addrs[i] = ad.String()
		}
		st.Pools[key] = fp
	}
	data, err := encodeState(st)
	if err != nil {
		return err
	}
	if err := a.writeFile(a.path, data); err != nil {
		// Nothing changed in memory either: the caller undoes its change.
		return fmt.Errorf("persist ipam state: %w (nothing was allocated or released: make %s writable with free space, then retry)", err, filepath.Dir(a.path))
	}
	return nil
}

// clusterLocked returns the cluster state for the store's current
// snapshot, rebuilt when the snapshot changed.
func (a *IPAM) clusterLocked() *cluster {
	snap := a.store.Snapshot()
	if snap != a.cache.snap || a.cache.cluster == nil {
		all := a.store.All()
		a.cache = viewCache{snap: snap, all: all, cluster: newCluster(snap, all), views: make(map[string]*poolView)}
		a.dec.prune(all)
	}
	return a.cache.cluster
}

// viewLocked returns the pool's view for the store's current snapshot.
func (a *IPAM) viewLocked(key string) *poolView {
	c := a.clusterLocked()
	if v, ok := a.cache.views[key]; ok {
		return v
	}
	subnet, err := netip.ParsePrefix(key)
	if err != nil {
		return nil
	}
	if a.cache.eps == nil {
		a.cache.eps = endpointIndex(c, a.dec)
	}
	v := buildView(c, subnet, a.cache.eps[key], a.dec)
	a.cache.views[key] = v
	return v
}

// nextVersion is a creation stamp: above every version seen, at least the
// wall clock, so that "first created" compares across nodes.
func (a *IPAM) nextVersion() uint64 {
	return max(a.store.Clock()+1, uint64(a.cfg.Clock.Now().UnixNano()))
}

// ---- pools -------------------------------------------------------------

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

// ownPoolRecord reads this node's pool record (also when a removal hides
// it from snapshots).
func (a *IPAM) ownPoolRecord(key string) (PoolRecord, bool) {
	r, ok := a.ownRecord(KindPool, key)
	if !ok {
		return PoolRecord{}, false
	}
	p, _ := a.dec.get(r, parsePool).(*PoolRecord)
	if p == nil {
		return PoolRecord{}, false
	}
	return *p, true
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

// Allocations returns the addresses this node holds in a pool.
func (a *IPAM) Allocations(poolID string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	lp, ok := a.pools[poolID]
	if !ok {
		return nil
	}
	out := make([]netip.Addr, 0, len(lp.addrs))
	for ad := range lp.addrs {
		out = append(out, ad)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
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

// ---- addresses ---------------------------------------------------------

// RequestAddress allocates an address of the pool on this node: the
// gateway (gateway true), a preferred address, or any free one. When the
// node owns no free address it claims the blocks handed to it, else asks
// another node for a block and waits, bounded by ctx and
// Config.HandoffWait; it does nothing else of the pool's upkeep, which is
// Run's (Run must be running for handoffs to complete). The result
// carries the subnet's prefix length.
func (a *IPAM) RequestAddress(ctx context.Context, poolID string, preferred netip.Addr, gateway bool) (netip.Prefix, error) {
	preferred = preferred.Unmap()
	a.mu.Lock()
	lp, ok := a.pools[poolID]
	if !ok || lp.released {
		a.mu.Unlock()
		return netip.Prefix{}, &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("pool %s is not requested on this node: create the network first", poolID)}
	}
	bits := lp.subnet.Bits()
	if gateway {
		gw, err := a.gatewayLocked(lp, preferred)
		a.mu.Unlock()
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(gw, bits), nil
	}
	a.mu.Unlock()

	started := a.cfg.Clock.Now()
	deadline := a.cfg.Clock.NewTimer(a.cfg.HandoffWait)
	defer deadline.Stop()
	ch, cancel := a.store.Subscribe()
	defer cancel()
	tick := a.cfg.Clock.NewTicker(max(a.cfg.RequestTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	waiting := false
	defer func() {
		if waiting {
			a.mu.Lock()
			lp.waiters--
			if lp.waiters == 0 {
				lp.wantBlock = netip.Prefix{}
			}
			a.mu.Unlock()
		}
	}()
	for {
		a.mu.Lock()
		if a.pools[poolID] != lp || lp.released {
			a.mu.Unlock()
			return netip.Prefix{}, &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("pool %s was released while waiting", poolID)}
		}
		// Fast path: any free address in what the node owns. Otherwise
		// claim the blocks handed to it, then try again or ask for one.
		// Everything else this node owes the cluster (answering others,
		// conceding, inheriting) is Run's: each change it makes wakes
		// this loop through the store.
		a.persistCacheLocked()
		if v := a.viewLocked(lp.key); v != nil && !preferred.IsValid() {
			if ad, ok := a.findFreeLocked(lp, v); ok {
				err := a.takeLocked(lp, v, ad)
				a.mu.Unlock()
				if err != nil {
					return netip.Prefix{}, err
				}
				return netip.PrefixFrom(ad, bits), nil
			}
		}
		if a.viewOrRecreateLocked(lp) != nil {
			a.claimGrantsLocked(lp)
		}
		ad, wait, err := a.allocateLocked(lp, preferred)
		if err == nil && !wait {
			a.mu.Unlock()
			return netip.PrefixFrom(ad, bits), nil
		}
		if a.joined == nil && (err == nil || errors.Is(err, ErrExhausted)) {
			// No free address in what it owns, and nobody to ask yet:
			// say so now rather than after HandoffWait.
			a.mu.Unlock()
			return netip.Prefix{}, a.notJoinedError(fmt.Sprintf("pool %s: no free address in the blocks this node owns", poolID))
		}
		if err == nil && !waiting {
			waiting = true
			lp.waiters++
		}
		a.mu.Unlock()
		if err != nil && !(errors.Is(err, ErrExhausted) && a.cfg.Clock.Now().Sub(started) < a.cfg.FullAfter) {
			return netip.Prefix{}, err
		}
		select {
		case <-ch:
		case <-tick.C():
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("request address in %s: waiting for a block from another node: %w", poolID, ctx.Err())
		case <-deadline.C():
			return netip.Prefix{}, &Error{Kind: ErrHandoffTimeout, Msg: fmt.Sprintf(
				"pool %s: this node owns no free address and no other node handed it a block within %s; check meshctl status for down nodes and for blocks two creations of the pool still claim, then retry", poolID, a.cfg.HandoffWait)}
		}
	}
}

// allocateLocked tries once. wait is set when a block was requested from
// another node and the caller should wait for it.
func (a *IPAM) allocateLocked(lp *localPool, preferred netip.Addr) (netip.Addr, bool, error) {
	v := a.viewLocked(lp.key)
	if v == nil {
		return netip.Addr{}, false, &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("pool %s has no cluster record yet: retry once this node has joined the cluster", lp.key)}
	}
	if preferred.IsValid() {
		return a.allocatePreferredLocked(lp, v, preferred)
	}
	if ad, ok := a.findFreeLocked(lp, v); ok {
		return ad, false, a.takeLocked(lp, v, ad)
	}
	if err := a.ensureRequestLocked(lp, v, netip.Prefix{}); err != nil {
		return netip.Addr{}, false, err
	}
	return netip.Addr{}, true, nil
}

func (a *IPAM) allocatePreferredLocked(lp *localPool, v *poolView, ad netip.Addr) (netip.Addr, bool, error) {
	if !lp.subnet.Contains(ad) {
		return ad, false, &Error{Kind: ErrNotInPool, Msg: fmt.Sprintf("address %s is outside pool %s", ad, lp.key)}
	}
	if v.geo.reserved(ad, v.gateway) {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is reserved in pool %s (subnet, broadcast or gateway address %s)", ad, lp.key, v.gateway)}
	}
	if _, ok := lp.addrs[ad]; ok {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is already in use on this host (%s)", ad, a.self)}
	}
	if holders := v.heldBy[ad]; len(holders) > 0 {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in use on host %s: choose another address", ad, strings.Join(holders, ", "))}
	}
	i, _ := v.geo.blockOf(ad)
	b := &v.blocks[i]
	block := v.geo.blockPrefix(i)
	switch {
	case b.owner == a.self && b.state == StateOwned && !b.frozen:
		return ad, false, a.takeLocked(lp, v, ad)
	case b.frozen || b.contested:
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in block %s, which two nodes claim (see meshctl status): choose another address", ad, block)}
	case b.owner == "":
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in block %s, whose owner was removed; %s will inherit it: retry shortly, or choose another address", ad, block, v.heir)}
	case b.owner == a.self: // granted to us, not claimed yet: reconcile claims it
		return ad, true, nil
	case b.state == StateGranted:
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in block %s, which is being handed to host %s: choose another address", ad, block, b.owner)}
	}
	m, ok := v.members[b.owner]
	if !ok || !m.up {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf("address %s is in block %s, owned by host %s, which is down: choose another address", ad, block, b.owner)}
	}
	cur, _ := a.ownRequest(lp.key)
	if lp.wantBlock == block && cur.Block == block.String() && cur.Donor == b.owner && cur.Seq == lp.req.seq && m.rec.Answered[a.self] >= cur.Seq {
		return ad, false, &Error{Kind: ErrAddressInUse, Msg: fmt.Sprintf(
			"address %s is in block %s, owned by host %s, which has addresses in use there: choose an address in a block this host owns (meshctl status), or leave out --ip", ad, block, b.owner)}
	}
	lp.wantBlock = block
	if err := a.ensureRequestLocked(lp, v, block); err != nil {
		return ad, false, err
	}
	return ad, true, nil
}

// takeLocked records an allocation and persists it before it is returned.
func (a *IPAM) takeLocked(lp *localPool, v *poolView, ad netip.Addr) error {
	lp.addrs[ad] = struct{}{}
	if err := a.persistLocked(); err != nil {
		delete(lp.addrs, ad)
		return fmt.Errorf("allocate %s: %w", ad, err)
	}
	if lp.takenAt == nil {
		lp.takenAt = make(map[netip.Addr]time.Time)
	}
	lp.takenAt[ad] = a.cfg.Clock.Now()
	if i, ok := v.geo.blockOf(ad); ok {
		a.countsLocked(lp, v)[i]++
	}
	return nil
}

func (a *IPAM) countsLocked(lp *localPool, v *poolView) map[int]int {
	if lp.counts == nil || lp.countBits != v.geo.blockBits {
		lp.counts = make(map[int]int)
		lp.countBits = v.geo.blockBits
		for ad := range lp.addrs {
			if i, ok := v.geo.blockOf(ad); ok {
				lp.counts[i]++
			}
		}
	}
	return lp.counts
}

// usable reports whether this node may allocate in block i.
func (a *IPAM) usable(v *poolView, i int) bool {
	b := &v.blocks[i]
	return b.owner == a.self && b.state == StateOwned && !b.frozen
}

// findFreeLocked finds a free address in the blocks this node owns,
// filling one block before starting the next.
func (a *IPAM) findFreeLocked(lp *localPool, v *poolView) (netip.Addr, bool) {
	counts := a.countsLocked(lp, v)
	n := v.geo.nblocks
	start := lp.hintBlock
	if start >= n {
		start = 0
	}
	for k := 0; k < n; k++ {
		i := (start + k) % n
		if !a.usable(v, i) {
			continue
		}
		if v.geo.blockBits < 63 && uint64(counts[i]) >= uint64(1)<<v.geo.blockBits {
			continue
		}
		if ad, ok := a.freeInBlock(lp, v, i); ok {
			lp.hintBlock = i
			return ad, true
		}
	}
	return netip.Addr{}, false
}

// maxProbes bounds the search in one (IPv6-sized) block.
const maxProbes = 1 << 16

func (a *IPAM) freeInBlock(lp *localPool, v *poolView, i int) (netip.Addr, bool) {
	mask := ones(v.geo.blockBits)
	var from uint64
	if i == lp.hintBlock {
		from = lp.hintOff
	}
	limit := uint64(maxProbes)
	if v.geo.blockBits < 16 {
		limit = uint64(1) << v.geo.blockBits
	}
	for p := uint64(0); p < limit; p++ {
		off := u64(from + p)
		off = u128{off.hi & mask.hi, off.lo & mask.lo}
		ad := v.geo.addrAt(i, off)
		if v.geo.reserved(ad, v.gateway) {
			continue
		}
		if _, ok := lp.addrs[ad]; ok {
			continue
		}
		if len(v.heldBy[ad]) > 0 {
			continue
		}
		lp.hintOff = off.lo + 1
		return ad, true
	}
	return netip.Addr{}, false
}

// gatewayLocked answers a gateway request: the cluster's gateway, or a new
// one when this node alone uses the pool (it re-creates the pool then).
func (a *IPAM) gatewayLocked(lp *localPool, preferred netip.Addr) (netip.Addr, error) {
	v := a.viewLocked(lp.key)
	if v == nil {
		return netip.Addr{}, &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("pool %s has no cluster record yet: retry once this node has joined the cluster", lp.key)}
	}
	if !preferred.IsValid() || preferred == v.gateway {
		return v.gateway, nil
	}
	if !lp.subnet.Contains(preferred) || preferred == lp.subnet.Addr() || (v.geo.reserved(preferred, netip.Addr{}) && preferred != v.gateway) {
		return netip.Addr{}, &Error{Kind: ErrNotInPool, Msg: fmt.Sprintf("gateway %s is not a host address of %s", preferred, lp.key)}
	}
	if a.aloneInPoolLocked(lp, v) && len(v.heldBy[preferred]) == 0 {
		// Only this node uses the pool (typically: it was just created
		// and Docker now asks for --gateway): start a new lineage with
		// that gateway.
		if err := a.createLocked(lp, v.lineages[0].Epoch+1, preferred, v.geo.blockBits); err != nil {
			return netip.Addr{}, err
		}
		// Run retires the lineage this one replaces: the records just
		// written wake it.
		return preferred, nil
	}
	return netip.Addr{}, &Error{Kind: ErrGateway, Msg: fmt.Sprintf(
		"gateway %s requested, but the cluster's gateway for %s is %s (pool created by %s): create the network with --gateway %s, or without --gateway",
		preferred, lp.key, v.gateway, v.origin.Node, v.gateway)}
}

// aloneInPoolLocked: no other node uses the pool, nobody holds an address
// in it, this node included.
func (a *IPAM) aloneInPoolLocked(lp *localPool, v *poolView) bool {
	if len(lp.addrs) > 0 || len(v.heldBy) > 0 {
		return false
	}
	for n, m := range v.members {
		if n != a.self && m.active() {
			return false
		}
	}
	for n, p := range v.rivals {
		if n != a.self && (!p.Released || p.Allocated > 0) {
			return false
		}
	}
	return true
}

// ReleaseAddress frees an address of this node. Releasing the gateway or
// an address not held here is a no-op.
func (a *IPAM) ReleaseAddress(poolID string, addr netip.Addr) error {
	addr = addr.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	lp, ok := a.pools[poolID]
	if !ok {
		return &Error{Kind: ErrUnknownPool, Msg: fmt.Sprintf("release %s: this node has no pool %s", addr, poolID)}
	}
	return a.releaseLocked(lp, addr)
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

// ReleaseStale frees an address the caller found held by no container (a
// leak: meshnetd died between allocating it and Docker's use of it, or
// Docker's release never arrived), but only if this node has held it since
// before the caller started watching it: an address released and handed
// out again meanwhile belongs to a new container and is kept. It reports
// whether the address was freed.
func (a *IPAM) ReleaseStale(poolID string, addr netip.Addr, unusedSince time.Time) (bool, error) {
	addr = addr.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	lp, ok := a.pools[poolID]
	if !ok {
		return false, nil
	}
	if _, held := lp.addrs[addr]; !held || lp.takenAt[addr].After(unusedSince) {
		return false, nil
	}
	if err := a.releaseLocked(lp, addr); err != nil {
		return false, err
	}
	return true, nil
}

func (a *IPAM) releaseLocked(lp *localPool, addr netip.Addr) error {
	if _, ok := lp.addrs[addr]; !ok {
		return nil
	}
	delete(lp.addrs, addr)
	if err := a.persistLocked(); err != nil {
		lp.addrs[addr] = struct{}{}
		return fmt.Errorf("release %s: %w", addr, err)
	}
	delete(lp.takenAt, addr)
	if lp.counts != nil {
		if v := a.viewLocked(lp.key); v != nil && v.geo.blockBits == lp.countBits {
			if i, ok := v.geo.blockOf(addr); ok {
				lp.counts[i]--
			}
		} else {
			lp.counts = nil
		}
	}
	return nil
}
