package gossip

import "testing"

// A node restarted without seeds (the first node of a cluster) finds its
// cluster again through the peers it knew before: the others cannot find it,
// since it came back on another port.
func TestClusterRestartedSeedlessNodeRejoinsLastKnownPeers(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 3, false)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	first := nodes[0]
	known := []KnownPeer{{Name: nodes[1].name, Addr: nodes[1].addr()}, {Name: nodes[2].name, Addr: nodes[2].addr()}}
	first.kill()

	cfg := testConfig(t, 0)
	cfg.LastKnown = known
	back := startNode(t, cfg, false)
	all := []*testNode{back, nodes[1], nodes[2]}
	eventually(t, converge, "back in its cluster", func() error { return expectMembers(all, allAlive(all)) })
}

func TestKnownPeers(t *testing.T) {
	s := NewStore(StoreConfig{Self: "a"})
	for owner, info := range map[string]NodeInfo{
		"a": {Addr: "198.18.0.11", GossipPort: 7946}, // self: not a peer
		"c": {Addr: "198.18.0.13", GossipPort: 7946},
		"b": {Addr: "198.18.0.12", GossipPort: 7000},
		"d": {Addr: "198.18.0.14"}, // no gossip port: not joinable
	} {
		o := NewStore(StoreConfig{Self: owner})
		if _, err := o.Put(KindNode, "", info); err != nil {
			t.Fatal(err)
		}
		if owner == "a" {
			if _, err := s.Put(KindNode, "", info); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := s.Merge(o.All()); err != nil {
			t.Fatal(err)
		}
	}
	got := KnownPeers(s.Snapshot(), "a")
	want := []KnownPeer{{"b", "198.18.0.12:7000"}, {"c", "198.18.0.13:7946"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("KnownPeers = %v, want %v", got, want)
	}
}
