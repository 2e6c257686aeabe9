package gossip

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// Member is what the store knows of a node's liveness, as memberlist reports it.
type Member struct {
	Name  string      `json:"name"`
	Addr  string      `json:"address"`
	State MemberState `json:"state"`
	Since time.Time   `json:"since"`
	// NodeKey is the node key the member advertises in its memberlist
	// metadata (base64; "" for a node that does not sign, or not yet
	// known). A peer takes a new node key for a live name only when the
	// member advertises it (trust.go).
	NodeKey string `json:"node_key,omitempty"`
}

// MemberState is a node's liveness.
type MemberState string

// Liveness states, as memberlist has them.
const (
	StateAlive   MemberState = "alive"
	StateSuspect MemberState = "suspect"
	StateDead    MemberState = "dead"
	StateLeft    MemberState = "left"
)

// Up reports whether a node in this state should carry traffic. A suspect
// node has not been declared dead yet: withdrawing it on suspicion would turn
// every lost probe into an outage.
func (s MemberState) Up() bool { return s == StateAlive || s == StateSuspect }

// OwnState is what a node must keep across restarts: its own records with
// tombstones, and the highest version of its own tombstones it has collected
// (below it, an unknown record of its own is a stale copy, not a lost one).
type OwnState struct {
	Records       []Record `json:"records"`
	CollectedUpTo uint64   `json:"collected_up_to"`
	// Pins are the node keys this node has pinned to names (trust on
	// first use, trust.go), base64: kept so that a restart does not open
	// a window in which any key may take a known name.
	Pins map[string]string `json:"pins,omitempty"`
}

// StoreConfig configures a Store.
type StoreConfig struct {
	// Self is the local node's name: the owner of every record it writes.
	Self string
	// TombstoneTTL is how long a delete is remembered. It must outlast the
	// longest partition after which a stale record could come back from a
	// peer; the owner re-deletes such a record when it sees it anyway.
	TombstoneTTL time.Duration
	// Persist, when set, is called with the local node's own state after
	// every local write, before the write is announced. An error fails the
	// write: a record the owner cannot keep is not published.
	Persist func(OwnState) error
	// Broadcast, when set, is handed every record that changed locally or
	// arrived newer from a peer, to be gossiped on.
	Broadcast func(Record)
	// Key is this node's Ed25519 node key: every record it writes is
	// signed with it (sign.go). Nil: records are written unsigned, as by
	// a node from before signing (tests of the upgrade rule).
	Key ed25519.PrivateKey
	// MaxClockAhead bounds how far ahead of the wall clock a peer's
	// version may be (DefaultMaxClockAhead when zero).
	MaxClockAhead time.Duration
	// Now is the clock (tests replace it).
	Now func() time.Time
	Log *slog.Logger
}

// DefaultTombstoneTTL keeps deletes for a day: partitions longer than that
// are healed by owner re-deletion (see StoreConfig.TombstoneTTL).
const DefaultTombstoneTTL = 24 * time.Hour

// Store is the replicated state: every record the node has heard of, with
// tombstones, and the liveness of members. It is safe for concurrent use.
//
// Rules it keeps:
//   - only the owner writes a record (Put, Delete act as Self);
//   - Merge keeps, per key, the record that newer() prefers, so any order and
//     duplication of the same records gives the same state;
//   - a record owned by Self that arrives from a peer and is newer than the
//     local clock is adopted (a previous run of this node wrote it and its
//     state was lost); one that is older and unknown here is re-deleted,
//     because the owner is the authority on its own records.
type Store struct {
	cfg StoreConfig

	mu        sync.Mutex
	clock     uint64                // hybrid logical clock: max(seen, wall ns)
	collected uint64                // highest own tombstone version expired
	records   map[Key]Record        // live records and tombstones
	deletedAt map[Key]time.Time     // when each tombstone was written (see applyLocked)
	members   map[string]Member     // by node name
	subs      map[int]chan struct{} // change notifications
	nextSub   int
	snap      *Snapshot // cached; nil when stale
	trust     trust     // node keys, pins and refusals (trust.go)
}

// NewStore returns an empty store. Load restores the node's own records.
func NewStore(cfg StoreConfig) *Store {
	if cfg.TombstoneTTL == 0 {
		cfg.TombstoneTTL = DefaultTombstoneTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxClockAhead == 0 {
		cfg.MaxClockAhead = DefaultMaxClockAhead
	}
	s := &Store{
		cfg:       cfg,
		records:   make(map[Key]Record),
		deletedAt: make(map[Key]time.Time),
		members:   make(map[string]Member),
		subs:      make(map[int]chan struct{}),
		trust: trust{
			pins:     make(map[string]ed25519.PublicKey),
			logged:   make(map[rejectKey]bool),
			unsigned: make(map[string]bool),
			conflict: make(chan error, 1),
			runStart: uint64(cfg.Now().UnixNano()),
			fresh:    true,
			earlier:  make(map[string]bool),
			goneAt:   make(map[string]bool),
			retired:  make(map[retiredKey]bool),
		},
	}
	if cfg.Key != nil {
		s.trust.key = cfg.Key
		s.trust.pub = cfg.Key.Public().(ed25519.PublicKey)
		s.trust.pins[cfg.Self] = s.trust.pub
	}
	return s
}

// Self returns the local node's name.
func (s *Store) Self() string { return s.cfg.Self }

// Load installs the state the local node kept in an earlier run (from its
// state file) without announcing or persisting it again.
func (s *Store) Load(own OwnState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.collected = own.CollectedUpTo
	s.observeLocked(own.CollectedUpTo)
	for name, k := range own.Pins {
		if name == s.cfg.Self && s.trust.key != nil {
			continue // this node's own key, not what an earlier run had
		}
		pub, err := decodeNodeKey(k)
		if err != nil {
			return fmt.Errorf("load pinned node keys: %s: %w", name, err)
		}
		s.trust.pins[name] = pub
	}
	if len(own.Records) > 0 {
		s.trust.fresh = false
	}
	for _, r := range own.Records {
		if err := r.validate(); err != nil {
			return fmt.Errorf("load own records: %w", err)
		}
		if r.Owner != s.cfg.Self {
			return fmt.Errorf("load own records: record %s is owned by %q, not this node %q (was the node renamed? use the old --node-name or a fresh --state-dir)", r.Key, r.Owner, s.cfg.Self)
		}
		s.observeLocked(r.Version)
		// Records kept from before this node signed (or signed by a
		// key it no longer has) are signed again, same version: they
		// are this node's, and peers that pinned its key want them so.
		if s.trust.key != nil && !bytes.Equal(r.Signer, s.trust.pub) {
			r = s.signLocked(r)
		}
		s.applyLocked(r)
	}
	s.changedLocked()
	return nil
}

// Put writes (or overwrites) a record owned by the local node. value is
// marshalled to JSON.
func (s *Store) Put(kind Kind, id string, value any) (Record, error) {
	raw, err := json.Marshal(value)
	if err != nil {
		return Record{}, fmt.Errorf("put %s/%s: encode value: %w", kind, id, err)
	}
	return s.write(Record{Key: Key{Kind: kind, Owner: s.cfg.Self, ID: id}, Value: raw})
}

// Delete writes a tombstone for a local record. Deleting what does not exist
// is not an error (and writes nothing).
func (s *Store) Delete(kind Kind, id string) error {
	k := Key{Kind: kind, Owner: s.cfg.Self, ID: id}
	s.mu.Lock()
	cur, ok := s.records[k]
	s.mu.Unlock()
	if !ok || cur.Deleted {
		return nil
	}
	_, err := s.write(Record{Key: k, Deleted: true})
	return err
}

// Update rewrites a local record from what it holds now, atomically: fn is
// called under the store's lock with the current record (ok false when there
// is none or it is deleted) and returns the new value, or write false to
// leave the record as it is. A read-modify-write through Update cannot bring
// back a record deleted after the caller last looked, nor undo a write made
// meanwhile, as a Put of a value computed from an older snapshot can. fn must
// not call back into the store.
func (s *Store) Update(kind Kind, id string, fn func(cur Record, ok bool) (value any, write bool, err error)) (Record, bool, error) {
	k := Key{Kind: kind, Owner: s.cfg.Self, ID: id}
	s.mu.Lock()
	cur, ok := s.records[k]
	value, write, err := fn(cur, ok && !cur.Deleted)
	if err != nil || !write {
		s.mu.Unlock()
		return cur, false, err
	}
	raw, err := json.Marshal(value)
	if err != nil {
		s.mu.Unlock()
		return Record{}, false, fmt.Errorf("update %s: encode value: %w", k, err)
	}
	r, changed, err := s.writeLocked(Record{Key: k, Value: raw})
	s.mu.Unlock()
	if changed {
		s.broadcast(r)
	}
	return r, changed, err
}

func (s *Store) write(r Record) (Record, error) {
	s.mu.Lock()
	r, changed, err := s.writeLocked(r)
	s.mu.Unlock()
	if changed {
		s.broadcast(r)
	}
	return r, err
}

// writeLocked gives r the next version, applies and persists it; changed
// says whether the caller must broadcast it.
func (s *Store) writeLocked(r Record) (_ Record, changed bool, _ error) {
	if cur, ok := s.records[r.Key]; ok && cur.Deleted == r.Deleted && string(cur.Value) == string(r.Value) {
		return cur, false, nil // unchanged: no new version, no gossip
	}
	r.Version = s.tickLocked()
	r = s.signLocked(r)
	if err := r.validate(); err != nil {
		return Record{}, false, fmt.Errorf("write %s: %w", r.Key, err)
	}
	prev, hadPrev := s.records[r.Key]
	s.applyLocked(r)
	if err := s.persistLocked(); err != nil {
		// Undo: a record the owner cannot keep across a restart must not
		// reach the cluster.
		if hadPrev {
			s.applyLocked(prev)
		} else {
			delete(s.records, r.Key)
			delete(s.deletedAt, r.Key)
		}
		return Record{}, false, fmt.Errorf("write %s: %w", r.Key, err)
	}
	s.changedLocked()
	return r, true, nil
}

// Merge folds records from a peer into the store, returning those that
// changed it (to be gossiped on). Invalid records are skipped and reported
// in the error; the valid ones are still merged.
func (s *Store) Merge(recs []Record) ([]Record, error) {
	var (
		changed  []Record
		invalid  int
		firstErr error
		persist  bool
	)
	// Removals first: whether another node's record in this node's name
	// is a live conflict or history depends on them (trust.go). Node
	// records next: whether a key may write for a name (a new key taking
	// a released name, an earlier run of this node) is decided on them.
	if slices.ContainsFunc(recs, func(r Record) bool { return r.Kind == KindRemoval || r.Kind == KindNode }) {
		recs = slices.Clone(recs)
		slices.SortStableFunc(recs, func(a, b Record) int {
			return cmp.Compare(removalRank(a), removalRank(b))
		})
	}
	s.mu.Lock()
	peerPinsThisRun := s.peerPinsThisRunLocked(recs)
	for _, r := range recs {
		if reason, err := s.admitLocked(r, peerPinsThisRun); reason == quietSkip {
			continue
		} else if reason != "" {
			s.rejectLocked(r.Owner, reason, err)
			invalid++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		s.observeLocked(r.Version)
		cur, ok := s.records[r.Key]
		if r.Owner == s.cfg.Self {
			if ok && !newer(r, cur) {
				continue
			}
			if !ok && r.Version <= s.collected && r.Deleted {
				// One of our tombstones we already collected, from a
				// peer that has not yet: nothing new.
				continue
			}
			if !ok && r.Version <= s.collected {
				// A record of ours we no longer have and did not write
				// since: a stale copy whose tombstone was collected.
				// Re-delete it, as its owner.
				t := s.signLocked(Record{Key: r.Key, Deleted: true, Version: s.tickLocked()})
				s.applyLocked(t)
				changed = append(changed, t)
				persist = true
				continue
			}
			// Newer than anything we have: written by an earlier run of
			// this node whose state was lost. Adopt it.
			persist = true
			if s.trust.key != nil && len(r.Signer) > 0 && !bytes.Equal(r.Signer, s.trust.pub) {
				if !s.adoptingLocked() {
					continue // this node kept its state: its copy stands
				}
				// Signed by the node key of an earlier run (its state
				// folder was wiped: trust.go, earlierRunLocked). Hidden
				// by a removal, it stays history; otherwise this node
				// writes it again under its own key, above the old
				// version, so every copy signed by the old key is
				// superseded and peers, which now pin the new key,
				// relay only the new one.
				if r.Version <= s.removedUpToLocked(s.cfg.Self) {
					continue
				}
				s.cfg.Log.Info("adopting own record of an earlier run (its node key) from a peer", "record", r.Key.String(), "version", r.Version)
				r = s.signLocked(Record{Key: r.Key, Deleted: r.Deleted, Value: r.Value, Version: s.tickLocked()})
				s.applyLocked(r)
				changed = append(changed, r)
				continue
			}
			s.cfg.Log.Info("adopting own record from a peer", "record", r.Key.String(), "version", r.Version)
		} else if ok && !newer(r, cur) {
			continue
		}
		s.applyLocked(r)
		changed = append(changed, r)
	}
	if persist || s.trust.pinsDirty {
		if err := s.persistLocked(); err != nil {
			s.cfg.Log.Error("persisting own records after merge", "err", err)
		}
	}
	if len(changed) > 0 {
		s.changedLocked()
	}
	s.mu.Unlock()
	for _, r := range changed {
		if r.Owner == s.cfg.Self {
			s.broadcast(r)
		}
	}
	if invalid > 0 {
		return changed, fmt.Errorf("merge: skipped %d invalid or refused records, first: %w", invalid, firstErr)
	}
	return changed, nil
}

func removalRank(r Record) int {
	switch r.Kind {
	case KindRemoval:
		return 0
	case KindNode:
		return 1
	}
	return 2
}

// All returns every record and tombstone, for a full-state push/pull.
func (s *Store) All() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.records))
	for _, r := range s.records {
		out = append(out, r)
	}
	sortRecords(out)
	return out
}

// Owned returns the local node's own records, tombstones included.
func (s *Store) Owned() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ownedLocked()
}

func (s *Store) ownedLocked() []Record {
	var out []Record
	for k, r := range s.records {
		if k.Owner == s.cfg.Self {
			out = append(out, r)
		}
	}
	sortRecords(out)
	return out
}

// SetMember records a node's liveness. Since is kept when the state does
// not change.
func (s *Store) SetMember(m Member) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.Name != s.cfg.Self && m.State.Up() && s.trust.firstPeer.IsZero() {
		s.trust.firstPeer = s.cfg.Now()
	}
	cur, ok := s.members[m.Name]
	if m.NodeKey == "" && ok {
		// Suspicions (suspect.go) and a leaving node's "leaving"
		// metadata say nothing of its key: keep the one it advertised.
		m.NodeKey = cur.NodeKey
	}
	if ok && cur.State == m.State && cur.Addr == m.Addr && cur.NodeKey == m.NodeKey {
		return
	}
	if ok && cur.State == m.State {
		m.Since = cur.Since
	}
	if m.Since.IsZero() {
		m.Since = s.cfg.Now()
	}
	s.members[m.Name] = m
	s.changedLocked()
}

// ForgetMember drops a node from the member list (after meshctl rmpeer).
func (s *Store) ForgetMember(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.members[name]; ok {
		delete(s.members, name)
		s.changedLocked()
	}
}

// Subscribe returns a channel that receives a value after every change
// (coalesced: a slow reader sees one notification for many changes) and a
// cancel function. Read the state with Snapshot: it is consistent as of the
// moment it is taken, never a half-applied merge.
func (s *Store) Subscribe() (<-chan struct{}, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	id := s.nextSub
	s.nextSub++
	s.subs[id] = ch
	ch <- struct{}{} // the current state is news to a new subscriber
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, id)
	}
}

// Snapshot returns an immutable view of the current state.
func (s *Store) Snapshot() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap != nil {
		return s.snap
	}
	snap := &Snapshot{
		Self:    s.cfg.Self,
		Members: make(map[string]Member, len(s.members)),
		byKind:  make(map[Kind][]Record),
	}
	for n, m := range s.members {
		snap.Members[n] = m
	}
	removedUpTo := make(map[string]uint64)
	for k, r := range s.records {
		if k.Kind != KindRemoval || r.Deleted {
			continue
		}
		if rm, err := DecodeRemoval(r); err == nil && rm.UpTo > removedUpTo[k.ID] {
			removedUpTo[k.ID] = rm.UpTo
		}
	}
	snap.Removed = removedUpTo
	for k, r := range s.records {
		if r.Deleted {
			continue
		}
		if upTo, ok := removedUpTo[k.Owner]; ok && r.Version <= upTo && k.Kind != KindRemoval {
			continue
		}
		snap.byKind[k.Kind] = append(snap.byKind[k.Kind], r)
	}
	for _, recs := range snap.byKind {
		sortRecords(recs)
	}
	s.snap = snap
	return snap
}

// Expire collects tombstones older than the TTL. The daemon calls it
// periodically.
func (s *Store) Expire() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	n := 0
	for k, at := range s.deletedAt {
		if now.Sub(at) < s.cfg.TombstoneTTL {
			continue
		}
		if v := s.records[k].Version; k.Owner == s.cfg.Self && v > s.collected {
			s.collected = v
		}
		delete(s.records, k)
		delete(s.deletedAt, k)
		n++
	}
	if n > 0 {
		if err := s.persistLocked(); err != nil {
			s.cfg.Log.Error("persisting own records after tombstone expiry", "err", err)
		}
		s.changedLocked()
	}
	return n
}

// Clock returns the store's current logical clock (for tests and status).
func (s *Store) Clock() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock
}

func (s *Store) applyLocked(r Record) {
	s.records[r.Key] = r
	if r.Deleted {
		// A tombstone's age counts from its version (the writer's wall
		// clock), not from when it arrived here, so every node collects it
		// at about the same time. Counting from arrival let a node that
		// heard of a delete late hand the tombstone back to one that had
		// just collected it, with a fresh TTL, round after round forever.
		// A version from the future (a peer's clock ahead) counts from now.
		at := s.cfg.Now()
		if vt := versionTime(r.Version); vt.Before(at) {
			at = vt
		}
		s.deletedAt[r.Key] = at
	} else {
		delete(s.deletedAt, r.Key)
	}
}

// tickLocked advances the hybrid logical clock for a local write: above
// everything seen, and at least the wall clock, so a node that restarts
// with its state lost still writes versions above its earlier ones.
func (s *Store) tickLocked() uint64 {
	wall := uint64(s.cfg.Now().UnixNano())
	if wall > s.clock {
		s.clock = wall
	} else {
		s.clock++
	}
	return s.clock
}

// versionTime is the wall time a version was written at: versions are
// hybrid logical clocks in Unix nanoseconds.
func versionTime(v uint64) time.Time {
	if v > math.MaxInt64 {
		return time.Unix(0, math.MaxInt64)
	}
	return time.Unix(0, int64(v))
}

func (s *Store) observeLocked(v uint64) {
	if v > s.clock {
		s.clock = v
	}
}

func (s *Store) persistLocked() error {
	if s.cfg.Persist == nil {
		return nil
	}
	err := s.cfg.Persist(OwnState{Records: s.ownedLocked(), CollectedUpTo: s.collected, Pins: s.encodePinsLocked()})
	if err == nil {
		s.trust.pinsDirty = false
	}
	return err
}

func (s *Store) changedLocked() {
	s.snap = nil
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Announce gossips this node's current record of kind and id again, with
// its version unchanged: for a record a peer evidently missed (a broadcast
// lost, or not yet repaired by push/pull). It does nothing for a record
// this node does not hold.
func (s *Store) Announce(kind Kind, id string) {
	s.mu.Lock()
	r, ok := s.records[Key{Kind: kind, Owner: s.cfg.Self, ID: id}]
	s.mu.Unlock()
	if ok {
		s.broadcast(r)
	}
}

func (s *Store) broadcast(r Record) {
	s.mu.Lock()
	b := s.cfg.Broadcast
	s.mu.Unlock()
	if b != nil {
		b(r)
	}
}

// setBroadcast replaces the broadcast hook (Cluster sets its queue) and
// returns the previous one.
func (s *Store) setBroadcast(b func(Record)) func(Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.cfg.Broadcast
	s.cfg.Broadcast = b
	return prev
}

func sortRecords(rs []Record) {
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i].Key, rs[j].Key
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Owner != b.Owner {
			return a.Owner < b.Owner
		}
		return a.ID < b.ID
	})
}
