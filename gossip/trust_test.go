package gossip

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func newNodeKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedStore is a store that signs with key, logging into log.
type signedStore struct {
	*Store
	key ed25519.PrivateKey
	log *logBuffer
	own *OwnState // the last persisted state
}

func newSignedStore(t testing.TB, self string, key ed25519.PrivateKey, clock *fakeClock) signedStore {
	t.Helper()
	s := signedStore{key: key, log: &logBuffer{}, own: &OwnState{}}
	s.Store = NewStore(StoreConfig{
		Self:    self,
		Key:     key,
		Now:     clock.Now,
		Log:     slog.New(slog.NewTextHandler(s.log, nil)),
		Persist: func(o OwnState) error { *s.own = o; return nil },
	})
	return s
}

// announce writes the node record, as the daemon does at start.
func (s signedStore) announce(t testing.TB, addr string, started time.Time) Record {
	t.Helper()
	info := NodeInfo{Addr: addr, GossipPort: 7946, Started: started}
	if s.key != nil {
		info.NodeKey = EncodeNodeKey(s.key.Public().(ed25519.PublicKey))
	}
	r, err := s.Put(KindNode, "", info)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func endpoint(addr string) EndpointInfo {
	return EndpointInfo{Subnet: "10.42.0.0/24", Addr: addr, MAC: "02:42:0a:2a:00:05", Healthy: true}
}

// delegateOf gives store's records the two ways peers' bytes arrive: a
// gossip message (NotifyMsg) and a push/pull state (MergeRemoteState).
func delegateOf(t testing.TB, s *Store) *delegate {
	c := &Cluster{
		cfg:          Config{NodeName: s.Self(), Key: testKeyA},
		store:        s,
		peers:        map[string]peer{},
		stop:         make(chan struct{}),
		maxPacketMsg: 1400,
		log:          slog.New(slog.DiscardHandler),
		in:           make(chan inbound, inboundQueue),
	}
	c.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 3 }, RetransmitMult: 4}
	if err := c.setupKeyring(&memberlist.Config{}); err != nil {
		t.Fatal(err)
	}
	return &delegate{c: c}
}

func deliverEveryWay(t testing.TB, s *Store, recs []Record) {
	t.Helper()
	_, _ = s.Merge(recs)
	d := delegateOf(t, s)
	for _, r := range recs {
		d.NotifyMsg(append([]byte{msgRecord}, rawJSON(t, r)...))
		d.c.mergeQueued() // what mergeLoop does
	}
	state, err := EncodeState(recs)
	if err != nil {
		t.Fatal(err)
	}
	d.MergeRemoteState(state, false)
	d.c.mergeQueued()
}

func countLines(log, substr string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// A node holding the gossip key but not b's node key writes as b: an
// endpoint, a new node record (its own tunnel address and key), a delete
// of b's endpoint; and it tampers with one of b's real records. Every
// entry refuses all of it, logs each (owner, reason) once, and counts
// every one.
func TestForgedRecordsAreRefusedAndLoggedOnce(t *testing.T) {
	clock := newFakeClock()
	a := newSignedStore(t, "a", newNodeKey(t), clock)
	b := newSignedStore(t, "b", newNodeKey(t), clock)
	b.announce(t, "198.18.0.2", clock.Now())
	real := mustPut(t, b.Store, KindEndpoint, "ep1", endpoint("10.42.0.5"))
	mustMerge(t, a.Store, b.All())
	before := a.All()

	forger := newNodeKey(t)
	clock.Advance(time.Second)
	v := uint64(clock.Now().UnixNano())
	forgedNode := Record{Key: Key{Kind: KindNode, Owner: "b"}, Version: v,
		Value: rawJSON(t, NodeInfo{Addr: "198.18.0.66", NodeKey: EncodeNodeKey(forger.Public().(ed25519.PublicKey))})}
	forged := []Record{
		sign(Record{Key: Key{Kind: KindEndpoint, Owner: "b", ID: "evil"}, Version: v, Value: rawJSON(t, endpoint("10.42.0.66"))}, forger),
		sign(forgedNode, forger),
		sign(Record{Key: real.Key, Version: v, Deleted: true}, forger),
	}
	tampered := real
	tampered.Value = rawJSON(t, endpoint("10.42.0.67"))
	tampered.Version = v
	unsigned := Record{Key: Key{Kind: KindEndpoint, Owner: "b", ID: "unsigned"}, Version: v, Value: rawJSON(t, endpoint("10.42.0.68"))}

	for range 3 {
		deliverEveryWay(t, a.Store, append(forged, tampered, unsigned))
	}
	if !sameRecords(a.All(), before) {
		t.Fatalf("forged records changed the store:\n%s\nwant\n%s", formatRecords(a.All()), formatRecords(before))
	}
	rej := a.Rejections()
	// 5 records, 3 times, 3 ways each (Merge, messages, state).
	if rej.Total != 5*3*3 {
		t.Errorf("refused %d records, want %d: %v", rej.Total, 5*3*3, rej.ByReason)
	}
	for reason, want := range map[string]uint64{rejectOtherKey: 3 * 3 * 3, rejectBadSig: 9, rejectUnsigned: 9} {
		if rej.ByReason[reason] != want {
			t.Errorf("refused %d for %q, want %d", rej.ByReason[reason], reason, want)
		}
	}
	log := a.log.String()
	for _, reason := range []string{rejectOtherKey, rejectBadSig, rejectUnsigned} {
		if n := countLines(log, reason); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", reason, n, log)
		}
	}
	if pin, _ := a.Pinned("b"); !pin.Equal(b.PublicKey()) {
		t.Error("the forger moved b's pinned key")
	}
}

// A record at version 2^64-1 would win over every later write of its key
// and carry the clock of every node that saw it to the end of time. It is
// refused, even signed by its owner, and the clock does not move.
func TestVersionFarAheadIsRefusedAndClockStays(t *testing.T) {
	clock := newFakeClock()
	a := newSignedStore(t, "a", newNodeKey(t), clock)
	b := newSignedStore(t, "b", newNodeKey(t), clock)
	b.announce(t, "198.18.0.2", clock.Now())
	mustMerge(t, a.Store, b.All())
	mustPut(t, a.Store, kindTest, "x", 1)
	clk := a.Clock()

	wrap := sign(Record{Key: Key{Kind: KindEndpoint, Owner: "b", ID: "ep"}, Version: math.MaxUint64, Value: rawJSON(t, endpoint("10.42.0.5"))}, b.key)
	unsignedWrap := Record{Key: Key{Kind: kindTest, Owner: "old", ID: "k"}, Version: math.MaxUint64, Value: rawJSON(t, 1)}
	twoMinutes := sign(Record{Key: Key{Kind: KindEndpoint, Owner: "b", ID: "ep2"}, Version: uint64(clock.Now().Add(2 * time.Minute).UnixNano()), Value: rawJSON(t, endpoint("10.42.0.6"))}, b.key)
	for range 2 {
		deliverEveryWay(t, a.Store, []Record{wrap, unsignedWrap, twoMinutes})
	}
	if a.Clock() != clk {
		t.Fatalf("clock moved from %d to %d", clk, a.Clock())
	}
	if _, ok := a.Snapshot().Get(KindEndpoint, "b", "ep"); ok {
		t.Fatal("the record at 2^64-1 was stored")
	}
	if got := a.Rejections().ByReason[rejectAhead]; got != 2*3*3 {
		t.Errorf("refused %d as ahead, want %d", got, 2*3*3)
	}
	if n := countLines(a.log.String(), "version too far ahead"); n != 2 { // owners b and old
		t.Errorf("logged %d times, want once per owner:\n%s", n, a.log.String())
	}
	// Within the bound is fine, and the next local write is above it.
	near := sign(Record{Key: Key{Kind: KindEndpoint, Owner: "b", ID: "ep3"}, Version: uint64(clock.Now().Add(30 * time.Second).UnixNano()), Value: rawJSON(t, endpoint("10.42.0.7"))}, b.key)
	mustMerge(t, a.Store, []Record{near})
	if w := mustPut(t, a.Store, kindTest, "x", 2); w.Version <= near.Version {
		t.Errorf("local write v%d not above v%d", w.Version, near.Version)
	}
}

// Rolling upgrade: a node from before signing keeps working with signing
// nodes (its unsigned records are taken while it has never signed, and
// counted), and once it signs, unsigned records in its name are refused.
func TestRollingUpgradeUnsignedThenSigned(t *testing.T) {
	clock := newFakeClock()
	old := newSignedStore(t, "old", nil, clock)
	n1 := newSignedStore(t, "n1", newNodeKey(t), clock)
	old.announce(t, "198.18.0.1", clock.Now())
	mustPut(t, old.Store, KindEndpoint, "ep", endpoint("10.42.0.5"))
	n1.announce(t, "198.18.0.2", clock.Now())
	mustPut(t, n1.Store, KindEndpoint, "ep", endpoint("10.42.0.6"))

	mustMerge(t, n1.Store, old.All())
	mustMerge(t, old.Store, n1.All())
	if _, ok := n1.Snapshot().Get(KindEndpoint, "old", "ep"); !ok {
		t.Fatal("the signing node refused the old node's endpoint")
	}
	if _, ok := old.Snapshot().Get(KindEndpoint, "n1", "ep"); !ok {
		t.Fatal("the old node refused the signing node's endpoint")
	}
	if u := n1.Rejections().Unsigned; u != 2 {
		t.Errorf("counted %d unsigned records, want 2", u)
	}
	if n := countLines(n1.log.String(), "accepting unsigned records"); n != 1 {
		t.Errorf("unsigned acceptance logged %d times, want once", n)
	}

	// The old node is upgraded: same records, now signed with a key.
	clock.Advance(time.Minute)
	up := newSignedStore(t, "old", newNodeKey(t), clock)
	if err := up.Load(*old.own); err != nil {
		t.Fatal(err)
	}
	for _, r := range up.Owned() {
		if !verifySig(r) || !up.PublicKey().Equal(ed25519.PublicKey(r.Signer)) {
			t.Fatalf("loaded record %s not signed again", r.Key)
		}
	}
	up.announce(t, "198.18.0.1", clock.Now())
	mustMerge(t, n1.Store, up.All())
	if pin, ok := n1.Pinned("old"); !ok || !pin.Equal(up.PublicKey()) {
		t.Fatal("the upgraded node's key was not pinned")
	}
	forged := Record{Key: Key{Kind: KindEndpoint, Owner: "old", ID: "evil"}, Version: uint64(clock.Now().UnixNano()), Value: rawJSON(t, endpoint("10.42.0.66"))}
	if _, err := n1.Merge([]Record{forged}); err == nil {
		t.Fatal("an unsigned record in the name of a node that signs was taken")
	}
}

// Two nodes under one name with different keys and addresses: the one
// that started later is refused (its store reports the conflict), the
// first keeps its name and records everywhere, as memberlist refuses a
// live name at another address. Once the first is dead, the name is
// released and the second takes it.
func TestDuplicateNameRefusedWhileAlive(t *testing.T) {
	clock := newFakeClock()
	first := newSignedStore(t, "x", newNodeKey(t), clock)
	c := newSignedStore(t, "c", newNodeKey(t), clock)
	first.announce(t, "198.18.0.1", clock.Now())
	mustPut(t, first.Store, KindEndpoint, "ep", endpoint("10.42.0.5"))
	c.SetMember(Member{Name: "x", Addr: "198.18.0.1", State: StateAlive, NodeKey: EncodeNodeKey(first.PublicKey())})
	mustMerge(t, c.Store, first.All())

	clock.Advance(time.Minute)
	second := newSignedStore(t, "x", newNodeKey(t), clock)
	second.announce(t, "198.18.0.2", clock.Now())
	mustPut(t, second.Store, KindEndpoint, "ep", endpoint("10.42.0.99"))
	cBefore := c.All()

	// The others refuse the second node's records.
	_, _ = c.Merge(second.All())
	if !sameRecords(c.All(), cBefore) {
		t.Fatal("the duplicate's records changed another node's store")
	}
	if n := c.Rejections().ByReason[rejectOtherKey]; n != 2 {
		t.Errorf("c refused %d of the duplicate's records as another key's, want 2: %v", n, c.Rejections().ByReason)
	}
	// The second one learns that the name is taken, and by whom.
	_, _ = second.Merge(c.All())
	select {
	case err := <-second.Conflict():
		for _, want := range []string{"198.18.0.1", "--node-name", "rmpeer"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("conflict %q does not say %q", err, want)
			}
		}
	default:
		t.Fatal("the duplicate was not told its name is taken")
	}
	if r, _ := second.Snapshot().Get(KindEndpoint, "x", "ep"); !strings.Contains(string(r.Value), "10.42.0.99") {
		t.Error("the duplicate adopted the first node's records")
	}
	// The first one is untouched and only logs it, once.
	firstBefore := first.All()
	for range 3 {
		_, _ = first.Merge(second.All())
	}
	select {
	case err := <-first.Conflict():
		t.Fatalf("the first node was told to leave: %v", err)
	default:
	}
	if !sameRecords(first.All(), firstBefore) {
		t.Error("the duplicate's records changed the first node's")
	}
	if n := countLines(first.log.String(), "another node key"); n != 1 {
		t.Errorf("the first node logged the duplicate %d times, want once:\n%s", n, first.log.String())
	}

	// Dead releases the name: the second node takes it, its records
	// with it; copies of the first one's relayed later are dropped
	// without a word.
	c.SetMember(Member{Name: "x", Addr: "198.18.0.1", State: StateDead})
	mustMerge(t, c.Store, second.All())
	if pin, _ := c.Pinned("x"); !pin.Equal(second.PublicKey()) {
		t.Fatal("the name of a dead node did not move to the new key")
	}
	if r, _ := c.Snapshot().Get(KindEndpoint, "x", "ep"); !strings.Contains(string(r.Value), "10.42.0.99") {
		t.Errorf("c's endpoint of x after the name moved: %s", r.Value)
	}
	refused := c.Rejections().Total
	mustMerge(t, c.Store, firstBefore)
	if r, _ := c.Snapshot().Get(KindNode, "x", ""); !strings.Contains(string(r.Value), "198.18.0.2") {
		t.Errorf("a stale copy of the old key's node record moved the name back: %s", r.Value)
	}
	if c.Rejections().Total != refused {
		t.Errorf("copies signed by the retired key were counted as refusals: %v", c.Rejections().ByReason)
	}
}

// A removal (meshctl rmpeer) also releases a name, even on a node that
// has never seen the name's new holder as a member.
func TestRemovedNameTakenByNewKey(t *testing.T) {
	clock := newFakeClock()
	old := newSignedStore(t, "x", newNodeKey(t), clock)
	c := newSignedStore(t, "c", newNodeKey(t), clock)
	old.announce(t, "198.18.0.1", clock.Now())
	mustMerge(t, c.Store, old.All())
	fresh := newSignedStore(t, "x", newNodeKey(t), clock)
	clock.Advance(time.Minute)
	fresh.announce(t, "198.18.0.2", clock.Now())
	// Not a member here, never seen: not released.
	_, _ = c.Merge(fresh.All())
	if pin, _ := c.Pinned("x"); !pin.Equal(old.PublicKey()) {
		t.Fatal("a name this node never saw as a member moved to another key")
	}
	var upTo uint64
	for _, r := range c.All() {
		if r.Owner == "x" {
			upTo = max(upTo, r.Version)
		}
	}
	mustPut(t, c.Store, KindRemoval, "x", Removal{UpTo: upTo, At: clock.Now(), By: "c"})
	mustMerge(t, c.Store, fresh.All())
	if pin, _ := c.Pinned("x"); !pin.Equal(fresh.PublicKey()) {
		t.Fatal("the name did not move to the new key after the removal")
	}
	_, _ = fresh.Merge(c.All())
	select {
	case err := <-fresh.Conflict():
		t.Fatalf("the new node was refused after the old one's removal: %v", err)
	default:
	}
	if r, ok := c.Snapshot().Get(KindNode, "x", ""); !ok || !strings.Contains(string(r.Value), "198.18.0.2") {
		t.Errorf("c's node record for x: %s", r.Value)
	}
}

// A host whose state folder is wiped comes back under its name with a new
// node key, from the same address: after the cluster declared it dead, or
// before (memberlist then has it alive at that address, advertising the
// new key). Either way its peers take the new key, and the host takes its
// earlier run's records back (endpoints, address blocks), signed again
// with its new key, so nothing it held is lost or held twice; no conflict,
// no refusal on either side. A record hidden by a removal stays hidden.
func TestWipedStateRejoinsWithNewKey(t *testing.T) {
	for _, tc := range []struct {
		name                                string
		beforeDeath, mergedFirst, peerFirst bool
	}{
		{"after death", false, false, false},
		{"before death", true, false, false},
		// The peer's push/pull reaches the new run once it listens, before
		// it has written its node record: the earlier run is known by the
		// address alone (the peer replaces the old node record once it has
		// the new one).
		{"before death, merged before its node record", true, true, false},
		// The join's exchange failed on the new run's side after the peer
		// had read its state (a timeout): the peer holds the new node
		// record, so no state the new run ever gets carries the old one;
		// that the peer holds the new run's node record and the old key's
		// records says they are an earlier run's.
		{"after death, the join's answer lost", false, false, true},
	} {
		beforeDeath := tc.beforeDeath
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			x := newSignedStore(t, "x", newNodeKey(t), clock)
			c := newSignedStore(t, "c", newNodeKey(t), clock)
			x.announce(t, "198.18.0.3", clock.Now())
			mustPut(t, x.Store, KindEndpoint, "ep", endpoint("10.42.0.5"))
			mustPut(t, x.Store, KindBlock, "10.42.0.0/26", map[string]string{"subnet": "10.42.0.0/24"})
			gone := mustPut(t, x.Store, KindEndpoint, "gone", endpoint("10.42.0.6"))
			if err := x.Delete(KindEndpoint, "gone"); err != nil {
				t.Fatal(err)
			}
			c.SetMember(Member{Name: "x", Addr: "198.18.0.3", State: StateAlive, NodeKey: EncodeNodeKey(x.PublicKey())})
			mustMerge(t, c.Store, x.All())

			// x is killed, its state folder wiped; it starts again with a
			// new node key from the same address.
			clock.Advance(time.Minute)
			wiped := newSignedStore(t, "x", newNodeKey(t), clock)
			wiped.SetOwnAddress("198.18.0.3", 7946)
			if tc.mergedFirst {
				wiped.SetMember(Member{Name: "c", Addr: "198.18.0.9", State: StateAlive})
				mustMerge(t, wiped.Store, c.All())
			}
			wiped.announce(t, "198.18.0.3", clock.Now())
			wiped.SetMember(Member{Name: "c", Addr: "198.18.0.9", State: StateAlive})
			if beforeDeath {
				// Memberlist on c has x alive still, at its address; the
				// new key's node record comes before its refutation
				// (which carries the new key's metadata): refused; after
				// it, taken.
				_, _ = c.Merge(wiped.All())
				if pin, _ := c.Pinned("x"); !pin.Equal(x.PublicKey()) {
					t.Fatal("the name moved before the member at its address advertised the new key")
				}
				c.SetMember(Member{Name: "x", Addr: "198.18.0.3", State: StateAlive, NodeKey: EncodeNodeKey(wiped.PublicKey())})
			} else {
				c.SetMember(Member{Name: "x", Addr: "198.18.0.3", State: StateDead})
			}
			if tc.peerFirst {
				mustMerge(t, c.Store, wiped.All())
				if r, _ := c.Snapshot().Get(KindNode, "x", ""); !bytes.Equal(r.Signer, wiped.PublicKey()) {
					t.Fatal("the peer still holds the earlier run's node record")
				}
			}
			refusedBefore := c.Rejections().Total
			// The join's push/pull, both ways, then once more.
			mustMerge(t, wiped.Store, c.All())
			mustMerge(t, c.Store, wiped.All())
			mustMerge(t, wiped.Store, c.All())
			select {
			case err := <-wiped.Conflict():
				t.Fatalf("the wiped host was refused its own name: %v", err)
			default:
			}
			if pin, _ := c.Pinned("x"); !pin.Equal(wiped.PublicKey()) {
				t.Fatal("the peer did not take the wiped host's new key")
			}
			for _, s := range []signedStore{wiped, c} {
				snap := s.Snapshot()
				for _, k := range []Key{{Kind: KindEndpoint, Owner: "x", ID: "ep"}, {Kind: KindBlock, Owner: "x", ID: "10.42.0.0/26"}} {
					r, ok := snap.Get(k.Kind, k.Owner, k.ID)
					if !ok {
						t.Errorf("%s lost %s", s.Self(), k)
						continue
					}
					if !verifySig(r) || !bytes.Equal(r.Signer, wiped.PublicKey()) {
						t.Errorf("%s holds %s signed by %s, want the new key", s.Self(), k, EncodeNodeKey(r.Signer))
					}
				}
				if _, ok := snap.Get(KindEndpoint, "x", gone.ID); ok {
					t.Errorf("%s has the deleted endpoint back", s.Self())
				}
			}
			if !sameRecords(wiped.All(), c.All()) {
				t.Errorf("the two stores differ:\n%s\nand\n%s", formatRecords(wiped.All()), formatRecords(c.All()))
			}
			if n := c.Rejections().Total - refusedBefore; n != 0 {
				t.Errorf("the peer refused %d records of the wiped host: %v", n, c.Rejections().ByReason)
			}
			if n := wiped.Rejections().Total; n != 0 {
				t.Errorf("the wiped host refused %d records: %v", n, wiped.Rejections().ByReason)
			}
			// A later copy of the old key's records, from a peer that has
			// not caught up, changes nothing and is not counted.
			before := c.All()
			mustMerge(t, c.Store, x.All())
			if !sameRecords(c.All(), before) || c.Rejections().Total != refusedBefore {
				t.Errorf("an old copy changed the peer or was counted: %v", c.Rejections().ByReason)
			}
		})
	}
}

// A node that kept its state folder never adopts records of another key,
// even from its own address (a key holder could hand it made-up history);
// and a node that started empty stops adopting newcomerWindow after its
// first full state.
func TestEarlierRunRecordsAdoptedOnlyByAFreshNode(t *testing.T) {
	clock := newFakeClock()
	x := newSignedStore(t, "x", newNodeKey(t), clock)
	x.announce(t, "198.18.0.3", clock.Now())
	mustPut(t, x.Store, KindEndpoint, "ep", endpoint("10.42.0.5"))
	old := x.All()
	clock.Advance(time.Minute)

	kept := newSignedStore(t, "x", newNodeKey(t), clock)
	if err := kept.Load(OwnState{Records: []Record{old[0]}}); err != nil { // its endpoint only
		t.Fatal(err)
	}
	kept.announce(t, "198.18.0.3", clock.Now())
	before := kept.All()
	mustMerge(t, kept.Store, old)
	if !sameRecords(kept.All(), before) {
		t.Errorf("a node that kept its state adopted another key's records:\n%s", formatRecords(kept.All()))
	}

	late := newSignedStore(t, "x", newNodeKey(t), clock)
	late.announce(t, "198.18.0.3", clock.Now())
	late.HeardState()
	clock.Advance(newcomerWindow)
	mustMerge(t, late.Store, old)
	if _, ok := late.Snapshot().Get(KindEndpoint, "x", "ep"); ok {
		t.Error("a node adopted another key's records long after it joined")
	}
}

// A record in this node's name signed by another key whose node record
// names another address is no earlier run of this node: a newcomer under
// a taken name is told (the conflict), and a forger's node record that
// names this node's address but was written after it started is refused.
func TestOwnNameFromAnotherAddressIsNoEarlierRun(t *testing.T) {
	clock := newFakeClock()
	x := newSignedStore(t, "x", newNodeKey(t), clock)
	x.announce(t, "198.18.0.3", clock.Now())
	clock.Advance(time.Minute)
	dup := newSignedStore(t, "x", newNodeKey(t), clock)
	dup.announce(t, "198.18.0.4", clock.Now())
	_, _ = dup.Merge(x.All())
	select {
	case <-dup.Conflict():
	default:
		t.Fatal("a newcomer took a live node's records from another address as its own")
	}

	forger := newNodeKey(t)
	clock.Advance(time.Second)
	forged := sign(Record{Key: Key{Kind: KindNode, Owner: "x"}, Version: uint64(clock.Now().UnixNano()),
		Value: rawJSON(t, NodeInfo{Addr: "198.18.0.3", GossipPort: 7946, NodeKey: EncodeNodeKey(forger.Public().(ed25519.PublicKey))})}, forger)
	if _, err := x.Merge([]Record{forged}); err == nil {
		t.Fatal("a node record in this node's name from another key, written while it runs, was taken")
	}
}

// Start times come from two clocks: a node that has been in its cluster
// longer than a newcomer is keeps its name even when the duplicate's
// clock is behind and claims an earlier start.
func TestDuplicateNameWithSkewedClockLeavesTheEstablishedNode(t *testing.T) {
	clock := newFakeClock()
	first := newSignedStore(t, "x", newNodeKey(t), clock)
	first.announce(t, "198.18.0.1", clock.Now())
	first.SetMember(Member{Name: "c", State: StateAlive})
	clock.Advance(newcomerWindow + time.Minute)

	second := newSignedStore(t, "x", newNodeKey(t), clock)
	second.announce(t, "198.18.0.2", clock.Now().Add(-time.Hour)) // its clock is an hour behind
	_, _ = first.Merge(second.All())
	select {
	case err := <-first.Conflict():
		t.Fatalf("the established node was told to leave: %v", err)
	default:
	}
	if n := countLines(first.log.String(), "uses this node's name"); n != 1 {
		t.Errorf("the established node logged the duplicate %d times, want once", n)
	}
}

// A node restarted with its key (same or new address, with or without its
// records) is the same node: peers take its records, and it takes back its
// own from them without any conflict.
func TestRestartWithSameKeyKeepsName(t *testing.T) {
	clock := newFakeClock()
	key := newNodeKey(t)
	x := newSignedStore(t, "x", key, clock)
	c := newSignedStore(t, "c", newNodeKey(t), clock)
	x.announce(t, "198.18.0.1", clock.Now())
	mustPut(t, x.Store, KindEndpoint, "ep", endpoint("10.42.0.5"))
	c.SetMember(Member{Name: "x", State: StateAlive})
	mustMerge(t, c.Store, x.All())

	for _, keepRecords := range []bool{true, false} {
		clock.Advance(time.Minute)
		back := newSignedStore(t, "x", key, clock)
		if keepRecords {
			if err := back.Load(*x.own); err != nil {
				t.Fatal(err)
			}
		}
		back.announce(t, "198.18.0.9", clock.Now()) // a new address
		mustMerge(t, c.Store, back.All())
		mustMerge(t, back.Store, c.All())
		select {
		case err := <-back.Conflict():
			t.Fatalf("restart (records kept: %v) refused: %v", keepRecords, err)
		default:
		}
		if _, ok := back.Snapshot().Get(KindEndpoint, "x", "ep"); !ok {
			t.Errorf("restart (records kept: %v): own endpoint not back", keepRecords)
		}
		if r, _ := c.Snapshot().Get(KindNode, "x", ""); !strings.Contains(string(r.Value), "198.18.0.9") {
			t.Errorf("restart (records kept: %v): peer did not take the new node record", keepRecords)
		}
		if c.Rejections().Total != 0 {
			t.Errorf("peer refused records: %v", c.Rejections().ByReason)
		}
	}
}

// Removals are taken only from writers that are alive, and never for a
// node that is alive and has not announced itself since.
func TestRemovalNeedsDeadNode(t *testing.T) {
	clock := newFakeClock()
	a := newSignedStore(t, "a", newNodeKey(t), clock)
	w := newSignedStore(t, "w", newNodeKey(t), clock)
	v := newSignedStore(t, "v", newNodeKey(t), clock)
	w.announce(t, "198.18.0.2", clock.Now())
	v.announce(t, "198.18.0.3", clock.Now())
	mustMerge(t, a.Store, append(w.All(), v.All()...))
	a.SetMember(Member{Name: "v", State: StateAlive})
	clock.Advance(time.Second)
	rm := mustPut(t, w.Store, KindRemoval, "v", Removal{UpTo: w.Clock(), At: clock.Now(), By: "w"})

	// The writer is not alive here (a relay brought it): still the
	// removal of a live node is refused.
	if _, err := a.Merge([]Record{rm}); err == nil || !strings.Contains(err.Error(), "which is alive") {
		t.Fatalf("removal of a live node: %v", err)
	}
	a.SetMember(Member{Name: "v", State: StateDead})
	mustMerge(t, a.Store, []Record{rm})
	if a.Snapshot().Removed["v"] == 0 {
		t.Fatal("removal of a dead node not taken from a writer this node does not see")
	}

	// A node started after the removal takes it as history, even with the
	// writer gone: it must agree with those that took it at the time.
	clock.Advance(time.Second)
	late := newSignedStore(t, "late", newNodeKey(t), clock)
	late.SetMember(Member{Name: "w", State: StateDead})
	mustMerge(t, late.Store, append(append(w.All(), v.All()...), rm))
	if late.Snapshot().Removed["v"] == 0 {
		t.Fatal("a node started after the removal did not take it")
	}
}

// A host back with a wiped state folder at another address takes its
// earlier run's records when a peer reported its name dead or left at the
// old address (the join's member list); without that word, a node record
// of its name at another address is a live duplicate's.
func TestEarlierRunAtAnotherAddressSeenDead(t *testing.T) {
	clock := newFakeClock()
	x := newSignedStore(t, "x", newNodeKey(t), clock)
	x.announce(t, "198.18.0.3", clock.Now())
	mustPut(t, x.Store, KindEndpoint, "ep", endpoint("10.42.0.5"))
	clock.Advance(time.Minute)

	back := newSignedStore(t, "x", newNodeKey(t), clock)
	back.announce(t, "198.18.0.7", clock.Now())
	back.noteEarlierRun("198.18.0.3", 7946)
	mustMerge(t, back.Store, x.All())
	select {
	case err := <-back.Conflict():
		t.Fatalf("refused after its old address was reported dead: %v", err)
	default:
	}
	if r, ok := back.Snapshot().Get(KindEndpoint, "x", "ep"); !ok || !bytes.Equal(r.Signer, back.PublicKey()) {
		t.Errorf("the earlier run's endpoint was not adopted under the new key: %v", ok)
	}

	dup := newSignedStore(t, "x", newNodeKey(t), clock)
	dup.announce(t, "198.18.0.8", clock.Now())
	dup.noteEarlierRun("198.18.0.99", 7946) // some other address
	_, _ = dup.Merge(x.All())
	select {
	case <-dup.Conflict():
	default:
		t.Fatal("a node record of this name at an address nobody reported gone was taken as an earlier run")
	}
}
