package gossip

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Catching up after a heal. Records are spread by broadcasts, which reach
// only the nodes up at the time, and repaired by memberlist's push/pull,
// one random peer every 30 s. So when a partition heals, or a node comes
// back, what each side wrote meanwhile would take up to a push/pull
// interval or more to cross, and containers started on the other side stay
// unreachable that long (the e2e suite measured 30 s after a 5-minute
// partition). A node that sees peers come back (dead or left before, up
// now) therefore exchanges full state with a couple of them at once
// (memberlist's Join of a known node is a push/pull). Every node on both
// sides does so, so each side gets the other's records from at least one
// peer that has them all, within a second. Peers seen for the first time
// do not count: a joiner's push/pull with its seed already carries its
// state, and a cluster forming would otherwise have every node exchange
// with every other (at 250 nodes in one process that overloaded memberlist
// into flapping), except peers of the node's earlier run (Config.LastKnown)
// on a restart: its store starts with its own records only, and its seed
// may have restarted too (a cluster-wide restart) and know as little. Such
// a node also gossips its own records again after its first join
// (announceOwn): loaded from disk, they were never broadcast in this run.
// The bound on peers per round and the pause between rounds keep a large
// heal, or nodes flapping under load, from turning into N×M full-state
// exchanges.

const (
	catchUpWindow   = 300 * time.Millisecond // gathers the peers of one heal
	catchUpPeers    = 2                      // full-state exchanges per round
	catchUpInterval = 10 * time.Second       // at most one round per interval
	catchUpQueue    = 256
)

// noteUp queues a peer that has come up for a catch-up exchange. Called
// from memberlist's event callbacks: it must not block.
func (c *Cluster) noteUp(addr string) {
	select {
	case c.cameUp <- addr:
	default: // a round is due anyway; the queue holds enough to pick from
	}
}

// catchUp runs the exchanges until the node stops.
func (c *Cluster) catchUp() {
	for {
		var batch []string
		select {
		case <-c.stop:
			return
		case a := <-c.cameUp:
			batch = append(batch, a)
		}
		window := time.After(catchUpWindow)
	gather:
		for {
			select {
			case <-c.stop:
				return
			case a := <-c.cameUp:
				batch = append(batch, a)
			case <-window:
				break gather
			}
		}
		c.exchangeWith(batch, catchUpPeers)
		select {
		case <-c.stop:
			return
		case <-time.After(catchUpInterval):
		}
	}
}

// SyncWithPeers exchanges full state with up to n random peers that are up,
// one after the other, and returns how many exchanges succeeded. A caller
// about to create something the cluster may already have (a pool: ipam
// would otherwise start a rival creation of it) uses it to hear of the
// others' records now rather than when their broadcasts arrive, which can
// take half a second on a busy cluster. A peer that is up answers on the
// LAN in milliseconds. The states are merged when it returns.
func (c *Cluster) SyncWithPeers(n int) int {
	c.mu.Lock()
	var targets []string
	for name, p := range c.peers {
		if name != c.cfg.NodeName && p.state.Up() {
			targets = append(targets, p.addr)
		}
	}
	c.mu.Unlock()
	done := c.exchangeWith(targets, n)
	if done > 0 {
		c.flushInbound() // the states are merged when this returns
	}
	return done
}

// exchangeWith does a full-state exchange (memberlist's Join of a known
// node is a push/pull) with up to n of addrs, in random order, each address
// once, until n succeeded or the node stops; it returns how many did.
func (c *Cluster) exchangeWith(addrs []string, n int) int {
	addrs = slices.Clone(addrs)
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	seen := map[string]bool{}
	done := 0
	for _, a := range addrs {
		if done == n {
			break
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		select {
		case <-c.stop:
			return done
		default:
		}
		if k, err := c.ml.Join([]string{a}); k == 0 {
			c.log.Debug("state exchange failed", "peer", a, "err", err)
			continue
		}
		done++
		c.log.Debug("exchanged state", "peer", a)
	}
	return done
}

// announceOwn gossips every record this node owns again, once per run, after
// its first join, when it restarted (it had peers of an earlier run): peers
// that restarted at the same time lost them, and the join's push/pull
// reached only the seed. A node's own records are few (its node record,
// networks, endpoints, blocks); a peer that has them already takes them as
// no news.
func (c *Cluster) announceOwn() {
	if c.announced || len(c.lastKnown) == 0 || c.numUp() < 2 {
		return
	}
	c.announced = true
	snap := c.store.Snapshot()
	for _, recs := range snap.byKind {
		for _, r := range recs {
			if r.Owner == c.cfg.NodeName {
				c.store.Announce(r.Kind, r.ID)
			}
		}
	}
}
