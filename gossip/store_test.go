package gossip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for StoreConfig.Now. It starts at a
// realistic wall time, because versions are hybrid logical clocks that carry
// the writer's wall time in nanoseconds.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// recorder captures what a Store persists and broadcasts.
type recorder struct {
	mu          sync.Mutex
	persisted   []OwnState
	broadcasts  []Record
	failPersist error
}

func (r *recorder) persist(own OwnState) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failPersist != nil {
		return r.failPersist
	}
	r.persisted = append(r.persisted, own)
	return nil
}

func (r *recorder) broadcast(rec Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.broadcasts = append(r.broadcasts, rec)
}

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failPersist = err
}

func (r *recorder) counts() (persisted, broadcasts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.persisted), len(r.broadcasts)
}

func (r *recorder) lastPersisted(t *testing.T) OwnState {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.persisted) == 0 {
		t.Fatal("nothing was persisted")
	}
	return r.persisted[len(r.persisted)-1]
}

func (r *recorder) lastBroadcast(t *testing.T) Record {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.broadcasts) == 0 {
		t.Fatal("nothing was broadcast")
	}
	return r.broadcasts[len(r.broadcasts)-1]
}

type testStore struct {
	*Store
	clock *fakeClock
	rec   *recorder
}

func newTestStore(t *testing.T, self string, clock *fakeClock) testStore {
	t.Helper()
	if clock == nil {
		clock = newFakeClock()
	}
	rec := &recorder{}
	s := NewStore(StoreConfig{
		Self:         self,
		TombstoneTTL: time.Hour,
		Persist:      rec.persist,
		Broadcast:    rec.broadcast,
		Now:          clock.Now,
	})
	return testStore{Store: s, clock: clock, rec: rec}
}

func mustPut(t *testing.T, s *Store, kind Kind, id string, v any) Record {
	t.Helper()
	r, err := s.Put(kind, id, v)
	if err != nil {
		t.Fatalf("put %s/%s on %s: %v", kind, id, s.Self(), err)
	}
	return r
}

func mustMerge(t *testing.T, s *Store, recs []Record) []Record {
	t.Helper()
	changed, err := s.Merge(recs)
	if err != nil {
		t.Fatalf("merge into %s: %v", s.Self(), err)
	}
	return changed
}

func rawJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameRecords(a, b []Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameRecord(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameRecord(a, b Record) bool {
	return a.Key == b.Key && a.Version == b.Version && a.Deleted == b.Deleted && bytes.Equal(a.Value, b.Value)
}

func formatRecords(rs []Record) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %s v%d deleted=%v value=%s\n", r.Key, r.Version, r.Deleted, r.Value)
	}
	return b.String()
}

func TestStoreRecordWrittenByOneNodeIsSeenByAllAfterMerge(t *testing.T) {
	clock := newFakeClock()
	names := []string{"a", "b", "c"}
	stores := make([]testStore, len(names))
	for i, n := range names {
		stores[i] = newTestStore(t, n, clock)
	}
	ep := EndpointInfo{Subnet: "10.42.0.0/16", Addr: "10.42.0.5", MAC: "02:42:0a:2a:00:05", Healthy: true}
	written := mustPut(t, stores[0].Store, kindTest, "ep1", ep)
	mustPut(t, stores[1].Store, KindNode, "", NodeInfo{Addr: "198.18.0.12"})

	// One round of full-state exchange, as push/pull does, in both directions.
	for _, from := range stores {
		for _, to := range stores {
			if from.Store != to.Store {
				mustMerge(t, to.Store, from.All())
			}
		}
	}
	for _, s := range stores {
		got, ok := s.Snapshot().Get(kindTest, "a", "ep1")
		if !ok {
			t.Fatalf("%s does not see a's endpoint after merge; has:\n%s", s.Self(), formatRecords(s.All()))
		}
		if !sameRecord(got, written) {
			t.Errorf("%s has %+v, want %+v", s.Self(), got, written)
		}
		back, err := DecodeEndpoint(got)
		if err != nil || back.Addr != ep.Addr {
			t.Errorf("%s: decoded %+v, %v", s.Self(), back, err)
		}
		if _, ok := s.Snapshot().Get(KindNode, "b", ""); !ok {
			t.Errorf("%s does not see b's node record", s.Self())
		}
	}
	if !sameRecords(stores[0].All(), stores[1].All()) || !sameRecords(stores[1].All(), stores[2].All()) {
		t.Errorf("stores differ after a full exchange")
	}
}

func TestStoreDeleteWinsOverOlderWriteInAnyOrder(t *testing.T) {
	a := newTestStore(t, "a", nil)
	w1 := mustPut(t, a.Store, kindTest, "ep", map[string]string{"v": "1"})
	a.clock.Advance(time.Second)
	w2 := mustPut(t, a.Store, kindTest, "ep", map[string]string{"v": "2"})
	a.clock.Advance(time.Second)
	if err := a.Delete(kindTest, "ep"); err != nil {
		t.Fatal(err)
	}
	del := a.rec.lastBroadcast(t)
	if !del.Deleted || del.Version <= w2.Version || del.Key != w1.Key {
		t.Fatalf("delete broadcast %+v, want a tombstone above v%d", del, w2.Version)
	}
	orders := [][]Record{
		{w1, w2, del},
		{del, w1, w2},
		{w2, del, w1},
		{del, del, w2, w1, w1, del},
	}
	for i, order := range orders {
		// Once as one batch, once record by record.
		for _, batch := range []bool{true, false} {
			b := newTestStore(t, "b", nil)
			if batch {
				mustMerge(t, b.Store, order)
			} else {
				for _, r := range order {
					mustMerge(t, b.Store, []Record{r})
				}
			}
			if r, ok := b.Snapshot().Get(kindTest, "a", "ep"); ok {
				t.Errorf("order %d batch=%v: deleted record visible: %+v", i, batch, r)
			}
			all := b.All()
			if len(all) != 1 || !sameRecord(all[0], del) {
				t.Errorf("order %d batch=%v: store holds\n%s want only the tombstone", i, batch, formatRecords(all))
			}
			if len(b.Snapshot().Records(kindTest)) != 0 {
				t.Errorf("order %d: snapshot lists a tombstone", i)
			}
		}
	}
}

func TestStorePutUnchangedValueWritesNoNewVersion(t *testing.T) {
	s := newTestStore(t, "a", nil)
	v := NodeInfo{Addr: "198.18.0.11", GossipPort: 7946}
	first := mustPut(t, s.Store, KindNode, "", v)
	s.clock.Advance(time.Second)
	again := mustPut(t, s.Store, KindNode, "", v)
	if again.Version != first.Version {
		t.Errorf("unchanged put wrote version %d over %d", again.Version, first.Version)
	}
	if p, b := s.rec.counts(); p != 1 || b != 1 {
		t.Errorf("unchanged put persisted %d / broadcast %d times in all, want 1 / 1", p, b)
	}
	v.GossipPort = 7947
	changed := mustPut(t, s.Store, KindNode, "", v)
	if changed.Version <= first.Version {
		t.Errorf("changed put has version %d, not above %d", changed.Version, first.Version)
	}
	// Deleting twice writes one tombstone; a put after a delete is a write.
	if err := s.Delete(KindNode, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(KindNode, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(KindNode, "never-written"); err != nil {
		t.Fatal(err)
	}
	if _, b := s.rec.counts(); b != 3 {
		t.Errorf("%d broadcasts after put, put, delete, delete, delete-missing; want 3", b)
	}
	back := mustPut(t, s.Store, KindNode, "", v)
	if back.Version <= changed.Version || back.Deleted {
		t.Errorf("put after delete: %+v", back)
	}
}

func TestStoreClockStaysMonotonicWhenWallClockGoesBack(t *testing.T) {
	s := newTestStore(t, "a", nil)
	prev := mustPut(t, s.Store, KindNode, "", 0)
	for i := 1; i < 20; i++ {
		s.clock.Advance(-time.Hour) // NTP step backwards
		r := mustPut(t, s.Store, KindNode, "", i)
		if r.Version <= prev.Version {
			t.Fatalf("version went from %d to %d after the wall clock stepped back", prev.Version, r.Version)
		}
		prev = r
	}
	// A peer's version from the future (within the bound) pushes the
	// clock: the next local write must still win over it.
	s.clock.Advance(20 * time.Hour) // the wall clock back above prev
	future := Record{Key: Key{Kind: kindTest, Owner: "b"}, Version: uint64(s.clock.Now().Add(30 * time.Second).UnixNano()), Value: rawJSON(t, 1)}
	mustMerge(t, s.Store, []Record{future})
	r := mustPut(t, s.Store, KindNode, "", "after")
	if r.Version <= future.Version {
		t.Errorf("local write v%d is not above a seen version v%d", r.Version, future.Version)
	}
}

func validRecord(t testing.TB) Record {
	return Record{Key: Key{Kind: kindTest, Owner: "b", ID: "ep"}, Version: 7, Value: rawJSON(t, map[string]any{"addr": "10.0.0.1"})}
}

func TestStoreRejectsInvalidRecords(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	bigValue := json.RawMessage(`"` + long(maxValueLen) + `"`)
	cases := map[string]func(*Record){
		"empty kind":        func(r *Record) { r.Kind = "" },
		"long kind":         func(r *Record) { r.Kind = Kind(long(maxKindLen + 1)) },
		"empty owner":       func(r *Record) { r.Owner = "" },
		"long owner":        func(r *Record) { r.Owner = long(maxOwnerLen + 1) },
		"long id":           func(r *Record) { r.ID = long(maxIDLen + 1) },
		"value over limit":  func(r *Record) { r.Value = bigValue },
		"version 0":         func(r *Record) { r.Version = 0 },
		"value not JSON":    func(r *Record) { r.Value = json.RawMessage(`{"a":`) },
		"value two values":  func(r *Record) { r.Value = json.RawMessage(`1 2`) },
		"deleted, huge val": func(r *Record) { r.Deleted = true; r.Value = bigValue },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			s := newTestStore(t, "a", nil)
			good := validRecord(t)
			good.ID = "good"
			bad := validRecord(t)
			mutate(&bad)
			changed, err := s.Merge([]Record{bad, good})
			if err == nil {
				t.Fatalf("merge accepted %+v", bad)
			}
			if !strings.Contains(err.Error(), "skipped 1 invalid") {
				t.Errorf("error %q does not say how many were skipped", err)
			}
			if len(changed) != 1 || changed[0].ID != "good" {
				t.Errorf("valid record in the same batch not merged: %v", changed)
			}
			if all := s.All(); len(all) != 1 {
				t.Errorf("store holds\n%s", formatRecords(all))
			}
		})
	}
	t.Run("local writes", func(t *testing.T) {
		s := newTestStore(t, "a", nil)
		if _, err := s.Put(kindTest, long(maxIDLen+1), 1); err == nil {
			t.Error("put with an over-long id succeeded")
		}
		if _, err := s.Put("", "x", 1); err == nil {
			t.Error("put with an empty kind succeeded")
		}
		if _, err := s.Put(kindTest, "x", strings.Repeat("y", maxValueLen)); err == nil {
			t.Error("put with an over-long value succeeded")
		}
		if _, err := s.Put(kindTest, "x", make(chan int)); err == nil {
			t.Error("put of an unencodable value succeeded")
		}
		if p, b := s.rec.counts(); p != 0 || b != 0 || len(s.All()) != 0 {
			t.Errorf("failed puts persisted %d, broadcast %d, stored %d", p, b, len(s.All()))
		}
	})
}

// TestStoreRejectsMutatedRecords mutates a valid record at random, many
// times: the store must never panic and must never hold a record that
// validate rejects.
func TestStoreRejectsMutatedRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newTestStore(t, "a", nil)
	junk := []string{"", "x", "\x00", "é", strings.Repeat("z", 300), "a/b", `"`}
	values := []json.RawMessage{nil, json.RawMessage(`{}`), json.RawMessage(`{"a"`), json.RawMessage(`null`),
		json.RawMessage(`[1,2`), json.RawMessage(" 7 "), json.RawMessage("\xff"), json.RawMessage(`"` + strings.Repeat("v", maxValueLen) + `"`)}
	accepted := 0
	for i := 0; i < 2000; i++ {
		r := validRecord(t)
		for n := rng.IntN(4); n >= 0; n-- {
			switch rng.IntN(6) {
			case 0:
				r.Kind = Kind(junk[rng.IntN(len(junk))])
			case 1:
				r.Owner = junk[rng.IntN(len(junk))]
			case 2:
				r.ID = junk[rng.IntN(len(junk))]
			case 3:
				r.Version = []uint64{0, 1, 1 << 63, ^uint64(0)}[rng.IntN(4)]
			case 4:
				r.Value = values[rng.IntN(len(values))]
			case 5:
				r.Deleted = !r.Deleted
			}
		}
		changed, err := s.Merge([]Record{r})
		if err == nil {
			accepted++
		} else if len(changed) != 0 {
			t.Fatalf("a rejected record changed the store: %+v", changed)
		}
	}
	if accepted == 0 {
		t.Fatal("no mutated record was valid: the mutations are too coarse to test anything")
	}
	for _, r := range s.All() {
		if err := r.validate(); err != nil {
			t.Errorf("store holds an invalid record %+v: %v", r, err)
		}
	}
}

// A node whose state directory was lost learns its own records back from
// peers: a record of its own that is newer than anything it knows was
// written by its earlier run, and is adopted.
func TestStoreAdoptsNewerOwnRecordAfterStateLoss(t *testing.T) {
	clock := newFakeClock()
	before := newTestStore(t, "a", clock)
	lost := mustPut(t, before.Store, KindBlock, "10.42.0.0/26", map[string]string{"subnet": "10.42.0.0/16"})

	// The restarted node's wall clock is behind the lost write (a clock step
	// back at reboot), so only the record itself says it is not stale.
	clock2 := &fakeClock{t: clock.Now().Add(-time.Minute)}
	after := newTestStore(t, "a", clock2)
	changed := mustMerge(t, after.Store, []Record{lost})
	if len(changed) != 1 || !sameRecord(changed[0], lost) {
		t.Fatalf("merge changed %v, want the adopted record", changed)
	}
	if own := after.Owned(); len(own) != 1 || !sameRecord(own[0], lost) {
		t.Fatalf("own records after adoption:\n%s", formatRecords(own))
	}
	if st := after.rec.lastPersisted(t); len(st.Records) != 1 || !sameRecord(st.Records[0], lost) {
		t.Errorf("adopted record not persisted: %+v", st)
	}
	// The owner is now authoritative again: its next write wins.
	next := mustPut(t, after.Store, KindBlock, "10.42.0.0/26", map[string]string{"subnet": "10.42.0.0/16", "note": "x"})
	if next.Version <= lost.Version {
		t.Errorf("write after adoption has v%d, not above the adopted v%d", next.Version, lost.Version)
	}
	// An older copy of its own record is not adopted over the newer one.
	if changed := mustMerge(t, after.Store, []Record{lost}); len(changed) != 0 {
		t.Errorf("older own record replaced a newer one: %v", changed)
	}
}

// After an own tombstone is collected, a copy of the deleted record that a
// long-partitioned peer still holds must not come back: the owner re-deletes
// it with a fresh tombstone.
func TestStoreRedeletesStaleOwnRecordAfterTombstoneCollected(t *testing.T) {
	a := newTestStore(t, "a", nil)
	stale := mustPut(t, a.Store, kindTest, "ep", map[string]int{"n": 1})
	a.clock.Advance(time.Minute)
	if err := a.Delete(kindTest, "ep"); err != nil {
		t.Fatal(err)
	}
	tomb := a.rec.lastBroadcast(t)

	a.clock.Advance(59 * time.Minute) // not yet past TombstoneTTL (1h)
	if n := a.Expire(); n != 0 {
		t.Fatalf("expired %d tombstones before the TTL", n)
	}
	a.clock.Advance(2 * time.Minute)
	if n := a.Expire(); n != 1 {
		t.Fatalf("expired %d tombstones past the TTL, want 1", n)
	}
	if len(a.All()) != 0 {
		t.Fatalf("store after expiry:\n%s", formatRecords(a.All()))
	}
	st := a.rec.lastPersisted(t)
	if st.CollectedUpTo < tomb.Version || len(st.Records) != 0 {
		t.Fatalf("persisted %+v after expiry, want no records and CollectedUpTo >= %d", st, tomb.Version)
	}

	check := func(t *testing.T, s testStore) {
		t.Helper()
		_, before := s.rec.counts()
		changed := mustMerge(t, s.Store, []Record{stale})
		if _, ok := s.Snapshot().Get(kindTest, "a", "ep"); ok {
			t.Fatal("stale own record came back")
		}
		if len(changed) != 1 || !changed[0].Deleted || changed[0].Version <= tomb.Version {
			t.Fatalf("merge returned %v, want a fresh tombstone above v%d", changed, tomb.Version)
		}
		if _, after := s.rec.counts(); after != before+1 || !s.rec.lastBroadcast(t).Deleted {
			t.Error("the re-delete was not broadcast")
		}
	}
	t.Run("same run", func(t *testing.T) { check(t, a) })
	t.Run("after restart", func(t *testing.T) {
		// The restarted node knows only what it persisted.
		b := newTestStore(t, "a", a.clock)
		if err := b.Load(st); err != nil {
			t.Fatal(err)
		}
		check(t, b)
	})
	t.Run("collected tombstone returns", func(t *testing.T) {
		b := newTestStore(t, "a", a.clock)
		if err := b.Load(st); err != nil {
			t.Fatal(err)
		}
		p, bc := b.rec.counts()
		if changed := mustMerge(t, b.Store, []Record{tomb}); len(changed) != 0 {
			t.Errorf("an already collected own tombstone was taken back: %v", changed)
		}
		if p2, bc2 := b.rec.counts(); p2 != p || bc2 != bc {
			t.Error("an already collected own tombstone was persisted or broadcast")
		}
	})
}

// Tombstones must disappear everywhere after the TTL even when peers learnt
// of the delete at different times and keep exchanging full state: a
// tombstone one node collected must not be handed back to it by a peer that
// still holds it, round after round, forever.
func TestStoreTombstonesAreCollectedEverywhere(t *testing.T) {
	for _, owner := range []string{"a", "c"} { // the owner itself, and a third node's record
		t.Run("owner "+owner, func(t *testing.T) {
			clock := newFakeClock()
			a := newTestStore(t, "a", clock)
			b := newTestStore(t, "b", clock)
			w := newTestStore(t, owner, clock)
			if owner == "a" {
				w = a
			}
			mustPut(t, w.Store, kindTest, "ep", 1)
			if err := w.Delete(kindTest, "ep"); err != nil {
				t.Fatal(err)
			}
			mustMerge(t, a.Store, w.All())
			// b was partitioned for 20 minutes and hears of the delete late.
			clock.Advance(20 * time.Minute)
			mustMerge(t, b.Store, a.All())
			if len(b.All()) != 1 {
				t.Fatal("b did not get the tombstone")
			}
			// Anti-entropy every minute for three TTLs.
			for i := 0; i < 180; i++ {
				clock.Advance(time.Minute)
				a.Expire()
				b.Expire()
				mustMerge(t, a.Store, b.All())
				mustMerge(t, b.Store, a.All())
			}
			if len(a.All())+len(b.All()) != 0 {
				t.Errorf("three TTLs later a holds\n%sb holds\n%s", formatRecords(a.All()), formatRecords(b.All()))
			}
		})
	}
}

func TestStorePersistFailureUndoesWrite(t *testing.T) {
	s := newTestStore(t, "a", nil)
	orig := mustPut(t, s.Store, kindTest, "ep", "v1")
	changes, cancel := s.Subscribe()
	defer cancel()
	<-changes
	errDisk := errors.New("disk full")
	s.rec.setFail(errDisk)
	_, b0 := s.rec.counts()

	if _, err := s.Put(kindTest, "ep", "v2"); !errors.Is(err, errDisk) {
		t.Fatalf("put with failing persist: %v, want %v", err, errDisk)
	}
	if _, err := s.Put(kindTest, "new", "v"); !errors.Is(err, errDisk) {
		t.Fatalf("put of a new record with failing persist: %v", err)
	}
	if err := s.Delete(kindTest, "ep"); !errors.Is(err, errDisk) {
		t.Fatalf("delete with failing persist: %v", err)
	}
	if all := s.All(); len(all) != 1 || !sameRecord(all[0], orig) {
		t.Errorf("store after failed writes:\n%s want only\n%s", formatRecords(all), formatRecords([]Record{orig}))
	}
	if got, ok := s.Snapshot().Get(kindTest, "a", "ep"); !ok || !sameRecord(got, orig) {
		t.Errorf("snapshot after failed writes has %+v, %v", got, ok)
	}
	if _, b := s.rec.counts(); b != b0 {
		t.Errorf("failed writes were broadcast")
	}
	select {
	case <-changes:
		t.Error("failed writes notified subscribers")
	default:
	}

	// A delete that fails leaves no tombstone to expire later, and a later
	// delete that succeeds is a normal tombstone.
	s.rec.setFail(nil)
	if err := s.Delete(kindTest, "ep"); err != nil {
		t.Fatal(err)
	}
	s.clock.Advance(2 * time.Hour)
	if n := s.Expire(); n != 1 {
		t.Errorf("expired %d, want 1", n)
	}
}

func TestStoreLoad(t *testing.T) {
	t.Run("foreign owner", func(t *testing.T) {
		s := newTestStore(t, "a", nil)
		err := s.Load(OwnState{Records: []Record{{Key: Key{Kind: KindNode, Owner: "b"}, Version: 3, Value: rawJSON(t, 1)}}})
		if err == nil {
			t.Fatal("loaded another node's record")
		}
		for _, want := range []string{`owned by "b"`, `"a"`, "--node-name"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
	})
	t.Run("invalid record", func(t *testing.T) {
		s := newTestStore(t, "a", nil)
		if err := s.Load(OwnState{Records: []Record{{Key: Key{Kind: KindNode, Owner: "a"}}}}); err == nil {
			t.Fatal("loaded a record with version 0")
		}
	})
	t.Run("own records", func(t *testing.T) {
		prev := newTestStore(t, "a", nil)
		mustPut(t, prev.Store, KindNode, "", NodeInfo{Addr: "198.18.0.11"})
		mustPut(t, prev.Store, kindTest, "gone", 1)
		if err := prev.Delete(kindTest, "gone"); err != nil {
			t.Fatal(err)
		}
		st := prev.rec.lastPersisted(t)
		if len(st.Records) != 2 {
			t.Fatalf("persisted %d records, want 2 with the tombstone", len(st.Records))
		}
		// Round trip through JSON, as the daemon's state file does.
		var back OwnState
		if err := json.Unmarshal(rawJSON(t, st), &back); err != nil {
			t.Fatal(err)
		}
		clock := &fakeClock{t: prev.clock.Now().Add(-time.Hour)}
		s := newTestStore(t, "a", clock)
		if err := s.Load(back); err != nil {
			t.Fatal(err)
		}
		if !sameRecords(s.Owned(), prev.Owned()) {
			t.Errorf("loaded\n%swant\n%s", formatRecords(s.Owned()), formatRecords(prev.Owned()))
		}
		if p, b := s.rec.counts(); p != 0 || b != 0 {
			t.Errorf("load persisted %d and broadcast %d times", p, b)
		}
		if s.Clock() < prev.Clock() {
			t.Errorf("clock %d after load is below the loaded versions (%d)", s.Clock(), prev.Clock())
		}
		if _, ok := s.Snapshot().Get(KindNode, "a", ""); !ok {
			t.Error("loaded node record not in the snapshot")
		}
		// The loaded tombstone still expires.
		clock.Advance(3 * time.Hour)
		if n := s.Expire(); n != 1 {
			t.Errorf("expired %d loaded tombstones, want 1", n)
		}
	})
}

func TestSnapshotHidesTombstonesAndRemovedNodes(t *testing.T) {
	clock := newFakeClock()
	a := newTestStore(t, "a", clock)
	c := newTestStore(t, "c", clock)
	mustPut(t, c.Store, kindTest, "old", 1)
	mustPut(t, c.Store, KindBlock, "10.42.0.0/26", 1)
	mustPut(t, c.Store, kindTest, "deleted", 1)
	if err := c.Delete(kindTest, "deleted"); err != nil {
		t.Fatal(err)
	}
	mustMerge(t, a.Store, c.All())
	upTo := c.Clock()
	// The operator removes c up to what a has seen of it; a second removal
	// by another node with a lower bound must not shrink it.
	mustPut(t, a.Store, KindRemoval, "c", Removal{UpTo: upTo, At: clock.Now(), By: "a"})
	a.SetMember(Member{Name: "b", State: StateAlive}) // removals are taken from live writers only
	mustMerge(t, a.Store, []Record{{Key: Key{Kind: KindRemoval, Owner: "b", ID: "c"}, Version: 5, Value: rawJSON(t, Removal{UpTo: 1, By: "b"})}})
	// A deleted removal (e.g. withdrawn) does not count either.
	mustMerge(t, a.Store, []Record{{Key: Key{Kind: KindRemoval, Owner: "d", ID: "c"}, Version: 5, Deleted: true}})

	// c comes back later and writes again, above the removal.
	clock.Advance(time.Minute)
	back := mustPut(t, c.Store, kindTest, "new", 2)
	mustMerge(t, a.Store, c.All())

	snap := a.Snapshot()
	if snap.Removed["c"] != upTo {
		t.Errorf("Removed[c] = %d, want %d", snap.Removed["c"], upTo)
	}
	eps := snap.Records(kindTest)
	if len(eps) != 1 || !sameRecord(eps[0], back) {
		t.Errorf("endpoints after removal:\n%s want only c's write after it", formatRecords(eps))
	}
	if blocks := snap.Records(KindBlock); len(blocks) != 0 {
		t.Errorf("removed node's blocks still listed:\n%s", formatRecords(blocks))
	}
	if _, ok := snap.Get(kindTest, "c", "old"); ok {
		t.Error("Get returns a removed node's record")
	}
	if _, ok := snap.Get(kindTest, "c", "deleted"); ok {
		t.Error("Get returns a tombstone")
	}
	if rms := snap.Records(KindRemoval); len(rms) != 2 {
		t.Errorf("removal records: %d, want 2 (a's and b's; d's is deleted)", len(rms))
	}
	// The store itself still holds everything, for anti-entropy.
	if n := len(a.All()); n != 7 {
		t.Errorf("store holds %d records, want 7:\n%s", n, formatRecords(a.All()))
	}
}

func TestSnapshotUpRecordsFollowOwnerLiveness(t *testing.T) {
	s := newTestStore(t, "a", nil)
	owners := []string{"a", "alive", "suspect", "dead", "left", "unknown"}
	var recs []Record
	for _, o := range owners {
		recs = append(recs,
			Record{Key: Key{Kind: kindTest, Owner: o, ID: "ep"}, Version: 1, Value: rawJSON(t, 1)},
			Record{Key: Key{Kind: KindBlock, Owner: o, ID: "blk"}, Version: 1, Value: rawJSON(t, 1)})
	}
	mustMerge(t, s.Store, recs)
	for _, m := range []Member{{Name: "a", State: StateAlive}, {Name: "alive", State: StateAlive},
		{Name: "suspect", State: StateSuspect}, {Name: "dead", State: StateDead}, {Name: "left", State: StateLeft}} {
		s.SetMember(m)
	}
	owned := func(rs []Record) string {
		var o []string
		for _, r := range rs {
			o = append(o, r.Owner)
		}
		return strings.Join(o, ",")
	}
	snap := s.Snapshot()
	if got, want := owned(snap.UpRecords(kindTest)), "a,alive,suspect"; got != want {
		t.Errorf("UpRecords(endpoint) owners = %s, want %s", got, want)
	}
	if got, want := owned(snap.Records(KindBlock)), "a,alive,dead,left,suspect,unknown"; got != want {
		t.Errorf("Records(block) owners = %s, want %s (blocks stay reserved)", got, want)
	}
	if got, want := owned(snap.Records(kindTest)), "a,alive,dead,left,suspect,unknown"; got != want {
		t.Errorf("Records(endpoint) owners = %s, want %s", got, want)
	}
	// The dead node comes back; the left node rejoins.
	s.SetMember(Member{Name: "dead", State: StateAlive})
	s.SetMember(Member{Name: "left", State: StateAlive})
	if got, want := owned(s.Snapshot().UpRecords(kindTest)), "a,alive,dead,left,suspect"; got != want {
		t.Errorf("after return UpRecords(endpoint) owners = %s, want %s", got, want)
	}
	// The local node is up even before memberlist reports it.
	s2 := newTestStore(t, "a", nil)
	mustPut(t, s2.Store, kindTest, "mine", 1)
	if len(s2.Snapshot().UpRecords(kindTest)) != 1 {
		t.Error("own endpoint not up before any member event")
	}
	// The old snapshot is immutable.
	if got := owned(snap.UpRecords(kindTest)); got != "a,alive,suspect" {
		t.Errorf("an earlier snapshot changed: %s", got)
	}
}

func TestStoreMembersKeepSince(t *testing.T) {
	s := newTestStore(t, "a", nil)
	s.SetMember(Member{Name: "b", Addr: "127.0.0.2", State: StateAlive})
	since := s.Snapshot().Members["b"].Since
	if since.IsZero() {
		t.Fatal("Since not set")
	}
	s.clock.Advance(time.Minute)
	s.SetMember(Member{Name: "b", Addr: "127.0.0.3", State: StateAlive})
	if m := s.Snapshot().Members["b"]; m.Addr != "127.0.0.3" || !m.Since.Equal(since) {
		t.Errorf("address change: %+v, want Since kept at %v", m, since)
	}
	s.SetMember(Member{Name: "b", Addr: "127.0.0.3", State: StateDead})
	if m := s.Snapshot().Members["b"]; m.State != StateDead || !m.Since.Equal(s.clock.Now()) {
		t.Errorf("state change: %+v, want Since = now", m)
	}
	s.ForgetMember("b")
	if _, ok := s.Snapshot().Members["b"]; ok {
		t.Error("forgotten member still listed")
	}
}

func TestStoreSubscribeCoalescesAndNotifies(t *testing.T) {
	s := newTestStore(t, "a", nil)
	ch, cancel := s.Subscribe()
	expect := func(what string, want bool) {
		t.Helper()
		select {
		case <-ch:
			if !want {
				t.Errorf("%s: unexpected notification", what)
			}
		default:
			if want {
				t.Errorf("%s: no notification", what)
			}
		}
	}
	expect("subscribe", true) // the current state is news
	expect("nothing happened", false)
	for i := 0; i < 50; i++ {
		mustPut(t, s.Store, kindTest, fmt.Sprint(i), i)
	}
	expect("50 puts", true)
	expect("50 puts, coalesced", false)

	snap := s.Snapshot()
	if s.Snapshot() != snap {
		t.Error("unchanged store rebuilt its snapshot")
	}
	mustPut(t, s.Store, kindTest, "0", 0) // unchanged value
	expect("unchanged put", false)
	mustMerge(t, s.Store, s.All()) // nothing new
	expect("merge of known records", false)
	s.SetMember(Member{Name: "b", State: StateAlive})
	expect("member change", true)
	s.SetMember(Member{Name: "b", State: StateAlive})
	expect("same member state", false)
	mustMerge(t, s.Store, []Record{{Key: Key{Kind: KindBlock, Owner: "b"}, Version: 1, Value: rawJSON(t, 1)}})
	expect("merge of a new record", true)
	if err := s.Delete(kindTest, "1"); err != nil {
		t.Fatal(err)
	}
	expect("delete", true)
	if snap2 := s.Snapshot(); snap2 == snap || len(snap.Records(kindTest)) != 50 || len(snap2.Records(kindTest)) != 49 {
		t.Error("snapshot not rebuilt after changes, or the old one changed")
	}
	s.clock.Advance(2 * time.Hour)
	s.Expire()
	expect("expire", true)

	// Two subscribers each see the change; a cancelled one sees nothing.
	ch2, cancel2 := s.Subscribe()
	<-ch2
	cancel()
	cancel() // idempotent
	mustPut(t, s.Store, kindTest, "x", 1)
	expect("after cancel", false)
	select {
	case <-ch2:
	default:
		t.Error("second subscriber not notified")
	}
	cancel2()
}

func TestSnapshotGet(t *testing.T) {
	s := newTestStore(t, "m", nil)
	want := map[Key]Record{}
	var recs []Record
	for _, owner := range []string{"a", "b", "m", "z"} {
		for _, id := range []string{"", "1", "10", "2", "x/y"} {
			r := Record{Key: Key{Kind: kindTest, Owner: owner, ID: id}, Version: 3, Value: rawJSON(t, owner+id)}
			recs = append(recs, r)
			want[r.Key] = r
		}
	}
	// Same keys under another kind must not be confused.
	recs = append(recs, Record{Key: Key{Kind: KindBlock, Owner: "b", ID: "1"}, Version: 9, Value: rawJSON(t, "blk")})
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	mustMerge(t, s.Store, recs)
	snap := s.Snapshot()
	for k, r := range want {
		got, ok := snap.Get(k.Kind, k.Owner, k.ID)
		if !ok || !sameRecord(got, r) {
			t.Errorf("Get(%s) = %+v, %v", k, got, ok)
		}
	}
	for _, k := range []Key{{kindTest, "a", "3"}, {kindTest, "c", ""}, {kindTest, "", ""}, {kindTest, "zz", ""}, {KindNode, "a", ""}, {KindBlock, "b", "2"}} {
		if got, ok := snap.Get(k.Kind, k.Owner, k.ID); ok {
			t.Errorf("Get(%s) found %+v", k, got)
		}
	}
	if got, ok := snap.Get(KindBlock, "b", "1"); !ok || got.Version != 9 {
		t.Errorf("Get(block/b/1) = %+v, %v", got, ok)
	}
}

func TestStoreConcurrentUse(t *testing.T) {
	s := newTestStore(t, "a", nil)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				id := fmt.Sprint(i % 17)
				switch i % 5 {
				case 0:
					_ = s.Delete(kindTest, id)
				case 1:
					_, _ = s.Merge([]Record{{Key: Key{Kind: kindTest, Owner: "b", ID: id}, Version: uint64(i + 1), Value: rawJSON(t, i)}})
				case 2:
					s.Snapshot().UpRecords(kindTest)
				case 3:
					s.SetMember(Member{Name: "b", State: []MemberState{StateAlive, StateDead}[i%2]})
				default:
					_, _ = s.Put(kindTest, id, g)
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range s.All() {
		if err := r.validate(); err != nil {
			t.Error(err)
		}
	}
}

func TestStoreAnnounce(t *testing.T) {
	var sent []Record
	s := NewStore(StoreConfig{Self: "a", Broadcast: func(r Record) { sent = append(sent, r) }})
	r, err := s.Put(kindTest, "e1", 1)
	if err != nil {
		t.Fatal(err)
	}
	s.Announce(kindTest, "e1")
	s.Announce(kindTest, "missing") // nothing held: nothing sent
	if len(sent) != 2 || sent[1].Key != r.Key || sent[1].Version != r.Version || string(sent[1].Value) != string(r.Value) {
		t.Fatalf("broadcasts %+v; want the Put and the same record again", sent)
	}
}
