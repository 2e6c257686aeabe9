package daemon

import "time"

// holdDeletes says whether Apply must leave alone the kernel objects the
// store does not explain. A daemon started with an empty state folder (wiped,
// or a reinstall) while containers run knows none of its own endpoints or
// networks until the cluster hands its earlier run's records back (gossip's
// adoption, in the first full state exchange): deleting what it does not
// know would take the interfaces out of running containers for good. So
// until it has merged a full state from a peer, Apply only adds. The first
// node of a new cluster (as the IPAM gate decides it: gate.go) has nobody to
// hear from and holds nothing once that is decided.
//
// A node restarted with its state (it knew peers) holds too, until it has
// merged a full state from a peer or restartHoldMax has passed: its store
// starts with its own records only, so without the hold its first Apply
// would delete every other host's forwarding entries and cut running
// containers off until the first push/pull put them back (a restart or
// upgrade must lose no packet).
func (d *Daemon) holdDeletes() bool {
	hold := (d.store.AwaitingOwnRecords() || d.restartedUnheard()) && !d.firstNode.Load()
	if d.heldDeletes.Swap(hold) != hold {
		if hold && !d.store.AwaitingOwnRecords() {
			d.log.Info("dataplane deletes held: restarted, this node waits for the cluster's state before it removes anything; kernel entries of other hosts are kept meanwhile")
		} else if hold {
			d.log.Info("dataplane deletes held: this node started with an empty state folder and waits for its earlier records from the cluster; meshnet links it finds are kept meanwhile")
		} else {
			d.log.Info("dataplane deletes resumed: the node's own records are settled")
		}
	}
	return hold
}

// restartHoldMax bounds a restarted node's wait for its cluster's state: a
// node none of whose peers answers (all gone, or it is cut off) then acts
// on what it knows.
const restartHoldMax = 2 * time.Minute

// restartedUnheard: this node knew peers at start (peers.json), has merged
// no full state from any since, and started less than restartHoldMax ago.
func (d *Daemon) restartedUnheard() bool {
	if d.peersAtStart == 0 || time.Since(d.started) > restartHoldMax {
		return false
	}
	select {
	case <-d.cluster.Heard():
		return false
	default:
		return true
	}
}
