package gossip

import (
	"math"
	"net"
	"net/netip"
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
// may. A suspicion that ends in a refutation produces no event either: the
// node that suspects pings the suspect itself every probe interval, and an
// answer ends the suspicion (a daemon restarted within its suspicion is
// listed alive again within a second or two, not when the suspicion would
// have run out). Without an answer the suspicion lapses once memberlist
// would have declared the node dead; its verdict, an event, overrides
// either way.
//
// The answer is to a ping naming the node, sealed with the cluster's
// gossip key, from the node's gossip address: the process that answers it
// is that node's memberlist, now. Memberlist's own alive delegate is no
// such proof: it is called for every alive message, stale re-broadcasts of
// the one before the suspicion included.
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
// (an event), an answer to a ping, or the end of the suspicion window.
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
	c.suspectTimers[name] = time.AfterFunc(window, func() { c.endSuspicion(name, seq, "") })
	if to, err := netip.ParseAddrPort(p.addr); err == nil && c.ml != nil {
		c.sends.Add(1) // shutdown waits for it
		go c.pingSuspect(name, seq, net.UDPAddrFromAddrPort(to))
	}
	c.mu.Unlock()
	c.store.SetMember(Member{Name: name, Addr: p.ip.String(), State: StateSuspect})
}

// pingSuspect pings a suspect every probe interval while its suspicion
// (seq) lasts, and ends the suspicion when the node answers.
func (c *Cluster) pingSuspect(name string, seq uint64, addr net.Addr) {
	defer c.sends.Done()
	tick := time.NewTicker(c.mlConfig.ProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		current := c.suspects[name] == seq && !c.sendsClosed
		c.mu.Unlock()
		if !current {
			return
		}
		if rtt, err := c.ml.Ping(name, addr); err == nil {
			c.endSuspicion(name, seq, "it answers a ping again ("+rtt.Round(time.Microsecond).String()+")")
			return
		}
	}
}

// stopSuspicions stops every pending suspicion timer: after Close nothing
// may write to the store on the cluster's behalf. Called with c.mu held.
func (c *Cluster) stopSuspicions() {
	for name, t := range c.suspectTimers {
		t.Stop()
		delete(c.suspectTimers, name)
	}
}

// endSuspicion turns a suspect that memberlist has not declared dead back
// to alive: it answered a ping (why says so), or its suspicion lapsed (why
// is empty). Only the suspicion numbered seq ends: a later one stands.
func (c *Cluster) endSuspicion(name string, seq uint64, why string) {
	c.mu.Lock()
	if t := c.suspectTimers[name]; t != nil && c.suspects[name] == seq {
		t.Stop() // when the ping ended it; a lapse finds its timer fired
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
	if why != "" {
		c.log.Info("peer no longer suspect", "node", name, "why", why)
	}
	c.store.SetMember(Member{Name: name, Addr: p.ip.String(), State: StateAlive})
}
