package gossip

import "sort"

// Snapshot is an immutable view of the store at one moment: live records
// (no tombstones, none of a removed node's) and the members' liveness.
// Consumers compute their whole desired state from one Snapshot.
type Snapshot struct {
	Self    string
	Members map[string]Member
	// Removed maps a removed node to the version up to which its records
	// no longer count.
	Removed map[string]uint64

	byKind map[Kind][]Record
	view   lazyView
}

// Records returns every live record of a kind, whatever the liveness of its
// owner: what a dead node owns (address blocks) stays reserved.
func (s *Snapshot) Records(kind Kind) []Record { return s.byKind[kind] }

// UpRecords returns the records of a kind whose owner is up (alive or
// suspect, or the local node): what carries traffic (endpoints) vanishes at
// once when its node is declared dead, and comes back if it returns.
func (s *Snapshot) UpRecords(kind Kind) []Record {
	var out []Record
	for _, r := range s.byKind[kind] {
		if s.Up(r.Owner) {
			out = append(out, r)
		}
	}
	return out
}

// Get returns one live record.
func (s *Snapshot) Get(kind Kind, owner, id string) (Record, bool) {
	recs := s.byKind[kind]
	i := sort.Search(len(recs), func(i int) bool {
		k := recs[i].Key
		return k.Owner > owner || (k.Owner == owner && k.ID >= id)
	})
	if i < len(recs) && recs[i].Owner == owner && recs[i].ID == id {
		return recs[i], true
	}
	return Record{}, false
}

// Up reports whether a node carries traffic: the local node always does;
// others when memberlist has them alive or suspect.
func (s *Snapshot) Up(node string) bool {
	if node == s.Self {
		return true
	}
	m, ok := s.Members[node]
	return ok && m.State.Up()
}

// WithMembers returns a copy of the snapshot that sees members as the
// nodes' liveness, with a View of its own (Endpoint.Up follows members).
// The daemon uses it to count a node whose daemon is dead but whose data
// path answers as up for the dataplane (daemon/datapath.go).
func (s *Snapshot) WithMembers(members map[string]Member) *Snapshot {
	return &Snapshot{Self: s.Self, Members: members, Removed: s.Removed, byKind: s.byKind}
}
