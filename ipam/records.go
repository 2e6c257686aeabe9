package ipam

import "github.com/meshnet/meshnet/gossip"

// The records ipam writes. Their wire form (values, record IDs, Held lists)
// is decoded in one place with every other kind (gossip/ipamvalues.go,
// gossip/decode.go); what they mean is this package's.

// Record kinds ipam writes besides gossip.KindBlock.
const (
	KindPool    = gossip.KindPool
	KindRequest = gossip.KindRequest
)

type (
	// Origin names one creation of a pool: a lineage. Two nodes that
	// create the same subnet on two sides of a partition make two
	// lineages; the better one (see better) wins everywhere once the
	// sides meet.
	Origin = gossip.Origin
	// PoolRecord is a KindPool value.
	PoolRecord = gossip.PoolRecord
	// BlockRecord is a gossip.KindBlock value: the writer's stance on a
	// prefix of a pool. A node's stance on a block is its most specific
	// record covering it. See doc.go.
	BlockRecord = gossip.BlockRecord
	// RequestRecord is a KindRequest value: the owner asks Donor for Want
	// blocks (or for one given Block, to honour a preferred address).
	RequestRecord = gossip.RequestRecord
)

// better reports whether o beats p: a later epoch, else the earlier
// creation, else the smaller creator name. Every node computes the same.
func better(o, p Origin) bool {
	if o.Epoch != p.Epoch {
		return o.Epoch > p.Epoch
	}
	if o.Version != p.Version {
		return o.Version < p.Version
	}
	return o.Node < p.Node
}

func isGrant(b BlockRecord) bool { return b.To != "" }

// blockID is the record ID of a node's stance on prefix in a pool lineage.
func blockID(subnet, prefix string, o Origin) string { return gossip.BlockID(subnet, prefix, o) }
