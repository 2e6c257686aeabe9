// The IPAM type: its state, New, the Run loop, and the cached view of the
// cluster every operation reads.

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
	"sync"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/atomicfile"
)

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
	owned  int  // blocks owned when the request was sent
	judged bool // its outcome was taken into account
	// reannounced: the request and the pool record were gossiped once more
	// while no answer had come (a lost broadcast otherwise costs a timeout).
	reannounced bool
	tried       map[string]triedDonor // donors that gave nothing
}

// triedDonor is a donor that gave nothing to a request. One that answered
// without a block is not asked again for RequestTimeout (its answer would
// be the same); one that did not answer at all is asked again at once when
// no other donor has spare blocks: its silence is more often a lost message
// than a refusal.
type triedDonor struct {
	at       time.Time
	answered bool
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
