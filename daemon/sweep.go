package daemon

import (
	"context"
	"net/netip"
	"sort"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/plugin"
)

// Leaks. Docker releases an address (ReleaseAddress) and an endpoint
// (DeleteEndpoint) by calling the plugin; when meshnetd is down at that
// moment (killed between allocating an address and answering, or during a
// container's Join, or while the engine cleans up after a crash) the call
// fails and the engine never repeats it. The address would stay allocated,
// and the endpoint record would keep its address routed on every host,
// for ever. So the daemon compares, on a timer, what it holds with what
// the engine holds (plugin.Watcher.HeldBy) and frees what no container
// has held for --reclaim-after: long enough that an address between
// RequestAddress and the endpoint's creation is never taken for a leak.
// When the engine cannot be asked, nothing is freed.

// leak is an address or an endpoint record this node holds and the engine
// does not.
type leak struct {
	pool     string     // address leak: its pool
	addr     netip.Addr // address leak: the address; endpoint leak: the endpoint's
	endpoint string     // endpoint leak: the endpoint ID
}

func (l leak) key() string {
	if l.endpoint != "" {
		return "endpoint " + l.endpoint
	}
	return "address " + l.pool + " " + l.addr.String()
}

// unheld lists this node's endpoint records and allocations the engine
// does not hold. allocations maps pool IDs to this node's addresses;
// gateways are never leaks.
func unheld(self string, snap *gossip.Snapshot, allocations map[string][]netip.Addr, gateways map[netip.Addr]bool, held plugin.Held) []leak {
	var out []leak
	for _, r := range snap.Records(gossip.KindEndpoint) {
		if r.Owner != self || held.Endpoints[r.ID] {
			continue
		}
		// Every own record counts, one that does not parse too: the
		// address only names it in the log.
		e, _ := gossip.ParseEndpoint(r)
		out = append(out, leak{endpoint: r.ID, addr: e.Addr})
	}
	for pool, addrs := range allocations {
		for _, a := range addrs {
			if !held.Addrs[a] && !gateways[a] {
				out = append(out, leak{pool: pool, addr: a})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

// leakTracker remembers since when each leak has been seen, continuously.
type leakTracker struct {
	since map[string]time.Time
}

// observe records the leaks of one pass and returns those seen in every
// pass for at least grace, with the time they were first seen. A leak
// missing from a pass (the engine holds it again) starts over.
func (t *leakTracker) observe(now time.Time, leaks []leak, grace time.Duration) (due []leak, firstSeen []time.Time) {
	next := make(map[string]time.Time, len(leaks))
	for _, l := range leaks {
		k := l.key()
		s, ok := t.since[k]
		if !ok {
			s = now
		}
		next[k] = s
		if now.Sub(s) >= grace {
			due = append(due, l)
			firstSeen = append(firstSeen, s)
		}
	}
	t.since = next
	return due, firstSeen
}

// reclaimLoop frees leaks (see above) until ctx is done.
func (d *Daemon) reclaimLoop(ctx context.Context) error {
	grace := d.cfg.ReclaimAfter
	if grace <= 0 {
		return nil
	}
	every := min(grace/2, 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	var tracker leakTracker
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		d.reclaimPass(ctx, &tracker, grace)
	}
}

func (d *Daemon) reclaimPass(ctx context.Context, tracker *leakTracker, grace time.Duration) {
	// The engine first, then this node's state: what is allocated after
	// the engine answered shows as a leak for this pass only.
	askCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	held, err := d.watcher.HeldBy(askCtx, "meshnet")
	cancel()
	if err != nil {
		d.log.Debug("leak sweep skipped: the engine cannot say what it holds", "err", err)
		tracker.since = nil // start over: leaks must be seen continuously
		return
	}
	allocations := map[string][]netip.Addr{}
	gateways := map[netip.Addr]bool{}
	for _, pool := range d.ipam.Pools() {
		allocations[pool] = d.ipam.Allocations(pool)
		if p, err := netip.ParsePrefix(pool); err == nil {
			if gw, ok := d.ipam.Gateway(p); ok {
				gateways[gw] = true
			}
		}
	}
	for _, a := range ownVIPAddrs(d.store.Snapshot()) {
		gateways[a] = true // held by a VIP record, not by a container
	}
	due, since := tracker.observe(time.Now(), unheld(d.cfg.NodeName, d.store.Snapshot(), allocations, gateways, held), grace)
	for i, l := range due {
		if l.endpoint != "" {
			if err := d.store.Delete(gossip.KindEndpoint, l.endpoint); err != nil {
				d.log.Warn("removing an endpoint no container holds", "endpoint", short(l.endpoint), "addr", l.addr, "err", err)
				continue
			}
			d.log.Warn("removed an endpoint no container holds (the engine's DeleteEndpoint was lost while meshnetd was down)",
				"endpoint", short(l.endpoint), "addr", l.addr, "unheld_for", time.Since(since[i]).Round(time.Second))
			continue
		}
		freed, err := d.ipam.ReleaseStale(l.pool, l.addr, since[i])
		if err != nil {
			d.log.Warn("releasing an address no container holds", "pool", l.pool, "addr", l.addr, "err", err)
			continue
		}
		if freed {
			d.log.Warn("released an address no container holds (the engine's ReleaseAddress was lost while meshnetd was down)",
				"pool", l.pool, "addr", l.addr, "unheld_for", time.Since(since[i]).Round(time.Second))
		}
	}
}
