package gossip

import (
	"bytes"
	"net"

	"github.com/hashicorp/memberlist"
)

// This file keeps the members' liveness: memberlist's events turned into
// Member states in the store.

// NumMembers returns how many nodes memberlist has alive or suspect.
func (c *Cluster) NumMembers() int { return c.ml.NumMembers() }

// numUp counts the nodes up in this node's view, itself included: the
// cluster size that broadcast retransmits scale with.
func (c *Cluster) numUp() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.peers {
		if p.state.Up() {
			n++
		}
	}
	return max(n, 1)
}

// metaLeaving is the node metadata of a node that is leaving gracefully.
// Memberlist's event for a node gone does not say whether it failed or
// left (the Node it hands over never has its State set: memberlist keeps
// the state in a field of its own that shadows Node.State), so a leaving
// node first re-advertises itself with this metadata, and NotifyLeave reads
// it back.
var metaLeaving = []byte("leaving")

// memberState is what a memberlist event says of a node. Memberlist
// offers no event for suspicion (and never sets Node.State); suspect.go
// reads it from memberlist's log instead. Consumers treat suspect and
// alive alike anyway.
func memberState(n *memberlist.Node, gone bool) MemberState {
	switch {
	case !gone:
		return StateAlive
	case bytes.Equal(n.Meta, metaLeaving):
		return StateLeft
	default:
		return StateDead
	}
}

// setMember is called only from memberlist's event callbacks (see peers).
// It must not call into memberlist or the broadcast queue.
func (c *Cluster) setMember(n *memberlist.Node, gone bool) {
	m := Member{Name: n.Name, Addr: n.Addr.String(), State: memberState(n, gone), NodeKey: metaNodeKey(n.Meta)}
	c.mu.Lock()
	prev, known := c.peers[n.Name]
	if !known && m.State.Up() && n.Name != c.cfg.NodeName && c.lastKnown[n.Name] {
		// A peer of an earlier run, seen for the first time in this one:
		// this node restarted and lost the others' records, and the seed
		// it merged them from may have restarted too (a cluster-wide
		// restart), so fetch what this peer has (catchup.go).
		c.noteUp(n.Address())
	}
	if known && m.State.Up() && n.Name != c.cfg.NodeName {
		switch {
		case !prev.state.Up():
			c.noteUp(n.Address()) // it is back: catch up (catchup.go)
		case m.NodeKey != "" && prev.nodeKey != "" && m.NodeKey != prev.nodeKey:
			// Restarted with a new node key before it was declared
			// dead: its node record under that key is taken now
			// (Store, pinMovesLocked), so fetch it and the records it
			// adopted again rather than wait for push/pull.
			c.noteUp(n.Address())
		}
	}
	if m.NodeKey == "" {
		m.NodeKey = prev.nodeKey
	}
	c.peers[n.Name] = peer{addr: n.Address(), ip: append(net.IP(nil), n.Addr...), port: n.Port, state: m.State, nodeKey: m.NodeKey}
	c.notePeerLocked(n.Name, m.State.Up())
	delete(c.suspects, n.Name) // memberlist's verdict ends a suspicion
	c.mu.Unlock()
	c.store.SetMember(m)
}

// events is memberlist's EventDelegate. Memberlist calls it with its node
// lock held: one call at a time, and the only place where the Node it is
// handed may be read without a race.
type events struct{ c *Cluster }

func (e *events) NotifyJoin(n *memberlist.Node) {
	e.c.log.Info("peer joined", "node", n.Name, "addr", n.Address())
	e.c.setMember(n, false)
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	st := memberState(n, true)
	e.c.log.Info("peer gone", "node", n.Name, "addr", n.Address(), "state", st)
	e.c.setMember(n, true)
}

func (e *events) NotifyUpdate(n *memberlist.Node) { e.c.setMember(n, false) }
