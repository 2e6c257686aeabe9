package gossip

import (
	"net"
	"strconv"
)

// Heard is closed once this node has merged a full state from a peer (a
// push/pull: the join with a seed, a rejoin, a catch-up or the periodic
// anti-entropy). From then on the store holds what the cluster held at
// that moment, so the node may decide things that depend on what others
// own (ipam creates pools only then). Membership alone does not count:
// memberlist reports a seed's members before it merges the seed's state.
func (c *Cluster) Heard() <-chan struct{} { return c.heard }

func (c *Cluster) markHeard() {
	c.heardOnce.Do(func() {
		if c.heard != nil { // nil only in a Cluster built by hand (tests)
			close(c.heard)
		}
	})
}

// SeedsOnlySelf reports whether the join list names no node but this one:
// it is empty, or every address it expands to now is this node's gossip
// address (the same --join on every host, the first host included). Such
// a node has nobody to hear from by the operator's word. A list that
// expands to nothing (a name that does not resolve yet) is not "only
// self": the seeds may still come.
func (c *Cluster) SeedsOnlySelf() bool {
	if len(c.cfg.Join) == 0 {
		return true
	}
	seeds := c.seeds()
	if len(seeds) == 0 {
		return false
	}
	self := net.JoinHostPort(c.localHost, strconv.Itoa(c.localPort))
	for _, s := range seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, strconv.Itoa(c.cfg.BindPort))
		}
		if s != self {
			return false
		}
	}
	return true
}
