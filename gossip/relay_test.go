package gossip

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// A record that came by push/pull first is passed on once when a broadcast
// copy of it arrives (relay.go): the seed of a joiner that got the joiner's
// node record in the join's exchange must still relay its broadcast, or the
// other members wait for a periodic push/pull.
func TestRelayOfRecordFirstLearnedByPushPull(t *testing.T) {
	c := fuzzCluster(t)
	d := &delegate{c: c}
	rec := Record{Key: Key{Kind: KindNode, Owner: "joiner"}, Version: 10, Value: rawJSON(t, NodeInfo{Addr: "198.18.0.13"})}
	other := Record{Key: Key{Kind: kindTest, Owner: "member", ID: "x"}, Version: 11, Value: rawJSON(t, 1)}
	state, err := EncodeState([]Record{rec, other})
	if err != nil {
		t.Fatal(err)
	}
	d.MergeRemoteState(state, true)
	c.mergeQueued()
	if n := c.queue.NumQueued(); n != 0 {
		t.Fatalf("a push/pull queued %d broadcasts; it must relay nothing by itself", n)
	}
	msg := func(r Record) []byte {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{msgRecord}, b...)
	}
	notify := func(r Record) {
		d.NotifyMsg(msg(r))
		c.mergeQueued()
	}
	notify(rec)
	if n := c.queue.NumQueued(); n != 1 {
		t.Fatalf("the first broadcast copy of a record learned by push/pull queued %d broadcasts, want 1 (relayed)", n)
	}
	c.queue.Reset()
	notify(rec)
	if n := c.queue.NumQueued(); n != 0 {
		t.Fatalf("a second copy queued %d broadcasts; a record is passed on once", n)
	}

	// An older copy does not count, and does not use up the relay of the
	// version the push/pull brought.
	newer := other
	newer.Version = 20
	state, _ = EncodeState([]Record{newer})
	d.MergeRemoteState(state, false)
	c.mergeQueued()
	notify(other)
	if n := c.queue.NumQueued(); n != 0 {
		t.Fatalf("an older copy queued %d broadcasts", n)
	}
	notify(newer)
	if n := c.queue.NumQueued(); n != 1 {
		t.Fatalf("the copy of the version the push/pull brought queued %d broadcasts, want 1", n)
	}
}

func TestUnrelayedForgetsAfterTTL(t *testing.T) {
	var u unrelayed
	now := time.Now()
	r := Record{Key: Key{Kind: kindTest, Owner: "peer", ID: "a"}, Version: 5}
	u.note("self", []Record{r, {Key: Key{Kind: kindTest, Owner: "self", ID: "own"}, Version: 6}}, now)
	if len(u.pending) != 1 {
		t.Fatalf("pending %v: this node's own records are not relayed", u.pending)
	}
	if u.take(r, now.Add(unrelayedTTL)) {
		t.Fatal("relayed a copy after the TTL")
	}
	if len(u.pending) != 0 {
		t.Fatalf("pending after take: %v", u.pending)
	}
}

func TestUnrelayedPrunedAtTheNextState(t *testing.T) {
	var u unrelayed
	now := time.Now()
	u.note("self", []Record{{Key: Key{Kind: kindTest, Owner: "peer", ID: "old"}, Version: 1}}, now)
	u.note("self", []Record{{Key: Key{Kind: kindTest, Owner: "peer", ID: "new"}, Version: 2}}, now.Add(unrelayedTTL))
	if _, ok := u.pending[Key{Kind: kindTest, Owner: "peer", ID: "old"}]; ok || len(u.pending) != 1 {
		t.Fatalf("pending %v: the expired entry must go at the next push/pull state", u.pending)
	}
}

// A burst of records written on one node reaches both other nodes of a
// small cluster by gossip alone (push/pull an hour away), even when the
// queue sends each message to one peer only (RetransmitMult 1): the owner
// also sends its own records to every peer directly (broadcastOwn).
// Before that, each record reached the third node only if the one peer it
// went to relayed it there: about half of them, and a service's VIP record
// missing on one host for 30 s failed TestServiceVIP.
func TestOwnRecordsReachEveryPeerOfASmallCluster(t *testing.T) {
	nodes := make([]*testNode, 3)
	for i := range nodes {
		cfg := testConfig(t, i)
		cfg.Memberlist.RetransmitMult = 1
		cfg.Memberlist.PushPullInterval = time.Hour
		if i > 0 {
			cfg.Join = []string{nodes[0].addr()}
		}
		nodes[i] = startNode(t, cfg, false)
	}
	stopTogether(t, nodes)
	// With one transmission per message memberlist's own alive messages
	// may miss a node too.
	meetAll(t, nodes)
	eventually(t, 10*time.Second, "all up", func() error { return expectAllUp(nodes) })
	const n = 30
	for i := range n {
		if _, err := nodes[0].store.Put(kindTest, fmt.Sprintf("burst-%02d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 3*time.Second, "every record on every node", func() error {
		for _, nd := range nodes[1:] {
			missing := 0
			for i := range n {
				if _, ok := nd.store.Snapshot().Get(kindTest, nodes[0].name, fmt.Sprintf("burst-%02d", i)); !ok {
					missing++
				}
			}
			if missing > 0 {
				return fmt.Errorf("%s lacks %d of %d records", nd.name, missing, n)
			}
		}
		return nil
	})
}
