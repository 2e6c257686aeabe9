package gossip

import "time"

// Memberlist calls the delegate's NotifyMsg from its packet goroutine and
// MergeRemoteState from its push/pull goroutines, and forbids blocking in
// either (delegate.go in memberlist: a slow NotifyMsg stalls probes, and
// with them failure detection). Store.Merge takes the store's lock, which
// a local write holds across its fsync (Put persists before it announces),
// and may persist itself (adopted own records, moved pins). So the
// delegates only decode and enqueue; mergeLoop, one goroutine, merges in
// arrival order, persists, passes news on and marks the node as having
// heard from its cluster.
//
// Gossip messages that find the queue full are dropped and counted:
// push/pull carries their records again. A push/pull state waits for room
// (its goroutine is memberlist's stream handler, one per exchange, not the
// packet loop), so a join's state is never lost; it gives up when the
// cluster shuts down.

// inboundQueue is how many messages and states may wait for mergeLoop.
const inboundQueue = 1024

// inbound is one message's or push/pull state's records.
type inbound struct {
	recs  []Record
	state bool // a push/pull state: the node has heard from its cluster
	// merged, when set, is closed once everything queued before it is
	// merged (flushInbound).
	merged chan struct{}
}

// flushInbound waits until what the delegates queued so far is merged,
// or the cluster stops.
func (c *Cluster) flushInbound() {
	done := make(chan struct{})
	select {
	case c.in <- inbound{merged: done}:
	case <-c.stop:
		return
	}
	select {
	case <-done:
	case <-c.stop:
	}
}

// enqueueMessage hands a gossip message's records to mergeLoop, or drops
// them if it is behind.
func (c *Cluster) enqueueMessage(recs []Record) {
	select {
	case c.in <- inbound{recs: recs}:
	default:
		if n := c.inDropped.Add(1); n == 1 || n%1000 == 0 {
			c.log.Warn("merge queue full: dropping gossip messages (push/pull brings their records again)", "dropped", n)
		}
	}
}

// enqueueState hands a push/pull state to mergeLoop, waiting for room.
func (c *Cluster) enqueueState(recs []Record) {
	select {
	case c.in <- inbound{recs: recs, state: true}:
	case <-c.stop:
	}
}

// mergeLoop merges what the delegates enqueue until the cluster stops.
func (c *Cluster) mergeLoop() {
	defer c.sends.Done()
	for {
		select {
		case in := <-c.in:
			c.mergeInbound(in)
		case <-c.stop:
			return
		}
	}
}

// mergeQueued merges everything queued now, without waiting (tests drive
// a Cluster without memberlist with it).
func (c *Cluster) mergeQueued() {
	for {
		select {
		case in := <-c.in:
			c.mergeInbound(in)
		default:
			return
		}
	}
}

func (c *Cluster) mergeInbound(in inbound) {
	if in.merged != nil {
		close(in.merged)
		return
	}
	// Refused records are logged by the store, once per owner and
	// reason: here they would be logged once per message.
	changed, err := c.store.Merge(in.recs)
	if in.state {
		if err != nil {
			c.log.Debug("merging a peer's push/pull state", "err", err)
		}
		c.unrelayed.note(c.cfg.NodeName, changed, time.Now())
		c.store.HeardState()
		c.markHeard()
		return
	}
	if err != nil {
		c.log.Debug("merging a gossip message", "err", err)
	}
	// Pass on what was news here, as memberlist does with its own alive and
	// dead messages: the queue sends a message only to a few random nodes
	// (RetransmitMult * log(N) in all), so a record the owner alone
	// broadcast would miss most of a large cluster until push/pull. A node
	// passes a record on once per version (it is news only once), so the
	// spreading stops by itself. The store broadcasts its own records.
	for _, r := range changed {
		if r.Owner != c.cfg.NodeName {
			c.broadcast(r)
		}
	}
	// A copy of a record that came by push/pull first is passed on once
	// too (relay.go).
	if len(changed) < len(in.recs) {
		now := time.Now()
		for _, r := range in.recs {
			if r.Owner != c.cfg.NodeName && !hasRecordKey(changed, r.Key) && c.unrelayed.take(r, now) {
				c.broadcast(r)
			}
		}
	}
}

func hasRecordKey(recs []Record, k Key) bool {
	for _, r := range recs {
		if r.Key == k {
			return true
		}
	}
	return false
}
