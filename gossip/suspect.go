package gossip

import (
	"math"
	"regexp"
	"time"

	"github.com/hashicorp/memberlist"
)

// Memberlist has no event for suspicion and never sets Node.State, but the
// node that probes a failing peer logs "Suspect NAME has failed, no acks
// received" before it spreads the suspicion. That line is the one place
// where a suspicion is observable, so the log adapter hands it here. Every
// node probes every other within a few probe intervals, so in practice each
// node sees its own suspicion before the peer is declared dead; in large
// clusters some go straight from alive to dead, as memberlist's own view
// may. A suspicion that ends in a refutation produces no event either, so
// it lapses once memberlist would have declared the node dead.
var suspectLine = regexp.MustCompile(`^Suspect (\S+) has failed`)

// suspicionWindow is the longest memberlist keeps a node suspect before it
// declares it dead (its suspicionTimeout times SuspicionMaxTimeoutMult),
// plus a probe interval, for a cluster of n nodes.
func suspicionWindow(mc *memberlist.Config, n int) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	min := time.Duration(float64(mc.SuspicionMult) * scale * float64(mc.ProbeInterval))
	return time.Duration(max(mc.SuspicionMaxTimeoutMult, 1))*min + mc.ProbeInterval
}

// noteLogLine looks for a suspicion in one memberlist log line.
func (c *Cluster) noteLogLine(line string) {
	if m := suspectLine.FindStringSubmatch(line); m != nil {
		c.markSuspect(m[1])
	}
}

// markSuspect reports an alive peer as suspect until memberlist's verdict
// (an event) or the end of the suspicion window.
func (c *Cluster) markSuspect(name string) {
	c.mu.Lock()
	p, ok := c.peers[name]
	if !ok || p.state != StateAlive || name == c.cfg.NodeName || c.sendsClosed {
		c.mu.Unlock()
		return
	}
	p.state = StateSuspect
	c.peers[name] = p
	c.suspectSeq++
	seq := c.suspectSeq
	c.suspects[name] = seq
	window := suspicionWindow(c.mlConfig, len(c.peers))
	if old := c.suspectTimers[name]; old != nil {
		old.Stop()
	}
	c.suspectTimers[name] = time.AfterFunc(window, func() { c.suspicionLapsed(name, seq) })
	c.mu.Unlock()
	c.store.SetMember(Member{Name: name, Addr: p.ip.String(), State: StateSuspect})
}

// stopSuspicions stops every pending suspicion timer: after Close nothing
// may write to the store on the cluster's behalf. Called with c.mu held.
func (c *Cluster) stopSuspicions() {
	for name, t := range c.suspectTimers {
		t.Stop()
		delete(c.suspectTimers, name)
	}
}

// suspicionLapsed turns a suspect that memberlist never declared dead (it
// refuted the suspicion) back to alive.
func (c *Cluster) suspicionLapsed(name string, seq uint64) {
	c.mu.Lock()
	if c.suspects[name] == seq {
		delete(c.suspectTimers, name)
	}
	p, ok := c.peers[name]
	// A timer that fired while Close stopped it finds sendsClosed set.
	if !ok || p.state != StateSuspect || c.suspects[name] != seq || c.sendsClosed {
		c.mu.Unlock()
		return
	}
	delete(c.suspects, name)
	p.state = StateAlive
	c.peers[name] = p
	c.mu.Unlock()
	c.store.SetMember(Member{Name: name, Addr: p.ip.String(), State: StateAlive})
}
