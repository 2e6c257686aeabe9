package gossip

import (
	"testing"
	"time"
)

// With memberlist's periodic push/pull off, and only the minority node
// retrying its seed (n00), only the catch-up exchange can carry what the
// two sides of a partition wrote to the nodes that did not take part in
// the rejoin: n01 and n02 must still get x's record at once.
func TestClusterCatchesUpAfterAHeal(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := make([]*testNode, 4)
	for i := range nodes {
		cfg := testConfig(t, i)
		cfg.Memberlist.PushPullInterval = 0 // off: no anti-entropy but the catch-up
		if i < 3 {
			cfg.RejoinInterval = time.Hour // the majority never reaches out to x itself
		}
		if i > 0 {
			cfg.Join = []string{nodes[0].addr()}
		}
		nodes[i] = startNode(t, cfg, true)
	}
	stopTogether(t, nodes)
	b, x := nodes[1], nodes[3]
	majority := nodes[:3]
	meetAll(t, nodes) // push/pull is off
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })

	x.tr.setBlocked(true)
	eventually(t, converge, "x dead to the others", func() error {
		return expectMembers(majority, map[string]MemberState{x.name: StateDead})
	})
	eventually(t, converge, "the others dead to x", func() error {
		return expectMembers([]*testNode{x}, map[string]MemberState{nodes[0].name: StateDead, b.name: StateDead, nodes[2].name: StateDead})
	})
	if _, err := b.store.Put(kindTest, "majority", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := x.store.Put(kindTest, "minority", 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "majority write within the majority", func() error {
		return expectRecord(majority, kindTest, b.name, "majority", true)
	})
	time.Sleep(testMemberlistConfig().GossipToTheDeadTime + 500*time.Millisecond)
	for _, n := range nodes {
		n.c.queue.Reset() // broadcasts spent: only exchanges of full state cross now
	}

	x.tr.setBlocked(false)
	eventually(t, converge, "membership after the heal", func() error { return expectMembers(nodes, allAlive(nodes)) })
	healed := time.Now()
	eventually(t, converge, "records after the heal", func() error {
		if err := expectRecord(nodes, kindTest, b.name, "majority", true); err != nil {
			return err
		}
		return expectRecord(nodes, kindTest, x.name, "minority", true)
	})
	t.Logf("records crossed %v after membership healed", time.Since(healed).Round(time.Millisecond))
}

// SyncWithPeers brings a peer's records now, not when their broadcasts
// arrive: here the record is never broadcast at all.
func TestSyncWithPeers(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := make([]*testNode, 2)
	for i := range nodes {
		cfg := testConfig(t, i)
		cfg.Memberlist.PushPullInterval = 0 // off: nothing else exchanges state
		if i > 0 {
			cfg.Join = []string{nodes[0].addr()}
		}
		nodes[i] = startNode(t, cfg, false)
	}
	stopTogether(t, nodes)
	a, b := nodes[0], nodes[1]
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	hook := b.store.setBroadcast(nil)
	if _, err := b.store.Put(kindTest, "quiet", 1); err != nil {
		t.Fatal(err)
	}
	b.store.setBroadcast(hook)
	if err := expectRecord([]*testNode{a}, kindTest, b.name, "quiet", true); err == nil {
		t.Fatal("a has the record before any exchange: the test proves nothing")
	}
	if n := a.c.SyncWithPeers(2); n != 1 {
		t.Fatalf("SyncWithPeers exchanged with %d peers, want 1 (the only one)", n)
	}
	if err := expectRecord([]*testNode{a}, kindTest, b.name, "quiet", true); err != nil {
		t.Fatalf("right after SyncWithPeers: %v", err)
	}
}

// A cluster-wide restart (every node at once, as a power cut or a fleet
// upgrade does): each node starts with its own records only (what the
// daemon keeps on disk) and the names of its earlier peers. With push/pull
// an hour away, n01 (which joined n00 first) gets n02's record only because
// n02 is a peer of its earlier run, seen for the first time in this one
// (catch-up), and because n02 gossips its own records again after its
// join. Before, n01's seed n00 had nothing of n02 yet when they exchanged,
// and n01 (which removes what it does not know once it has heard a state)
// lacked n02's containers until a push/pull, 30 s on a LAN.
func TestClusterWideRestartConverges(t *testing.T) {
	start := func(i int, join *testNode, known []KnownPeer) *testNode {
		cfg := testConfig(t, i)
		cfg.Memberlist.PushPullInterval = time.Hour
		cfg.LastKnown = known
		if join != nil {
			cfg.Join = []string{join.addr()}
		}
		// Its own record, as a restarted daemon loads it from disk before it
		// joins: loaded, not written, so nothing broadcasts it.
		return startNodeWith(t, cfg, false, nil, func(s *Store) {
			earlier := NewStore(StoreConfig{Self: cfg.NodeName})
			if _, err := earlier.Put(kindTest, "own", i); err != nil {
				t.Fatal(err)
			}
			if err := s.Load(OwnState{Records: earlier.Snapshot().Records(kindTest)}); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The earlier run: only for the names (the stores start empty below).
	var known []KnownPeer
	for i := range 3 {
		known = append(known, KnownPeer{Name: testConfig(t, i).NodeName, Addr: "192.0.2.1:7946"})
	}
	nodes := make([]*testNode, 3)
	for i := range nodes {
		var join *testNode
		if i > 0 {
			join = nodes[0]
		}
		nodes[i] = start(i, join, known)
		// One after the other, as the scenario needs: n02 joins after
		// n01 has exchanged with n00.
		eventually(t, converge, "joined", func() error { return expectMembers(nodes[:i+1], allAlive(nodes[:i+1])) })
	}
	stopTogether(t, nodes)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	eventually(t, 3*time.Second, "every node's record on every node", func() error {
		for _, n := range nodes {
			if err := expectRecord(nodes, kindTest, n.name, "own", true); err != nil {
				return err
			}
		}
		return nil
	})
}
