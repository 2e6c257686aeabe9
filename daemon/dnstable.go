package daemon

import (
	"context"

	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
)

// dnsTableLoop rebuilds the DNS table from every new snapshot of the store,
// on a subscription of its own: a new endpoint's name answers as soon as its
// record arrives, not after the dataplane has applied it (an Apply takes about
// a second cold at 10,000 endpoints, and waits behind a Join), and a failing
// Apply never holds names back. The table is built once per snapshot and
// swapped in whole; queries read it without a lock.
func (d *Daemon) dnsTableLoop(ctx context.Context) error {
	changes, cancel := d.store.Subscribe()
	defer cancel()
	var last *gossip.Snapshot
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		}
		// The store keeps its snapshot until the next change, so an unchanged
		// pointer means nothing a table is built from has changed.
		snap := d.store.Snapshot()
		if snap == last {
			continue
		}
		last = snap
		d.publishDNSTable(dns.NewTable(d.cfg.DNSDomain, withVIPs(snap, dnsEntries(snap))))
	}
}

// publishDNSTable hands t to the shared server, the containers' servers and
// any server started later.
func (d *Daemon) publishDNSTable(t *dns.Table) {
	d.dnsTable.Store(t)
	if srv := d.dnsServer.Load(); srv != nil {
		srv.SetTable(t)
	}
	if d.sandboxes != nil {
		d.sandboxes.SetTable(t)
	}
}
