package gossip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// Cluster tests run real memberlist nodes on loopback addresses, with no
// root. Deadlines are generous "eventually" bounds, not speed assertions.

const converge = 30 * time.Second

func TestClusterThreeNodesConverge(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 3, false)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })

	if _, err := nodes[1].store.Put(kindTest, "ep1", EndpointInfo{Addr: "10.42.0.7", Healthy: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "record on every node", func() error { return expectRecord(nodes, kindTest, "n01", "ep1", true) })
	if err := nodes[1].store.Delete(kindTest, "ep1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "delete on every node", func() error { return expectRecord(nodes, kindTest, "n01", "ep1", false) })
	eventually(t, converge, "same state", func() error { return expectSameState(nodes) })
	for _, n := range nodes {
		if got := n.c.NumMembers(); got != 3 {
			t.Errorf("%s: NumMembers = %d", n.name, got)
		}
	}
}

func TestClusterTwentyFiveNodesConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("25 nodes: not in -short")
	}
	checkGoroutineLeaks(t)
	start := time.Now()
	// The daemon's own LAN timers, not the shortened test ones: this test
	// is about how 25 nodes converge, not how fast they detect a death, and
	// 25 nodes probing every 400 ms under -race on two shared cores time
	// their own probes out and flap (seen in CI: a node dead 30 s on).
	nodes := startClusterWith(t, 25, false, func(c *Config) { c.Memberlist = nil })
	eventually(t, converge, "membership of 25", func() error { return expectAllUp(nodes) })
	t.Logf("25 nodes agree on membership %v after the first started", time.Since(start).Round(time.Millisecond))

	// A record spreads by broadcast, every receiver passing it on, and
	// reaches all 25 in under a second; a node every copy missed gets it
	// at its next push/pull (seen once in about ten runs under -race). On
	// the LAN timers the first one comes a random part of the interval
	// plus one interval after the node started: that is the bound.
	spread := 2*memberlist.DefaultLANConfig().PushPullInterval + 5*time.Second
	for i, writer := range []*testNode{nodes[17], nodes[3]} {
		put := time.Now()
		id := fmt.Sprint("ep", i)
		if _, err := writer.store.Put(kindTest, id, EndpointInfo{Addr: "10.42.0.9"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, spread, "record on all 25", func() error { return expectRecord(nodes, kindTest, writer.name, id, true) })
		t.Logf("a record put on %s reached all 25 nodes in %v", writer.name, time.Since(put).Round(time.Millisecond))
	}
}

// A node cut off by its transport is declared dead; records written on
// both sides meanwhile, whose broadcasts are spent, meet again after the
// heal through the rejoin loop and push/pull.
func TestClusterPartitionHealsThroughRejoinAndPushPull(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 4, true)
	a, b, x := nodes[0], nodes[1], nodes[3]
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	if _, err := a.store.Put(kindTest, "before", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "record before the partition", func() error { return expectRecord(nodes, kindTest, a.name, "before", true) })

	phase := time.Now()
	logPhase := func(what string) {
		t.Logf("%s after %v", what, time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}
	x.tr.setBlocked(true)
	majority := nodes[:3]
	eventually(t, converge, "x dead to the others", func() error {
		return expectMembers(majority, map[string]MemberState{x.name: StateDead})
	})
	eventually(t, converge, "the others dead to x", func() error {
		return expectMembers([]*testNode{x}, map[string]MemberState{a.name: StateDead, b.name: StateDead, nodes[2].name: StateDead})
	})

	logPhase("partition detected")
	// Both sides write; a deletes what x still has.
	if _, err := a.store.Put(kindTest, "majority", 2); err != nil {
		t.Fatal(err)
	}
	if err := a.store.Delete(kindTest, "before"); err != nil {
		t.Fatal(err)
	}
	if _, err := x.store.Put(kindTest, "minority", 3); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "majority write within the majority", func() error {
		return expectRecord(majority, kindTest, a.name, "majority", true)
	})
	// Wait until memberlist stops gossiping to the dead (the dropped
	// broadcasts are spent), then drop whatever is still queued: only
	// anti-entropy can carry these records now.
	time.Sleep(testMemberlistConfig().GossipToTheDeadTime + 500*time.Millisecond)
	for _, n := range nodes {
		n.c.queue.Reset()
	}
	if err := expectRecord([]*testNode{x}, kindTest, a.name, "majority", false); err != nil {
		t.Fatalf("a record crossed the partition: %v", err)
	}
	if err := expectRecord(majority, kindTest, x.name, "minority", false); err != nil {
		t.Fatalf("a record crossed the partition: %v", err)
	}

	logPhase("broadcasts spent")
	x.tr.setBlocked(false)
	eventually(t, converge, "membership after the heal", func() error { return expectMembers(nodes, allAlive(nodes)) })
	logPhase("membership healed")
	eventually(t, converge, "records after the heal", func() error {
		if err := expectRecord(nodes, kindTest, a.name, "majority", true); err != nil {
			return err
		}
		if err := expectRecord(nodes, kindTest, x.name, "minority", true); err != nil {
			return err
		}
		return expectRecord(nodes, kindTest, a.name, "before", false)
	})
	eventually(t, converge, "same state after the heal", func() error { return expectSameState(nodes) })
	logPhase("records healed")
}

// A node that stops without leaving is declared dead: its endpoints leave
// UpRecords at once, its blocks stay in Records. When it comes back under
// its name, they return.
func TestClusterStoppedNodeIsDeadAndComesBack(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 3, false)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	victim, others := nodes[2], nodes[:2]
	if _, err := victim.store.Put(kindTest, "ep", EndpointInfo{Addr: "10.42.0.3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := victim.store.Put(KindBlock, "10.42.0.0/26", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "records", func() error {
		if err := expectRecord(others, kindTest, victim.name, "ep", true); err != nil {
			return err
		}
		return expectRecord(others, KindBlock, victim.name, "10.42.0.0/26", true)
	})

	victim.kill()
	eventually(t, converge, "victim dead", func() error {
		return expectMembers(others, map[string]MemberState{victim.name: StateDead})
	})
	for _, n := range others {
		snap := n.store.Snapshot()
		if countOwned(snap.UpRecords(kindTest), victim.name) != 0 {
			t.Errorf("%s: a dead node's endpoint is still up", n.name)
		}
		if countOwned(snap.Records(KindBlock), victim.name) != 1 {
			t.Errorf("%s: a dead node's block is no longer reserved", n.name)
		}
		if countOwned(snap.Records(kindTest), victim.name) != 1 {
			t.Errorf("%s: a dead node's endpoint record is gone from the store", n.name)
		}
	}

	// It restarts with its state lost, under the same name, elsewhere.
	cfg := testConfig(t, 2)
	cfg.Join = []string{nodes[0].addr()}
	back := startNode(t, cfg, false)
	all := []*testNode{nodes[0], nodes[1], back}
	eventually(t, converge, "back alive", func() error { return expectMembers(all, allAlive(all)) })
	eventually(t, converge, "endpoint up again", func() error {
		for _, n := range all {
			if countOwned(n.store.Snapshot().UpRecords(kindTest), victim.name) != 1 {
				return fmt.Errorf("%s: endpoint of %s not up", n.name, victim.name)
			}
		}
		return nil
	})
	// The returned node took its own records back from its peers.
	eventually(t, converge, "own records adopted", func() error {
		if got := len(back.store.Owned()); got != 2 {
			return fmt.Errorf("%s owns %d records, want 2", back.name, got)
		}
		return nil
	})
}

func countOwned(recs []Record, owner string) int {
	n := 0
	for _, r := range recs {
		if r.Owner == owner {
			n++
		}
	}
	return n
}

func TestClusterGracefulLeaveShowsLeft(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 3, false)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	leaver := nodes[2]
	if _, err := leaver.store.Put(kindTest, "ep", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "record", func() error { return expectRecord(nodes, kindTest, leaver.name, "ep", true) })
	if err := leaver.leave(); err != nil {
		t.Fatalf("Run after leaving: %v", err)
	}
	eventually(t, converge, "left", func() error {
		return expectMembers(nodes[:2], map[string]MemberState{leaver.name: StateLeft})
	})
	for _, n := range nodes[:2] {
		if countOwned(n.store.Snapshot().UpRecords(kindTest), leaver.name) != 0 {
			t.Errorf("%s: the left node's endpoint is still up", n.name)
		}
	}
}

func TestClusterWrongKeyCannotJoin(t *testing.T) {
	checkGoroutineLeaks(t)
	seed := startNode(t, testConfig(t, 0), false)
	cfg := testConfig(t, 1)
	cfg.Key = testKeyB
	cfg.Join = []string{seed.addr()}
	intruder := startNode(t, cfg, false)

	// Give it many retries.
	time.Sleep(2 * time.Second)
	if st := memberStates(seed, intruder.name)[intruder.name]; st != "" {
		t.Errorf("the seed lists a node with the wrong key as %q", st)
	}
	if st := memberStates(intruder, seed.name)[seed.name]; st != "" {
		t.Errorf("the node with the wrong key lists the seed as %q", st)
	}
	if n := intruder.c.NumMembers(); n != 1 {
		t.Errorf("the node with the wrong key has %d members", n)
	}
	// Each side's log must say why, for the operator.
	eventually(t, converge, "the reason in the logs", func() error {
		if l := intruder.log.String(); !strings.Contains(l, "no seed or peer answered") || !strings.Contains(l, "decrypt") {
			return fmt.Errorf("the joining node's log does not say the key is wrong:\n%s", lastLines(l, 5))
		}
		if l := seed.log.String(); !strings.Contains(l, "decrypt") {
			return fmt.Errorf("the seed's log does not say it could not decrypt:\n%s", lastLines(l, 5))
		}
		return nil
	})
	t.Logf("joining node logs: %s", lastMatching(intruder.log.String(), "no seed"))
	t.Logf("seed logs: %s", lastMatching(seed.log.String(), "decrypt"))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func lastMatching(s, sub string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return ""
}

func TestClusterRefusesBadKeys(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no key":    func(c *Config) { c.Key = nil },
		"short key": func(c *Config) { c.Key = testKeyA[:16] },
		"no name":   func(c *Config) { c.NodeName = "" },
		"other name": func(c *Config) {
			c.NodeName = "someone-else"
		},
	} {
		cfg := testConfig(t, 0)
		mutate(&cfg)
		c, err := New(cfg, NewStore(StoreConfig{Self: "n00"}))
		if err == nil {
			c.Close()
			t.Errorf("%s: New succeeded", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
	// Insecure works without a key.
	cfg := testConfig(t, 0)
	cfg.Key, cfg.Insecure = nil, true
	c, err := New(cfg, NewStore(StoreConfig{Self: "n00"}))
	if err != nil {
		t.Fatalf("insecure: %v", err)
	}
	c.Close()
}

// A host that boots before its seed keeps retrying and joins once the seed
// is up.
func TestClusterJoinsSeedThatStartsLater(t *testing.T) {
	checkGoroutineLeaks(t)
	seedCfg := testConfig(t, 0)
	seedCfg.BindPort = freePort(t, seedCfg.BindAddr)
	cfg := testConfig(t, 1)
	cfg.Join = []string{net.JoinHostPort(seedCfg.BindAddr, fmt.Sprint(seedCfg.BindPort))}
	early := startNode(t, cfg, false)

	eventually(t, converge, "retrying", func() error {
		if strings.Count(early.log.String(), "no seed or peer answered") < 3 {
			return errors.New("fewer than 3 failed join attempts logged")
		}
		return nil
	})
	seed := startNode(t, seedCfg, false)
	both := []*testNode{seed, early}
	eventually(t, converge, "joined", func() error { return expectMembers(both, allAlive(both)) })
}

// freePort finds a port free for both TCP and UDP on addr. The address is
// this test's own, so nothing else takes the port before the test uses it.
func freePort(t *testing.T, addr string) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(addr, fmt.Sprint(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// Truncated and foreign packets and streams sent to the gossip port are
// dropped; the node stays up and membership keeps working.
func TestClusterSurvivesGarbage(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 2, false)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	target := nodes[1].addr()

	rng := rand.New(rand.NewPCG(5, 6))
	udp, err := net.Dial("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	payloads := [][]byte{{}, {0}, {1}, {2, 0, 0}, {244}, {245, 5, 'h', 'e'}, []byte("meshnet"),
		append([]byte{245, 12}, "meshnet-test"...)} // a label header and nothing after
	for i := 0; i < 300; i++ {
		p := make([]byte, rng.IntN(1400))
		for j := range p {
			p[j] = byte(rng.UintN(256))
		}
		if i%3 == 0 && len(p) > 14 { // a valid label header, then junk
			copy(p, append([]byte{245, 12}, "meshnet-test"...))
		}
		payloads = append(payloads, p)
	}
	for _, p := range payloads {
		udp.Write(p)
	}
	for i := 0; i < 20; i++ {
		c, err := net.DialTimeout("tcp", target, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write(payloads[rng.IntN(len(payloads))])
		c.Close()
	}

	// Still a working member: a new node joins, a record spreads.
	cfg := testConfig(t, 2)
	cfg.Join = []string{target}
	late := startNode(t, cfg, false)
	all := append(nodes, late)
	eventually(t, converge, "membership after garbage", func() error { return expectMembers(all, allAlive(all)) })
	if _, err := late.store.Put(KindNode, "", NodeInfo{Addr: "198.18.0.13"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "record after garbage", func() error { return expectRecord(all, KindNode, late.name, "", true) })
}

// Close and Run's context may end a node in either order, more than once,
// and Close makes Run return.
func TestClusterLifecycle(t *testing.T) {
	checkGoroutineLeaks(t)
	t.Run("close then cancel", func(t *testing.T) {
		n := startNode(t, testConfig(t, 0), false)
		n.kill() // Close, wait for Run
		n.cancel()
		if err := n.c.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	t.Run("cancel then close", func(t *testing.T) {
		n := startNode(t, testConfig(t, 0), false)
		if err := n.leave(); err != nil {
			t.Fatal(err)
		}
		if err := n.c.Close(); err != nil {
			t.Errorf("Close after leave: %v", err)
		}
	})
	t.Run("close without run", func(t *testing.T) {
		cfg := testConfig(t, 0)
		c, err := New(cfg, NewStore(StoreConfig{Self: cfg.NodeName}))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Run(ctx); err != nil || ctx.Err() != nil {
			t.Errorf("Run after Close: %v (ctx %v); want it to return at once", err, ctx.Err())
		}
	})
}

// A record too big for a gossip packet still spreads at broadcast speed:
// push/pull is an hour away here.
func TestClusterLargeRecordsSpread(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := make([]*testNode, 5)
	for i := range nodes {
		cfg := testConfig(t, i)
		cfg.Memberlist.PushPullInterval = time.Hour
		if i > 0 {
			cfg.Join = []string{nodes[0].addr()}
		}
		nodes[i] = startNode(t, cfg, false)
	}
	stopTogether(t, nodes)
	meetAll(t, nodes) // push/pull is off
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	for _, size := range []int{1000, 1400, 4000, maxValueLen - 2} {
		id := fmt.Sprint("big-", size)
		if _, err := nodes[1].store.Put(kindTest, id, strings.Repeat("v", size-2)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, fmt.Sprintf("a %d-byte record on every node", size), func() error {
			return expectRecord(nodes, kindTest, nodes[1].name, id, true)
		})
	}
	for _, n := range nodes {
		if q := n.c.queue.NumQueued(); q > 4 {
			t.Errorf("%s: %d broadcasts still queued; large ones must not wait there", n.name, q)
		}
	}
}
