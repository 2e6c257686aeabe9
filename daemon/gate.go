package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/meshnet/meshnet/ipam"
	"github.com/meshnet/meshnet/plugin"
)

// The IPAM gate (ipam/joined.go): a node creates networks and takes
// address blocks only once it has heard from its cluster in the life of
// its state. It has heard when
//
//   - it merged a full state from a peer since it started (the join with
//     a seed, a rejoin, a catch-up or memberlist's push/pull); or
//   - it is the first node of a new cluster by the operator's word: its
//     --join names no node but itself (none at all, or its own address,
//     as when every host gets the same --join) and it knows no peers from
//     an earlier run (peers.json). A node with --join naming others, or
//     with known peers, waits for one of them: a wiped state folder or
//     blocked gossip then costs a clear error, not addresses held twice.
//
// A node restarted with its state keeps the mark, so a partition does
// not stop it; what it owns by its own records is usable in any case.

// runIPAMGate marks the IPAM joined when the node may allocate, then
// returns.
func (d *Daemon) runIPAMGate(ctx context.Context) error {
	if _, ok := d.ipam.Joined(); ok {
		return nil
	}
	how := ""
	if d.peersAtStart == 0 && d.cluster.SeedsOnlySelf() {
		how = "first node of a new cluster: no --join naming another node, no known peers"
		d.firstNode.Store(true)
	} else {
		d.log.Info("ipam waits to hear from the cluster before it creates networks or takes address blocks", "join", d.cfg.Join, "known_peers", d.peersAtStart)
		select {
		case <-ctx.Done():
			return nil
		case <-d.cluster.Heard():
		}
		how = "full state exchange with a peer"
	}
	if err := d.ipam.MarkJoined(how); err != nil {
		d.log.Error("ipam joined, but could not keep the mark on disk", "err", err)
	}
	return nil
}

// notJoinedHint says why the node cannot allocate yet and what to check.
func (d *Daemon) notJoinedHint() string {
	seeds := "none given; peers known from an earlier run"
	if len(d.cfg.Join) > 0 {
		seeds = strings.Join(d.cfg.Join, ",")
	}
	return fmt.Sprintf("meshnet on %s has not reached its cluster yet (seeds: %s): check --join, the gossip key and that UDP and TCP %d are open between hosts; it creates networks and hands out addresses only once it has (meshctl status)",
		d.cfg.NodeName, seeds, d.cfg.BindPort)
}

// gateError turns ipam's "not joined" into the plugin's error that says
// what to check; other errors go through ipamError. An unknown pool before
// the node joined gets the hint too: a network the engine kept while
// meshnet's state was wiped is unknown here, and only the cluster can
// give its records back.
func (d *Daemon) gateError(err error) error {
	if errors.Is(err, ipam.ErrNotJoined) {
		return plugin.BadRequest("%s. (%v)", d.notJoinedHint(), err)
	}
	if _, joined := d.ipam.Joined(); !joined && errors.Is(err, ipam.ErrUnknownPool) {
		return plugin.BadRequest("%s. (%v)", d.notJoinedHint(), err)
	}
	return ipamError(err)
}

// gateProblem is meshctl status's line while the gate is closed.
func (d *Daemon) gateProblem() string {
	if _, ok := d.ipam.Joined(); ok {
		return ""
	}
	return "ipam: " + d.notJoinedHint()
}
