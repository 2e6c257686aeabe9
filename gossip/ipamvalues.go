package gossip

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
)

// The wire form of ipam's records. What they mean (who owns a block, which
// lineage wins, when a grant is claimed) is ipam's; what they look like on
// the wire, including the record IDs, is decoded here with every other kind
// (decode.go), so that no package reads record bytes itself.

// Record kinds ipam writes besides KindBlock.
const (
	// KindPool (ID = subnet) says the owner takes part in a pool, in which
	// lineage, with which settings, and how much it could give away.
	KindPool Kind = "ipam-pool"
	// KindRequest (ID = subnet) asks one donor for address blocks.
	KindRequest Kind = "ipam-request"
)

// Origin names one creation of a pool: a lineage. Two nodes that create the
// same subnet on two sides of a partition make two lineages; ipam decides
// which one wins.
type Origin struct {
	// Epoch grows when a pool that every node released is created again
	// with other settings.
	Epoch uint64 `json:"epoch"`
	// Version is the creator's clock at creation.
	Version uint64 `json:"version"`
	Node    string `json:"node"`
}

// IsZero reports whether o names no lineage.
func (o Origin) IsZero() bool { return o == Origin{} }

// Tag is a short stable name for the lineage, used in block record IDs so
// that a node's records of two lineages never overwrite each other. It is
// part of the wire format: every version must compute the same.
func (o Origin) Tag() string {
	h := sha256.Sum256([]byte(strconv.FormatUint(o.Epoch, 10) + "/" + strconv.FormatUint(o.Version, 10) + "/" + o.Node))
	return hex.EncodeToString(h[:8])
}

func (o Origin) String() string {
	return fmt.Sprintf("%s@%d/e%d", o.Node, o.Version, o.Epoch)
}

// BlockID is the record ID of a node's stance on prefix in a pool lineage.
func BlockID(subnet, prefix string, o Origin) string {
	return subnet + " " + prefix + " " + o.Tag()
}

// PoolRecord is a KindPool value.
type PoolRecord struct {
	Subnet    string `json:"subnet"`
	Gateway   string `json:"gateway"`
	BlockBits int    `json:"block_bits"`
	Origin    Origin `json:"origin"`
	// Released: the pool is no longer used on the owner (Docker released
	// it); the owner still hands its blocks to those who ask.
	Released bool `json:"released,omitempty"`
	// Allocated is how many addresses the owner holds (refreshed lazily).
	Allocated int `json:"allocated"`
	// Spare is how many blocks the owner would give away now.
	Spare int `json:"spare"`
	// Answered maps a requester to the last request sequence it answered
	// (with grants, or with nothing when it had nothing to give).
	Answered map[string]uint64 `json:"answered,omitempty"`
}

// BlockRecord is a KindBlock value: the writer's stance on a prefix of a
// pool (the whole subnet, an aggregate, or one block). A node's stance on
// a block is its most specific record covering it (ipam/doc.go).
type BlockRecord struct {
	Pool   string `json:"pool"`
	Prefix string `json:"prefix"`
	Origin Origin `json:"origin"`
	// Gen orders the hands a block passed through: a handoff or an
	// inheritance writes Gen+1; the highest generation names the owner.
	Gen uint64 `json:"gen"`
	// To, when set, makes this a grant: the writer hands the prefix to To
	// and no longer owns it.
	To string `json:"to,omitempty"`
	// ForSeq is the request the grant answers.
	ForSeq uint64 `json:"for_seq,omitempty"`
	// From says how a claim was obtained: the granting node, "heir", or ""
	// for the creator.
	From string `json:"from,omitempty"`
	// Conceded: the writer gave the prefix up without handing it over
	// (it lost a conflict, its lineage lost, or it was removed).
	Conceded bool `json:"conceded,omitempty"`
	// Held lists addresses the writer still holds in the block, for the
	// owner to avoid and for everyone to report as conflicts when two
	// nodes list the same one. Only on single-block records.
	Held []string `json:"held,omitempty"`
	// HeldIn, on a conceded multi-block record, lists the writer's
	// single-block records (by prefix) that carry Held lists: until each is
	// seen, the owner does not allocate in those blocks.
	HeldIn []string `json:"held_in,omitempty"`
}

// RequestRecord is a KindRequest value: the owner asks Donor for Want
// blocks (or for one given Block, to honour a preferred address).
type RequestRecord struct {
	Subnet string `json:"subnet"`
	Origin Origin `json:"origin"`
	Seq    uint64 `json:"seq"`
	Donor  string `json:"donor"`
	Want   int    `json:"want"`
	Block  string `json:"block,omitempty"`
}
