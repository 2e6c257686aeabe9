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
