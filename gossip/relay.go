package gossip

import (
	"sync"
	"time"
)

// Relaying what a push/pull brought. A node passes a broadcast record on
// once, when it is news (NotifyMsg), so that a record its owner sent to a
// few random peers spreads to the whole cluster. A record that first
// arrived by push/pull is news too, but is not passed on there: a joiner
// learns the whole cluster's state that way, and relaying it would flood
// the cluster at every join. That left a gap. A node that wrote records
// before it joined (its node record, always) sends them to its seed in the
// join's push/pull, then broadcasts them; if the broadcast's few
// transmissions all go to the seed (memberlist piggybacks broadcasts on
// every packet, acks to the seed's probes included), the seed finds them
// not news and relays nothing, and the other members wait for a periodic
// push/pull (30 s): the e2e suite saw a third host's containers
// unreachable from the second for that long, its node record missing there.
//
// So a record learned by push/pull is remembered, and the first broadcast
// copy of that same version that reaches the node is passed on as if it
// were news. Copies of records that nobody broadcasts any more (the bulk
// of a joiner's push/pull) never arrive, so nothing floods; entries are
// forgotten after unrelayedTTL, and the table is bounded.

const (
	unrelayedTTL = 2 * time.Minute
	maxUnrelayed = 1 << 16
)

type unrelayed struct {
	mu        sync.Mutex
	pending   map[Key]unrelayedEntry
	lastPrune time.Time
}

type unrelayedEntry struct {
	version uint64
	at      time.Time
}

// note remembers records a push/pull brought as news, except this node's own.
func (u *unrelayed) note(self string, recs []Record, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pending == nil {
		u.pending = make(map[Key]unrelayedEntry)
	}
	if now.Sub(u.lastPrune) >= unrelayedTTL {
		u.pruneLocked(now)
	}
	for _, r := range recs {
		if r.Owner == self {
			continue
		}
		if len(u.pending) >= maxUnrelayed {
			u.pruneLocked(now)
			if len(u.pending) >= maxUnrelayed {
				return // a state this large is caught up by push/pull anyway
			}
		}
		u.pending[r.Key] = unrelayedEntry{version: r.Version, at: now}
	}
}

// take reports whether r is a broadcast copy of a record that a push/pull
// brought and that has not been passed on yet; it forgets it either way
// once a copy of its version or a later one arrived.
func (u *unrelayed) take(r Record, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	e, ok := u.pending[r.Key]
	if !ok || r.Version < e.version {
		return false
	}
	delete(u.pending, r.Key)
	return r.Version == e.version && now.Sub(e.at) < unrelayedTTL
}

func (u *unrelayed) pruneLocked(now time.Time) {
	u.lastPrune = now
	for k, e := range u.pending {
		if now.Sub(e.at) >= unrelayedTTL {
			delete(u.pending, k)
		}
	}
}
