package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/gossip"
)

// RemovePeer removes a dead node: its records up to now stop counting, so
// its address blocks can be reclaimed. Removal is only safe when the node
// is really gone: one that is merely cut off from this node still
// allocates from its blocks, and the heir would hand the same addresses
// out again. So it is refused while the node is up here (ipam's rule),
// and, unless the operator forces it, while the cluster cannot confirm
// that it is down (stillSeen). Asking the members at the moment of the
// removal, rather than reading views they gossip, gives each member's
// current word and needs no new record kind.
func (b controlBackend) RemovePeer(ctx context.Context, req control.RemovePeerRequest) error {
	d := b.d
	node := req.Node
	if err := d.ipam.CanRemove(node); err != nil {
		return control.UserError{Err: err}
	}
	snap := d.store.Snapshot()
	var upTo uint64
	for _, r := range d.store.All() {
		if r.Owner == node && r.Version > upTo {
			upTo = r.Version
		}
	}
	if _, known := snap.Members[node]; !known && upTo == 0 {
		return control.UserError{Err: fmt.Errorf("no node named %s is known (see meshctl peers)", node)}
	}
	if !req.Force {
		ask := d.sightings
		if ask == nil {
			ask = d.cluster.Sightings
		}
		seen, err := ask(ctx, node)
		if err != nil {
			return fmt.Errorf("ask the cluster how it sees %s: %w", node, err)
		}
		if err := stillSeen(node, d.cfg.NodeName, seen, snap.Removed); err != nil {
			return control.UserError{Err: err}
		}
	}
	if _, err := d.store.Put(gossip.KindRemoval, node, gossip.Removal{UpTo: upTo, At: time.Now().UTC(), By: d.cfg.NodeName}); err != nil {
		return fmt.Errorf("record removal of %s: %w", node, err)
	}
	d.log.Info("node removed by operator", "node", node, "records_up_to", upTo, "forced", req.Force)
	return nil
}

// stillSeen says why node must not be removed yet, from the members'
// answers (gossip.Cluster.Sightings), or nil when it may: it did not
// answer itself, every member that might still see it (all but those
// removed or gone gracefully) answered, none sees it up, and at least one
// besides this node confirms. A member that cannot be asked leaves the
// question open: it may be on the node's side of a partition. And with no
// confirmation at all this node may be the one cut off.
func stillSeen(node, self string, seen []gossip.Sighting, removed map[string]uint64) error {
	const force = "meshctl rmpeer --force " // completed with the node's name
	var alive, unasked []string
	confirmed := 0
	for _, s := range seen {
		_, gone := removed[s.Node]
		switch {
		case s.Node == node && s.Self:
			return fmt.Errorf("%s answered this node's question itself: it runs, only its gossip with this node is cut (a partition, a firewall on UDP 7946). "+
				"Heal that, or stop meshnetd on %s first; %s%s removes it anyway, and the addresses it hands out meanwhile may then be held twice", node, node, force, node)
		case s.Node == node || s.Node == self || gone:
			// Its silence is what removal needs; this node's own view was
			// checked before asking; removed nodes have no say.
		case s.Err != "":
			if s.Member != gossip.StateLeft {
				unasked = append(unasked, fmt.Sprintf("%s (%s here; %s)", s.Node, orUnknown(s.Member), s.Err))
			}
		case s.State.Up():
			alive = append(alive, s.Node+" ("+string(s.State)+")")
		default:
			confirmed++
		}
	}
	switch {
	case len(alive) > 0:
		return fmt.Errorf("%s is still seen alive by %s: it is only cut off from this node, and still allocates from its address blocks. "+
			"Heal the partition, or stop meshnetd on %s and wait until the cluster declares it dead; %s%s removes it anyway, and the addresses it hands out meanwhile may then be held twice",
			node, strings.Join(alive, ", "), node, force, node)
	case len(unasked) > 0:
		return fmt.Errorf("could not ask %s whether they still see %s alive (they may be on its side of a partition): rerun once they answer (meshctl peers), or %s%s if you know %s is gone",
			strings.Join(unasked, ", "), node, force, node, node)
	case confirmed == 0:
		return fmt.Errorf("no other node confirms that %s is down: this node may be the one cut off. Check meshctl peers on another host; if you know %s is gone (its host is off), %s%s",
			node, node, force, node)
	}
	return nil
}

func orUnknown(s gossip.MemberState) string {
	if s == "" {
		return "unknown"
	}
	return string(s)
}
