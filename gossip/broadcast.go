package gossip

import (
	"encoding/json"
	"math"
	"math/rand/v2"

	"github.com/hashicorp/memberlist"
)

// This file spreads records: memberlist's broadcast queue for those that
// fit a gossip packet, TCP to a few peers for the others.

func (c *Cluster) broadcast(r Record) {
	c.queueRecord(r)
}

// queueRecord queues r for gossip (or sends it over TCP when it is too
// large for a packet) and returns its message, nil when it was not queued.
func (c *Cluster) queueRecord(r Record) []byte {
	buf, err := json.Marshal(r)
	if err != nil {
		c.log.Error("encoding a record for gossip", "record", r.Key.String(), "err", err)
		return nil
	}
	msg := append([]byte{msgRecord}, buf...)
	if len(msg) > c.maxPacketMsg {
		c.sendLarge(r.Key, msg)
		return nil
	}
	// The queue's name must be unique per key: Key.String's slashes also
	// occur in IDs (subnets).
	name := string(r.Kind) + "\x00" + r.Owner + "\x00" + r.ID
	c.queue.QueueBroadcast(&recordBroadcast{key: name, msg: msg})
	return msg
}

// directFanoutMax: with up to this many up peers, a node sends each of its
// own records to every one of them directly, besides queueing it.
const directFanoutMax = 16

// broadcastOwn spreads a record this node wrote (the store's hook). The
// queue alone does not reach every peer of a small cluster: it sends a
// message RetransmitMult * log10(N+1) times in all (4 for 3 nodes), each
// time to whichever peer is gossiped to next, preferring messages sent
// fewer times; in a burst of writes (a service's replicas starting) a
// message can go to one peer every time, and the relay of that peer can
// as well, so the third learns it only at the next push/pull, up to 30 s
// later (TestOwnRecordsReachEveryPeerOfASmallCluster). One packet to each
// peer costs a small cluster nothing; a large one relies on the relays of
// many receivers.
func (c *Cluster) broadcastOwn(r Record) {
	msg := c.queueRecord(r)
	if msg == nil {
		return
	}
	c.mu.Lock()
	ml, targets := c.upPeersLocked()
	c.mu.Unlock()
	if ml == nil || len(targets) > directFanoutMax {
		return
	}
	for _, n := range targets {
		if err := ml.SendBestEffort(n, msg); err != nil {
			c.log.Debug("sending a record to a peer", "record", r.Key.String(), "to", n.Name, "err", err)
		}
	}
}

// sendLarge sends a record too big for a gossip packet over TCP to a few
// random peers that are up, about as many as memberlist would retransmit a
// broadcast. Memberlist's queue skips a message that does not fit in a
// packet, forever: such a record would travel only by push/pull, and sit
// in the queue until replaced. Receivers pass it on the same way, once per
// version, so it spreads like a broadcast.
func (c *Cluster) sendLarge(k Key, msg []byte) {
	c.mu.Lock()
	ml, targets := c.upPeersLocked()
	if ml == nil {
		c.mu.Unlock()
		return
	}
	up := len(targets) + 1
	// Memberlist's retransmit count, and at least 4: every peer of a
	// small cluster directly.
	fanout := max(c.retransmitMult*int(math.Ceil(math.Log10(float64(up+1)))), 4)
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	if len(targets) > fanout {
		targets = targets[:fanout]
	}
	if len(targets) == 0 {
		c.mu.Unlock()
		return // push/pull carries it to whoever comes
	}
	c.sends.Add(1)
	c.mu.Unlock()
	// Dialing may take a TCP timeout: not on the caller's goroutine, which
	// may be memberlist's packet handler or a plugin request.
	go func() {
		defer c.sends.Done()
		for _, n := range targets {
			if err := ml.SendReliable(n, msg); err != nil {
				c.log.Debug("sending a large record", "record", k.String(), "to", n.Name, "err", err)
			}
		}
	}()
}

type recordBroadcast struct {
	key string
	msg []byte
}

func (b *recordBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*recordBroadcast)
	return ok && ob.key == b.key
}
func (b *recordBroadcast) Name() string    { return b.key }
func (b *recordBroadcast) Message() []byte { return b.msg }
func (b *recordBroadcast) Finished()       {}

// upPeersLocked returns memberlist and the peers that are up, to send to;
// a nil memberlist when sending is over (or not begun). c.mu is held.
func (c *Cluster) upPeersLocked() (*memberlist.Memberlist, []*memberlist.Node) {
	if c.sendsClosed || c.ml == nil {
		return nil, nil
	}
	var targets []*memberlist.Node
	for name, p := range c.peers {
		if name != c.cfg.NodeName && p.state.Up() {
			targets = append(targets, &memberlist.Node{Name: name, Addr: p.ip, Port: p.port})
		}
	}
	return c.ml, targets
}
