package ipam

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"

	"github.com/meshnet/meshnet/gossip"
)

// cluster is the input of every view, taken from one Store.All(): the live
// records, those a removal hides included (they are the evidence that a
// block's holder was removed, as opposed to never heard of), and the
// members' liveness.
type cluster struct {
	self      string
	members   map[string]gossip.Member
	removed   map[string]uint64 // node -> version up to which its records are hidden
	removedAt map[string]uint64 // node -> version of its latest removal record
	visible   map[gossip.Kind][]gossip.Record
	hidden    []gossip.Record // block records a removal hides
}

func newCluster(snap *gossip.Snapshot, all []gossip.Record) *cluster {
	c := &cluster{
		self:      snap.Self,
		members:   snap.Members,
		removed:   make(map[string]uint64),
		removedAt: make(map[string]uint64),
		visible:   make(map[gossip.Kind][]gossip.Record),
	}
	// The same rule as the store's Snapshot, applied to the same records.
	for _, r := range all {
		if r.Kind != gossip.KindRemoval || r.Deleted {
			continue
		}
		if rm, err := gossip.DecodeRemoval(r); err == nil && rm.UpTo > c.removed[r.ID] {
			c.removed[r.ID] = rm.UpTo
		}
		c.removedAt[r.ID] = max(c.removedAt[r.ID], r.Version)
	}
	for _, r := range all {
		if r.Deleted {
			continue
		}
		if upTo, ok := c.removed[r.Owner]; ok && r.Kind != gossip.KindRemoval && r.Version <= upTo {
			if r.Kind == gossip.KindBlock {
				c.hidden = append(c.hidden, r)
			}
			continue
		}
		c.visible[r.Kind] = append(c.visible[r.Kind], r)
	}
	return c
}

func (c *cluster) up(node string) bool {
	if node == c.self {
		return true
	}
	m, ok := c.members[node]
	return ok && m.State.Up()
}

// ClusterCacheFile holds, under Config.Dir, the other nodes' ipam records
// as last seen. Weave's IPAM persists its whole ring for the same reason:
// a node that restarts while it cannot reach anyone must still know which
// blocks are others', which addresses others hold in its own blocks, and
// which claims it is waiting on; its own records alone do not say that.
const ClusterCacheFile = "ipam-cluster.json"

type clusterCache struct {
	Node    string          `json:"node"`
	Records []gossip.Record `json:"records"`
	// Joined is set once the node heard from its cluster (joined.go):
	// kept here, with the view it vouches for, so both live and go
	// together.
	Joined *JoinInfo `json:"joined,omitempty"`
}

var cachedKinds = []gossip.Kind{KindPool, gossip.KindBlock, gossip.KindRemoval}

// cacheFingerprint changes when what the cache is for changes: block and
// removal records, and pool lineages (not the pools' usage counters).
func cacheFingerprint(self string, all []gossip.Record, d *decoder) string {
	h := sha256.New()
	for _, r := range all {
		if r.Owner == self || r.Deleted || !slices.Contains(cachedKinds, r.Kind) {
			continue
		}
		h.Write([]byte(r.Key.String()))
		if r.Kind == KindPool {
			if p, _ := d.get(r, parsePool).(*PoolRecord); p != nil {
				h.Write([]byte(p.Origin.String() + p.Gateway + strconv.Itoa(p.BlockBits)))
			}
			continue
		}
		h.Write([]byte(strconv.FormatUint(r.Version, 10)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (a *IPAM) persistClusterLocked(all []gossip.Record) error {
	fp := cacheFingerprint(a.self, all, a.dec)
	if fp == a.cacheFP {
		return nil
	}
	cc := clusterCache{Node: a.self, Joined: a.joined}
	for _, r := range all {
		if r.Owner != a.self && !r.Deleted && slices.Contains(cachedKinds, r.Kind) {
			cc.Records = append(cc.Records, r)
		}
	}
	raw, err := json.Marshal(cc)
	if err != nil {
		return fmt.Errorf("encode cluster cache: %w", err)
	}
	if err := a.writeFile(a.cachePath, sealEnvelope(raw)); err != nil {
		return fmt.Errorf("persist cluster cache: %w", err)
	}
	a.cacheFP = fp
	return nil
}

// loadClusterCache merges the cached records into the store: the store
// keeps whichever version of each record is newer.
func (a *IPAM) loadClusterCache() error {
	path := a.cachePath
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ipam cluster cache: %w", err)
	}
	damaged := func(why string) error {
		return fmt.Errorf("ipam cluster cache %s is damaged (%s): it tells this node which blocks and addresses other nodes hold. "+
			"Remove it and restart meshnetd only once this node can reach the other nodes (it relearns the cluster from them at join)", path, why)
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return damaged("not valid JSON: " + err.Error())
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, env.State); err != nil {
		return damaged(err.Error())
	}
	sum := sha256.Sum256(compact.Bytes())
	if env.Format != stateFormat || hex.EncodeToString(sum[:]) != env.SHA256 {
		return damaged("checksum or format mismatch")
	}
	var cc clusterCache
	if err := json.Unmarshal(env.State, &cc); err != nil {
		return damaged(err.Error())
	}
	if cc.Node != a.self {
		return fmt.Errorf("ipam cluster cache %s belongs to node %q, not %q: use the old --node-name, or a fresh --state-dir", path, cc.Node, a.self)
	}
	if cc.Joined != nil {
		if len(a.store.Owned()) > 0 {
			a.joined = cc.Joined
		} else {
			// The node's own records (records.json) are gone while the
			// cache stayed: its view is half lost, hear the cluster again.
			a.log.Warn("the ipam cluster cache says this node joined its cluster, but its own records are gone: it waits to hear from the cluster again before it creates pools", "file", path)
		}
	}
	var others []gossip.Record
	for _, r := range cc.Records {
		if r.Owner != a.self {
			others = append(others, r)
		}
	}
	if _, err := a.store.Merge(others); err != nil {
		a.log.Warn("some cached cluster records were invalid", "file", path, "err", err)
	}
	return nil
}
