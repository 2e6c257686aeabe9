package ipam

import (
	"fmt"
	"time"
)

// Why a node waits for its cluster before it creates anything.
//
// A node that has never heard from its cluster sees no pool, no block and
// no address of anyone else: every subnet looks free, and a pool it created
// would own the whole subnet and hand out, from the bottom, addresses that
// other hosts already hold. The conflict would show only when gossip
// arrives. So a node creates pools (new lineages) and asks for blocks only
// once it has heard from the cluster at least once in the life of its
// state: a full state exchange with a peer (the daemon calls MarkJoined),
// or the operator's word that it is the first node of a new cluster. The
// mark is kept in the cluster cache file, beside the view it vouches for,
// so that a node whose state is wiped waits again, and a node restarted
// with its state intact (also while partitioned) goes on as before. What
// it owns by its own records stays usable in any case.

// JoinInfo says when and how this node first heard from its cluster.
type JoinInfo struct {
	At  time.Time `json:"at"`
	How string    `json:"how"`
}

// MarkJoined records that this node has heard from its cluster (how says
// by which means), in memory at once and on disk with the cluster cache.
// Only the first mark of a state's life counts; later calls do nothing.
func (a *IPAM) MarkJoined(how string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.joined != nil {
		return nil
	}
	a.joined = &JoinInfo{At: a.cfg.Clock.Now().UTC(), How: how}
	a.log.Info("ipam may now create pools and take blocks: heard from the cluster", "how", how)
	a.clusterLocked()
	a.cacheFP = "" // the mark is new: write the cache even if the records did not change
	if err := a.persistClusterLocked(a.cache.all); err != nil {
		// Kept in memory: the node did hear. Only a restart before the
		// next cache write forgets it, and it then waits to hear again.
		return fmt.Errorf("remember that this node joined its cluster: %w", err)
	}
	return nil
}

// Joined reports whether this node has heard from its cluster in the life
// of its state, and how.
func (a *IPAM) Joined() (JoinInfo, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.joined == nil {
		return JoinInfo{}, false
	}
	return *a.joined, true
}

// notJoinedError is the error of what must wait until the node heard from
// its cluster. The daemon adds the seeds and what to check.
func (a *IPAM) notJoinedError(what string) error {
	return &Error{Kind: ErrNotJoined, Msg: fmt.Sprintf(
		"%s: %s has not heard from its cluster yet, and creates pools and takes address blocks only once it has (a full state exchange with a peer, or started as the first node of a new cluster)", what, a.self)}
}
