package gossip

import (
	"encoding/json"
	"sync"
	"testing"
)

// Update sees a deletion made after the caller's snapshot and writes
// nothing: a read-modify-write cannot bring a record back.
func TestStoreUpdateDoesNotResurrectADeletedRecord(t *testing.T) {
	s := NewStore(StoreConfig{Self: "n1"})
	if _, err := s.Put(KindEndpoint, "ep1", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	if err := s.Delete(KindEndpoint, "ep1"); err != nil {
		t.Fatal(err)
	}
	for _, r := range snap.Records(KindEndpoint) {
		_, wrote, err := s.Update(KindEndpoint, r.ID, func(cur Record, ok bool) (any, bool, error) {
			if !ok {
				return nil, false, nil
			}
			return map[string]int{"n": 2}, true, nil
		})
		if err != nil || wrote {
			t.Fatalf("Update of a deleted record: wrote %v, err %v", wrote, err)
		}
	}
	if got := s.Snapshot().Records(KindEndpoint); len(got) != 0 {
		t.Fatalf("records after the update: %v", got)
	}
}

// Concurrent increments through Update lose none.
func TestStoreUpdateIsAtomic(t *testing.T) {
	s := NewStore(StoreConfig{Self: "n1"})
	if _, err := s.Put(KindNetwork, "c", map[string]int{"n": 0}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, _, err := s.Update(KindNetwork, "c", func(cur Record, ok bool) (any, bool, error) {
					var v map[string]int
					if err := json.Unmarshal(cur.Value, &v); err != nil {
						return nil, false, err
					}
					v["n"]++
					return v, true, nil
				}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var v map[string]int
	if err := json.Unmarshal(s.Snapshot().Records(KindNetwork)[0].Value, &v); err != nil {
		t.Fatal(err)
	}
	if v["n"] != workers*each {
		t.Fatalf("counter = %d, want %d", v["n"], workers*each)
	}
}
