// This node's own records: reading them (also when a removal of this node
// hides them from snapshots) and writing them.

package ipam

import (
	"github.com/meshnet/meshnet/gossip"
)

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

// ownRequest reads this node's request for blocks of a pool.
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
