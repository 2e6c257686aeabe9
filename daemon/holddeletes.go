package daemon

// holdDeletes says whether Apply must leave alone the kernel objects the
// store does not explain. A daemon started with an empty state folder (wiped,
// or a reinstall) while containers run knows none of its own endpoints or
// networks until the cluster hands its earlier run's records back (gossip's
// adoption, in the first full state exchange): deleting what it does not
// know would take the interfaces out of running containers for good. So
// until it has merged a full state from a peer, Apply only adds. The first
// node of a new cluster (as the IPAM gate decides it: gate.go) has nobody to
// hear from and holds nothing once that is decided; a node restarted with
// its state never holds.
func (d *Daemon) holdDeletes() bool {
	hold := d.store.AwaitingOwnRecords() && !d.firstNode.Load()
	if d.heldDeletes.Swap(hold) != hold {
		if hold {
			d.log.Info("dataplane deletes held: this node started with an empty state folder and waits for its earlier records from the cluster; meshnet links it finds are kept meanwhile")
		} else {
			d.log.Info("dataplane deletes resumed: the node's own records are settled")
		}
	}
	return hold
}
