package gossip

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
)

// This file is the rejoin loop's choice of whom to contact: memberlist
// stops talking to nodes it declared dead, so two healed halves of a
// partition would otherwise stay apart.

// maxRejoinPeers bounds how many last-known peers one rejoin round tries
// after the seeds: each unreachable one costs a TCP timeout, and one
// answer is enough to merge two halves again.
const maxRejoinPeers = 3

// rejoin contacts the seeds and a few last-known peers that are not up,
// one at a time until one answers. It reports whether this node has at
// least one peer afterwards (or needs none: no seeds and no peers).
func (c *Cluster) rejoin() bool {
	targets := c.rejoinTargets()
	if len(targets) == 0 {
		// Nothing to try: fine without seeds, or with every seed up; but
		// seeds that resolved to nothing yet are retried soon.
		return len(c.cfg.Join) == 0 || c.numUp() > 1
	}
	var errs []error
	for _, t := range targets {
		select {
		case <-c.stop:
			return true
		default:
		}
		n, err := c.ml.Join([]string{t})
		if n > 0 {
			c.log.Debug("joined", "via", t)
			return true
		}
		errs = append(errs, err)
	}
	if c.numUp() > 1 {
		return true
	}
	c.log.Warn("no seed or peer answered; retrying (if peers do answer, check that every node has the same --key-file and cluster label)",
		"targets", targets, "err", errors.Join(errs...))
	return false
}

// rejoinTargets lists the seeds that are not up, then up to maxRejoinPeers
// last-known peers that are not up, in random order.
func (c *Cluster) rejoinTargets() []string {
	c.mu.Lock()
	up := map[string]bool{net.JoinHostPort(c.localHost, strconv.Itoa(c.localPort)): true}
	upNames := map[string]bool{c.cfg.NodeName: true}
	var down []string
	for name, p := range c.peers {
		if name == c.cfg.NodeName {
			continue
		}
		if p.state.Up() {
			up[p.addr] = true
			upNames[name] = true
		} else {
			down = append(down, p.addr)
		}
	}
	c.mu.Unlock()
	// Peers known from an earlier run (Config.LastKnown): after a restart
	// memberlist knows nobody, and a node started without seeds (the first
	// of a cluster) would otherwise stay alone.
	for _, a := range c.cfg.LastKnown {
		if !upNames[a.Name] {
			down = append(down, a.Addr)
		}
	}

	seen := make(map[string]bool)
	var out []string
	add := func(a string) bool {
		if a == "" || seen[a] || up[a] {
			return false
		}
		seen[a] = true
		out = append(out, a)
		return true
	}
	for _, s := range c.seeds() {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, strconv.Itoa(c.cfg.BindPort))
		}
		add(s)
	}
	rand.Shuffle(len(down), func(i, j int) { down[i], down[j] = down[j], down[i] })
	for i, added := 0, 0; i < len(down) && added < maxRejoinPeers; i++ {
		if add(down[i]) {
			added++
		}
	}
	return out
}
