package gossip

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
)

// Kind names a family of records. The store treats every kind alike; what a
// kind means is up to the packages that write it; what its values look like
// is decoded in one place (decode.go).
type Kind string

// The record kinds of meshnet's cluster state (DESIGN.md, "Cluster state").
const (
	// KindNode holds a node's facts: underlay address, tunnel keys and ports.
	KindNode Kind = "node"
	// KindNetwork says the owner has a meshnet network with that subnet,
	// and with which settings.
	KindNetwork Kind = "network"
	// KindBlock is an address block the owner holds (written by ipam).
	KindBlock Kind = "block"
	// KindEndpoint is a container endpoint on the owner.
	KindEndpoint Kind = "endpoint"
	// KindRemoval says an operator removed a node (meshctl rmpeer): the
	// removed node's records up to a version stop counting.
	KindRemoval Kind = "removal"
	// KindVIP is a service's virtual address on one network (ID
	// "<subnet> <service>"), allocated by the owner from its IPAM blocks.
	KindVIP Kind = "vip"
)

// Limits on what a record may carry. They bound what a peer, or anyone who
// holds the key, can make every node store.
const (
	maxIDLen    = 256
	maxOwnerLen = 128
	maxKindLen  = 32
	maxValueLen = 8 << 10
)

// Key identifies a record cluster-wide. Only Owner ever writes it.
type Key struct {
	Kind  Kind   `json:"kind"`
	Owner string `json:"owner"`
	ID    string `json:"id"`
}

func (k Key) String() string { return string(k.Kind) + "/" + k.Owner + "/" + k.ID }

// Record is one replicated fact. Version is the owner's hybrid logical clock
// at the write; a higher version replaces a lower one. A delete is a record
// with Deleted set (a tombstone), so it wins over the older write wherever it
// arrives first.
type Record struct {
	Key
	Version uint64          `json:"version"`
	Deleted bool            `json:"deleted,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	// Signer is the writer's node key (Ed25519 public key) and Sig its
	// signature over the record (sign.go). Both are empty on records of
	// nodes from before records were signed (trust.go, the upgrade rule).
	Signer []byte `json:"signer,omitempty"`
	Sig    []byte `json:"sig,omitempty"`
}

// validate rejects records no honest meshnet node writes.
func (r Record) validate() error {
	switch {
	case r.Kind == "" || len(r.Kind) > maxKindLen:
		return fmt.Errorf("record kind %q: empty or longer than %d bytes", r.Kind, maxKindLen)
	case r.Owner == "" || len(r.Owner) > maxOwnerLen:
		return fmt.Errorf("record owner %q: empty or longer than %d bytes", r.Owner, maxOwnerLen)
	case len(r.ID) > maxIDLen:
		return fmt.Errorf("record id longer than %d bytes", maxIDLen)
	case len(r.Value) > maxValueLen:
		return fmt.Errorf("record value of %d bytes is over the limit of %d", len(r.Value), maxValueLen)
	case r.Version == 0:
		return fmt.Errorf("record %s has version 0", r.Key)
	case !r.Deleted && len(r.Value) > 0 && !json.Valid(r.Value):
		return fmt.Errorf("record %s value is not JSON", r.Key)
	case (len(r.Signer) == 0) != (len(r.Sig) == 0):
		return fmt.Errorf("record %s has a signer without a signature or the reverse", r.Key)
	case len(r.Signer) != 0 && (len(r.Signer) != ed25519.PublicKeySize || len(r.Sig) != ed25519.SignatureSize):
		return fmt.Errorf("record %s: signer of %d bytes or signature of %d bytes (want %d and %d)", r.Key, len(r.Signer), len(r.Sig), ed25519.PublicKeySize, ed25519.SignatureSize)
	}
	return nil
}

// newer reports whether a should replace b (same key). The order is total
// so that every node, receiving the same records in any order and any number
// of times, keeps the same one: higher version first; at equal versions
// (only possible when an owner lost its clock) a tombstone wins, then the
// larger value bytes.
func newer(a, b Record) bool {
	if a.Version != b.Version {
		return a.Version > b.Version
	}
	if a.Deleted != b.Deleted {
		return a.Deleted
	}
	return bytes.Compare(a.Value, b.Value) > 0
}
