package gossip

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"
)

// Admission: what a peer's record must pass before Merge lets it in.
// doc.go ("Records bound to their owner") states the rules and what they
// do and do not protect against; this file implements them.

// DefaultMaxClockAhead bounds how far ahead of this node's wall clock a
// peer's version (a hybrid logical clock in Unix nanoseconds) may be. A
// record further ahead is refused and the local clock never jumps to it:
// one record at 2^64-1 would otherwise win over every later write of its
// key and carry every node's clock to the end of time. A minute is far
// above the skew of hosts that run NTP and far below the harm of a frozen
// key; a host whose clock runs further ahead than that has its records
// refused, and the log says why.
const DefaultMaxClockAhead = time.Minute

// Reasons a peer's record is refused. Each is logged once per owner
// (rejectLocked) and counted (Store.Rejections, meshctl status).
const (
	rejectMalformed   = "malformed record"
	rejectAhead       = "version too far ahead of this node's clock (check the writer's clock and NTP)"
	rejectValue       = "invalid value"
	rejectBadSig      = "bad signature"
	rejectUnsigned    = "unsigned record from a node that signs its records"
	rejectOtherKey    = "signed by another key than the one pinned for the owner's name"
	rejectNodeKey     = "node record names another node key than its signer"
	rejectOwnName     = "record of this node's name signed by another node key (another node uses this name)"
	rejectRemovalBy   = "removal written by a node that is not alive"
	rejectRemovalLive = "removal of a node that is alive"
)

// maxRejectKeys bounds the (owner, reason) pairs remembered for logging:
// owners are whatever a peer writes, so the set must not grow without end.
const maxRejectKeys = 1024

// Rejections counts the records this node refused, by reason, since it
// started. Unsigned counts records accepted without a signature under the
// upgrade rule.
type Rejections struct {
	Total    uint64            `json:"total"`
	ByReason map[string]uint64 `json:"by_reason,omitempty"`
	Unsigned uint64            `json:"unsigned_accepted"`
}

type rejectKey struct{ owner, reason string }

// trust is the Store's state for admission, under Store.mu.
type trust struct {
	key        ed25519.PrivateKey // nil: this node does not sign (tests: a node from before signing)
	pub        ed25519.PublicKey
	pins       map[string]ed25519.PublicKey // node name -> the key pinned to it
	pinsDirty  bool                         // a pin changed: persist
	logged     map[rejectKey]bool
	full       bool // logged reached maxRejectKeys (said once)
	counts     Rejections
	unsigned   map[string]bool // owners whose unsigned records were accepted (logged once)
	conflict   chan error      // the identity conflict, sent once (Store.Conflict)
	conflicted bool
	runStart   uint64    // the wall clock when this run started (NewStore)
	firstPeer  time.Time // when another member was first up (SetMember)

	// A name's key changes (pinMovesLocked, earlierRunLocked).
	fresh   bool                // no own records were loaded: this run began with an empty state folder
	heardAt time.Time           // the first full state merged from a peer (HeardState)
	earlier map[string]bool     // node keys of earlier runs of this node (base64)
	goneAt  map[string]bool     // addr:port where peers saw this node's name dead or left (noteEarlierRun)
	ownAddr string              // this run's gossip addr:port, known before its node record (SetOwnAddress)
	retired map[retiredKey]bool // keys a name's pin moved away from
}

// retiredKey is a node key a name's pin moved away from: records it signed
// are superseded (the new key's node record, the records the node adopted
// again), so copies still relayed are dropped without a word.
type retiredKey struct{ owner, key string }

// quietSkip is admitLocked's reason for a record dropped without counting
// or logging: a copy signed by a key its owner no longer uses, relayed by
// a peer that has not caught up yet. It is no attack and no news.
const quietSkip = "-"

// admitLocked decides whether a peer's record may enter the store. It
// returns the reason and the detail when not. It pins a key seen for the
// first time for a name (trust on first use).
//
// peerPinsThisRun says that the batch r came in holds this node's own node
// record under this run's key (peerPinsThisRunLocked): records of this
// node's name under another key in it are an earlier run's.
func (s *Store) admitLocked(r Record, peerPinsThisRun bool) (string, error) {
	if err := r.validate(); err != nil {
		return rejectMalformed, err
	}
	if limit := uint64(s.cfg.Now().UnixNano()) + uint64(s.cfg.MaxClockAhead); r.Version > limit {
		return rejectAhead, fmt.Errorf("record %s at version %d (%s) is more than %s ahead of this node's clock",
			r.Key, r.Version, versionTime(r.Version).UTC().Format(time.RFC3339), s.cfg.MaxClockAhead)
	}
	if err := checkValue(r); err != nil {
		return rejectValue, err
	}
	if reason, err := s.authenticateLocked(r, peerPinsThisRun); reason != "" {
		return reason, err
	}
	if r.Kind == KindRemoval && !r.Deleted {
		return s.checkRemovalLocked(r)
	}
	return "", nil
}

// authenticateLocked checks the record's signature and that its signer
// may write for the owner's name.
func (s *Store) authenticateLocked(r Record, peerPinsThisRun bool) (string, error) {
	t := &s.trust
	pin, pinned := t.pins[r.Owner]
	if len(r.Signer) == 0 {
		// The upgrade rule: a node that has never been seen signing is
		// taken to run a version from before signing. Once it has signed,
		// unsigned records in its name are forgeries.
		if pinned {
			return rejectUnsigned, fmt.Errorf("record %s is unsigned, but %s signs its records", r.Key, r.Owner)
		}
		if r.Kind == KindNode && !r.Deleted && nodeKeyOf(r) != "" {
			return rejectNodeKey, fmt.Errorf("unsigned node record %s names a node key", r.Key)
		}
		t.counts.Unsigned++
		if !t.unsigned[r.Owner] && len(t.unsigned) < maxRejectKeys {
			t.unsigned[r.Owner] = true
			s.cfg.Log.Info("accepting unsigned records from a node that does not sign yet (a version from before signed records; upgrade it)", "node", r.Owner)
		}
		return "", nil
	}
	if !verifySig(r) {
		return rejectBadSig, fmt.Errorf("record %s: signature does not verify", r.Key)
	}
	if r.Kind == KindNode && !r.Deleted && nodeKeyOf(r) != EncodeNodeKey(r.Signer) {
		return rejectNodeKey, fmt.Errorf("node record %s names key %q, signed by %s", r.Key, nodeKeyOf(r), EncodeNodeKey(r.Signer))
	}
	if r.Owner == s.cfg.Self && t.key != nil && !bytes.Equal(r.Signer, t.pub) {
		if s.earlierRunLocked(r, peerPinsThisRun) {
			return "", nil // Merge adopts it or lets it be (store.go)
		}
		return rejectOwnName, s.ownNameLocked(r)
	}
	switch {
	case !pinned:
		t.pins[r.Owner] = append(ed25519.PublicKey(nil), r.Signer...)
		t.pinsDirty = true
	case bytes.Equal(pin, r.Signer):
	case r.Kind == KindNode && !r.Deleted && s.pinMovesLocked(r, pin):
	case t.retired[retiredKey{owner: r.Owner, key: EncodeNodeKey(r.Signer)}]:
		return quietSkip, nil
	default:
		return rejectOtherKey, fmt.Errorf("record %s is signed by %s, but %s is pinned to %s while that node is alive (another node uses its name; a host restarted without its node.key is taken once the cluster sees its old run dead, or at once from the same address)",
			r.Key, EncodeNodeKey(r.Signer), r.Owner, EncodeNodeKey(pin))
	}
	return "", nil
}

// pinMovesLocked decides whether a node record of another node, validly
// signed by a key other than the one pinned to its name, takes the name
// (and moves the pin, reporting true). Node keys live in the state folder,
// and a host whose folder was wiped (or that was reinstalled) comes back
// under its name with a new key; a second node under a live node's name
// must not. The rule follows memberlist, which refuses a live name at
// another address and lets a dead or departed one go:
//
//   - the record must be newer than the node record held for the name, so
//     a stale copy of an older key's node record never moves the pin back;
//   - the name is dead or left here: whoever held it is gone, so the pin
//     is released (a returning host with a new key is a fresh identity).
//     A name this node has not seen as a member in this run is not
//     released: nothing says its holder is gone; or
//   - the name is alive here, and memberlist has it at the address the
//     record names with the new key in its metadata (identity.go): the
//     same host, restarted before the cluster declared it dead; or
//   - the name was removed (meshctl rmpeer) and the record comes above the
//     removal.
//
// Everything else (a live name claimed from another address, or with a
// key its member does not advertise) is refused.
func (s *Store) pinMovesLocked(r Record, pin ed25519.PublicKey) bool {
	if cur, ok := s.records[r.Key]; ok && !newer(r, cur) {
		return false
	}
	info, _ := DecodeNode(r) // checkValue parsed it
	newKey := EncodeNodeKey(r.Signer)
	m, known := s.members[r.Owner]
	var why string
	switch {
	case aboveRemoval(r.Version, s.removedUpToLocked(r.Owner)):
		why = "its name was removed (meshctl rmpeer) before"
	case !known:
		// Never seen in this run: nothing says its holder is gone. It
		// is taken once memberlist reports it alive with the key.
		return false
	case !m.State.Up():
		why = "its name is " + string(m.State) + " here: a host back with a new node key (state folder wiped or reinstalled)"
	case m.NodeKey == newKey && m.Addr == info.Addr:
		why = "the member alive at " + m.Addr + " advertises the new key: the same host restarted with a wiped state folder"
	default:
		return false
	}
	t := &s.trust
	s.cfg.Log.Warn("a node name moves to a new node key", "node", r.Owner, "old_key", EncodeNodeKey(pin), "new_key", newKey, "addr", info.Addr, "because", why)
	if len(t.retired) < maxRejectKeys {
		t.retired[retiredKey{owner: r.Owner, key: EncodeNodeKey(pin)}] = true
	}
	delete(t.retired, retiredKey{owner: r.Owner, key: newKey})
	t.pins[r.Owner] = append(ed25519.PublicKey(nil), r.Signer...)
	t.pinsDirty = true
	return true
}

// earlierRunLocked reports whether a record in this node's name, signed by
// another node key, was written by an earlier run of this node. It
// predates this run, and either
//
//   - its key's node record names this node's own address and gossip port,
//     or one where a peer saw this name dead or left (noteEarlierRun): two
//     live processes cannot share an address and port, so that run is over
//     (its state folder was wiped or its node.key lost); or
//   - it came in one batch with this node's own node record under this
//     run's key (peerPinsThisRun): the peer it came from holds both, so it
//     moved the name's pin from that key to this run's (pinMovesLocked: the
//     name was dead or left there, or alive at this address with this key
//     in its metadata, or removed), and what it still holds under the old
//     key is that run's history, kept for this node to take back.
//
// The second is what a node that missed the first relies on: once a peer
// has this run's node record it drops the earlier run's, so only the
// peer's states from before that carry it, and the exchange that delivered
// this run's node record to the peer may have failed on this side (a
// timeout after the peer read it). Such a key's records are this node's
// own history: a node that started with an empty state folder adopts them,
// signing them again with its own key (Store.Merge); one that kept its
// state drops them.
func (s *Store) earlierRunLocked(r Record, peerPinsThisRun bool) bool {
	t := &s.trust
	key := EncodeNodeKey(r.Signer)
	if r.Version >= t.runStart {
		return false // written while this run is alive: not an earlier one
	}
	if t.earlier[key] {
		return true
	}
	if len(t.earlier) >= maxRejectKeys {
		return false
	}
	if peerPinsThisRun {
		s.noteEarlierKeyLocked(key, "a peer holds this run's node record and records of this name under that key", "record", r.Key.String())
		return true
	}
	if r.Kind != KindNode || r.Deleted {
		return false
	}
	theirs, _ := DecodeNode(r) // checkValue parsed it
	theirAddr := net.JoinHostPort(theirs.Addr, strconv.Itoa(theirs.GossipPort))
	// This run's address: its node record's, or before that is written
	// the one the Cluster listens on (a peer's push/pull can arrive in
	// between).
	mine := t.ownAddr
	if cur, ok := s.records[Key{Kind: KindNode, Owner: s.cfg.Self}]; ok && !cur.Deleted {
		if info, err := DecodeNode(cur); err == nil {
			mine = net.JoinHostPort(info.Addr, strconv.Itoa(info.GossipPort))
		}
	}
	if mine == "" || theirAddr != mine && !t.goneAt[theirAddr] {
		return false
	}
	s.noteEarlierKeyLocked(key, "its node record names this node's address", "addr", theirAddr, "started", theirs.Started.Format(time.RFC3339))
	return true
}

// noteEarlierKeyLocked records key as an earlier run's and says so once.
func (s *Store) noteEarlierKeyLocked(key, because string, attrs ...any) {
	s.trust.earlier[key] = true
	s.cfg.Log.Info("this node's name was used by an earlier run of this host with another node key (its state folder was wiped or its node.key lost)",
		append([]any{"node_key", EncodeNodeKey(s.trust.pub), "earlier_key", key, "because", because, "adopts_its_records", s.adoptingLocked()}, attrs...)...)
}

// peerPinsThisRunLocked reports whether recs, one batch from a peer, hold
// this node's own node record signed by this run's key (earlierRunLocked).
func (s *Store) peerPinsThisRunLocked(recs []Record) bool {
	if s.trust.key == nil {
		return false
	}
	return slices.ContainsFunc(recs, func(r Record) bool {
		return r.Kind == KindNode && r.Owner == s.cfg.Self && !r.Deleted && bytes.Equal(r.Signer, s.trust.pub) && verifySig(r)
	})
}

// SetOwnAddress tells the store the address and gossip port this run
// listens on, before its node record says so (the Cluster calls it before
// memberlist starts listening): a record of an earlier run at that address
// can then be recognised in the first merge (earlierRunLocked).
func (s *Store) SetOwnAddress(addr string, port int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trust.ownAddr = net.JoinHostPort(addr, strconv.Itoa(port))
}

// noteEarlierRun records that a peer saw this node's name dead or left at
// addr:port, another address than this run's (the Cluster's
// mergeDelegate): a node record of its name naming that address is an
// earlier run's, not a live duplicate's.
func (s *Store) noteEarlierRun(addr string, port int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.trust.goneAt) < maxRejectKeys {
		s.trust.goneAt[net.JoinHostPort(addr, strconv.Itoa(port))] = true
	}
}

// adoptingLocked: this node started with an empty state folder and has not
// yet been in its cluster for newcomerWindow since its first full state
// (the join's push/pull carries everything peers hold in its name). Only
// then does it take records of an earlier run's key as its own; later, a
// key holder could hand it made-up history.
func (s *Store) adoptingLocked() bool {
	t := &s.trust
	return t.fresh && (t.heardAt.IsZero() || s.cfg.Now().Sub(t.heardAt) < newcomerWindow)
}

// AwaitingOwnRecords says whether this node started with an empty state
// folder and has not merged a full state from a peer yet: until then it
// cannot tell which of the host's kernel objects are its own. The first full
// state carries everything peers hold in its name, and the merge adopts it
// (adoptingLocked), so the wait ends there; the adoption window goes on for
// what arrives late, but a fresh node must not hold back its deletes for it
// (a removed container's entries would linger on a new node).
func (s *Store) AwaitingOwnRecords() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trust.fresh && s.trust.heardAt.IsZero()
}

// HeardState notes that a full state from a peer was merged (the Cluster
// calls it after every push/pull; the first one counts).
func (s *Store) HeardState() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trust.heardAt.IsZero() {
		s.trust.heardAt = s.cfg.Now()
	}
}

// ownNameLocked handles a validly signed record in this node's name from
// another key: another node uses this name. The node that started later
// is the duplicate. If that is this node, the conflict is reported
// (Store.Conflict; the daemon exits); otherwise the record is only refused.
// A name removed by rmpeer does not count: its old records are history.
func (s *Store) ownNameLocked(r Record) error {
	if r.Kind != KindNode || r.Deleted || r.Version <= s.removedUpToLocked(s.cfg.Self) {
		return fmt.Errorf("record %s is signed by another node key (%s) than this node's", r.Key, EncodeNodeKey(r.Signer))
	}
	theirs, _ := DecodeNode(r) // checkValue parsed it
	var mine NodeInfo
	cur, haveMine := s.records[Key{Kind: KindNode, Owner: s.cfg.Self}]
	if haveMine {
		var err error
		mine, err = DecodeNode(cur)
		haveMine = err == nil
	}
	where := theirs.Addr
	if theirs.GossipPort != 0 {
		where = fmt.Sprintf("%s port %d", theirs.Addr, theirs.GossipPort)
	}
	// Start times come from two hosts' clocks: a node that has been in
	// its cluster for longer than a newcomer is (it has had a peer for
	// newcomerWindow) is the one that was there first, whatever the
	// other's clock says.
	established := !s.trust.firstPeer.IsZero() && s.cfg.Now().Sub(s.trust.firstPeer) >= newcomerWindow
	if established || (haveMine && !theirs.Started.Before(mine.Started)) {
		return fmt.Errorf("the node at %s (node key %s, started %s) uses this node's name; its records are refused",
			where, theirs.NodeKey, theirs.Started.Format(time.RFC3339))
	}
	err := fmt.Errorf("node name %q is already taken by the node at %s (node key %s, started %s): start this node with a name of its own (--node-name); if that node is an earlier installation of this host and gone for good, run `meshctl rmpeer %s` on another node first, or restore its node.key",
		s.cfg.Self, where, theirs.NodeKey, theirs.Started.Format(time.RFC3339), s.cfg.Self)
	if !s.trust.conflicted {
		s.trust.conflicted = true
		s.trust.conflict <- err // buffered, sent once
	}
	return err
}

// checkRemovalLocked: a removal takes a node's records out of every view
// and hands its address blocks to an heir, so it is never taken for a node
// that is alive and has not announced itself since (a node that came back
// after its removal writes its node record above it). Its writer is bound
// by its signature, not by being alive here: a removal must reach every
// node, also one that hears of it through a relay after its writer left
// or while it is cut off from it, or the nodes would disagree on who holds
// the removed node's address blocks (the ipam simulation finds exactly
// that when writers must be alive).
func (s *Store) checkRemovalLocked(r Record) (string, error) {
	rm, _ := DecodeRemoval(r) // checkValue parsed it
	switch {
	case r.ID == s.cfg.Self:
		// This node is alive: a removal of it is history only if it
		// hides nothing written since this run started.
		if rm.UpTo >= s.trust.runStart {
			return rejectRemovalLive, fmt.Errorf("removal %s of this node, up to version %d, written while it runs", r.Key, rm.UpTo)
		}
	case s.upLocked(r.ID):
		if n, ok := s.records[Key{Kind: KindNode, Owner: r.ID}]; !ok || n.Version <= rm.UpTo {
			return rejectRemovalLive, fmt.Errorf("removal %s of %s, which is alive", r.Key, r.ID)
		}
	}
	return "", nil
}

// aboveRemoval: a version written after a removal up to upTo (0: none).
func aboveRemoval(v, upTo uint64) bool { return upTo > 0 && v > upTo }

func (s *Store) upLocked(node string) bool {
	m, ok := s.members[node]
	return ok && m.State.Up()
}

// removedUpToLocked is the highest version up to which a removal hides
// node's records (0: never removed).
func (s *Store) removedUpToLocked(node string) uint64 {
	var upTo uint64
	for k, r := range s.records {
		if k.Kind != KindRemoval || k.ID != node || r.Deleted {
			continue
		}
		if rm, err := DecodeRemoval(r); err == nil && rm.UpTo > upTo {
			upTo = rm.UpTo
		}
	}
	return upTo
}

// rejectLocked counts a refused record and logs it the first time its
// owner has it refused for this reason: a peer that keeps sending the same
// bad records must not flood the log.
func (s *Store) rejectLocked(owner, reason string, err error) {
	t := &s.trust
	t.counts.Total++
	if t.counts.ByReason == nil {
		t.counts.ByReason = make(map[string]uint64)
	}
	t.counts.ByReason[reason]++
	k := rejectKey{owner: owner, reason: reason}
	if t.logged[k] {
		return
	}
	if len(t.logged) >= maxRejectKeys {
		if !t.full {
			t.full = true
			s.cfg.Log.Warn("refused records from too many owners to log each; counting them only (meshctl status)")
		}
		return
	}
	t.logged[k] = true
	s.cfg.Log.Warn("refused a record; further ones from this owner for this reason are only counted (meshctl status)",
		"owner", owner, "reason", reason, "err", err)
}

// Rejections returns the counts of refused records since the start.
func (s *Store) Rejections() Rejections {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.trust.counts
	out.ByReason = make(map[string]uint64, len(s.trust.counts.ByReason))
	for k, v := range s.trust.counts.ByReason {
		out.ByReason[k] = v
	}
	return out
}

// Conflict delivers, once, the error that this node's name is already
// taken in the cluster by a node that started before it (another node
// key). The node must then stay out: the daemon exits with it.
func (s *Store) Conflict() <-chan error { return s.trust.conflict }

// PublicKey returns the node key that signs this node's records (nil when
// the store does not sign).
func (s *Store) PublicKey() ed25519.PublicKey { return s.trust.pub }

// Pinned returns the node key pinned to a name, if any.
func (s *Store) Pinned(node string) (ed25519.PublicKey, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.trust.pins[node]
	return k, ok
}

// signLocked signs a record this node writes (when it has a key).
func (s *Store) signLocked(r Record) Record {
	if s.trust.key == nil {
		return r
	}
	return sign(r, s.trust.key)
}

// encodePins is how pins are kept in OwnState (base64 keys by name).
func (s *Store) encodePinsLocked() map[string]string {
	if len(s.trust.pins) == 0 {
		return nil
	}
	out := make(map[string]string, len(s.trust.pins))
	for n, k := range s.trust.pins {
		out[n] = EncodeNodeKey(k)
	}
	return out
}

func nodeKeyOf(r Record) string {
	n, err := DecodeNode(r)
	if err != nil {
		return ""
	}
	return n.NodeKey
}
