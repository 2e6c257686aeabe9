package daemon

import (
	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/gossip"
)

// refusedRecords is meshctl status's count of refused records: those Merge
// refused from peers (counted by the store, gossip/trust.go) and those in
// the store that the typed view leaves out (a record this node wrote, or
// kept from a version with other rules, that no reader may see). Both are
// records no consumer acts on; an operator sees why in one place.
func refusedRecords(rej gossip.Rejections, view *gossip.View) control.RefusedRecords {
	out := control.RefusedRecords{Total: rej.Total, ByReason: rej.ByReason, UnsignedAccepted: rej.Unsigned}
	for reason, n := range view.Rejected {
		if out.ByReason == nil {
			out.ByReason = map[string]uint64{}
		}
		out.ByReason["left out of the record view: "+reason] += uint64(n)
		out.Total += uint64(n)
	}
	return out
}
