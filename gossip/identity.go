package gossip

import (
	"crypto/ed25519"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Node identity: one name, one node. Memberlist refuses a node that joins
// under a name alive at another address, and tells every node that sees
// the attempt through its ConflictDelegate. That node may be the newcomer
// (its own name is alive elsewhere: it must stay out), the node that owns
// the name (it keeps it: memberlist refutes the newcomer), or a third node.
// Which of the two is the newcomer is judged by time: a node that meets its
// own name alive elsewhere before it has had a peer for newcomerWindow is
// joining now, so it is the one that came second. The store judges the
// same for a node record of its name under another node key at another
// address that no peer reports dead or left (trust.go, ownNameLocked); one
// at its own address, or where a peer saw the name gone, is an earlier
// run of this node (earlierRunLocked, mergeDelegate below).
// Either way the newcomer gets the error (Cluster.Conflict for
// memberlist's, Store.Conflict for the store's) and the daemon exits with
// it; every other node logs the attempt once.

// newcomerWindow: a conflict over a node's own name within this time of
// its first peer makes it the newcomer. A join's push/pull carries the
// cluster's members at once, so a conflict shows within the join; two
// nodes starting within the window under one name may both give up, which
// is the safe way to fail.
const newcomerWindow = 10 * time.Second

// conflicts is the Cluster's state for identity conflicts, under its mu.
type conflicts struct {
	firstPeer time.Time       // when another node was first seen up
	logged    map[string]bool // name+address pairs already logged
	fatal     chan error      // this node is the newcomer: sent once
	sent      bool
}

// notePeerLocked records the first peer seen up (setMember).
func (c *Cluster) notePeerLocked(name string, up bool) {
	if up && name != c.cfg.NodeName && c.conf.firstPeer.IsZero() {
		c.conf.firstPeer = time.Now()
	}
}

// Conflict delivers, once, why this node must stay out of the cluster: its
// name is alive at another address and it is the newcomer. The daemon
// exits with the error (see also Store.Conflict).
func (c *Cluster) Conflict() <-chan error { return c.conf.fatal }

type conflictDelegate struct{ c *Cluster }

var _ memberlist.ConflictDelegate = (*conflictDelegate)(nil)

// NotifyConflict is called by memberlist with its node lock held: it must
// not call into memberlist.
func (d *conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	c := d.c
	c.mu.Lock()
	defer c.mu.Unlock()
	self := existing.Name == c.cfg.NodeName
	if self && (c.conf.firstPeer.IsZero() || time.Since(c.conf.firstPeer) < newcomerWindow) {
		if !c.conf.sent {
			c.conf.sent = true
			c.conf.fatal <- fmt.Errorf("node name %q is already alive in the cluster at %s: start this node with a name of its own (--node-name)", existing.Name, other.Address())
		}
		return
	}
	k := existing.Name + "\x00" + other.Address()
	if c.conf.logged[k] || len(c.conf.logged) >= maxRejectKeys {
		return
	}
	c.conf.logged[k] = true
	if self {
		c.log.Error("another node tries to join under this node's name; it is refused, this node keeps its name (give the other one its own --node-name)",
			"node", existing.Name, "other_addr", other.Address())
		return
	}
	c.log.Error("a node tries to join under a name that is alive at another address; it is refused",
		"node", existing.Name, "alive_at", existing.Address(), "refused_addr", other.Address())
}

// metaNodeKeyPrefix opens a node's memberlist metadata when it names the
// node's key. Memberlist binds a member's metadata to its address: it
// takes a node's alive message at another address than the one it has for
// a live name only as a conflict, and the node itself refutes any alive
// message about it that carries other metadata. So the key in a live
// member's metadata is the key of the process at that member's address,
// which is what lets a peer take a new node key for a live name (trust.go,
// pinMovesLocked): a host restarted with a wiped state folder before the
// cluster declared it dead. Nodes from before this ignore the metadata
// (only "leaving" means anything to them).
const metaNodeKeyPrefix = "nk1:"

// nodeKeyMeta is the metadata a signing node advertises (nil when it does
// not sign, or when the limit memberlist gives has no room for it).
func nodeKeyMeta(pub ed25519.PublicKey, limit int) []byte {
	if pub == nil {
		return nil
	}
	meta := []byte(metaNodeKeyPrefix + EncodeNodeKey(pub))
	if len(meta) > limit {
		return nil
	}
	return meta
}

// metaNodeKey reads the node key (base64, as in NodeInfo.NodeKey) from a
// member's metadata; "" when it names none.
func metaNodeKey(meta []byte) string {
	k, ok := strings.CutPrefix(string(meta), metaNodeKeyPrefix)
	if !ok {
		return ""
	}
	if _, err := decodeNodeKey(k); err != nil {
		return ""
	}
	return k
}

// mergeDelegate hears what a peer says of the members when this node
// joins it (a join, a rejoin, a catch-up). Of them, it reads one thing:
// this node's own name reported dead or left at another address. That was
// an earlier run of this node (a host that came back with a new address,
// its state folder wiped): the store may take that run's records as this
// node's history (Store.noteEarlierRun), where otherwise a node record of
// its name at another address means a live duplicate.
type mergeDelegate struct{ c *Cluster }

var _ memberlist.MergeDelegate = (*mergeDelegate)(nil)

// NotifyMerge is called by memberlist before it merges a join's state;
// an error would cancel the merge, so it never returns one.
func (d *mergeDelegate) NotifyMerge(peers []*memberlist.Node) error {
	c := d.c
	for _, p := range peers {
		if p.Name != c.cfg.NodeName || (p.State != memberlist.StateDead && p.State != memberlist.StateLeft) {
			continue
		}
		if p.Addr.String() == c.localHost && int(p.Port) == c.localPort {
			continue // this very address: the store knows it already
		}
		c.store.noteEarlierRun(p.Addr.String(), int(p.Port))
	}
	return nil
}
