package ipam

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// addUnjoined starts a node that has not heard from its cluster: in
// partition group (0 is everybody's), and not marked joined by start.
func (n *fakeNet) addUnjoined(t *testing.T, name, dir string, group int) *node {
	t.Helper()
	n.mu.Lock()
	n.group[name] = group
	nd, ok := n.nodes[name]
	if !ok {
		nd = &node{t: t, net: n, name: name, dir: dir, cfg: testConfig()}
		n.nodes[name] = nd
		t.Cleanup(nd.stop)
	}
	nd.unjoined = true
	n.mu.Unlock()
	nd.start()
	return nd
}

// A node cut off from its cluster since it started, with no state, creates
// no pool: the subnet it would take from the bottom is in use elsewhere.
// Once it hears from the cluster it joins the pool and takes addresses
// nobody holds.
func TestNoPoolBeforeJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		p := netip.MustParsePrefix("10.42.0.0/24")
		pool := mustPool(t, n1.ipamOf(), p, nil)
		held := map[netip.Addr]bool{}
		for range 5 {
			held[alloc(t, n1.ipamOf(), pool)] = true
		}

		n2 := net.addUnjoined(t, "n2", t.TempDir(), 1)
		a2 := n2.ipamOf()
		_, err := a2.RequestPool(p, nil)
		wantKind(t, err, ErrNotJoined, "n2 has not heard from its cluster")
		_, err = a2.RequestPool(netip.MustParsePrefix("10.99.0.0/24"), nil)
		wantKind(t, err, ErrNotJoined)
		if _, ok := a2.Joined(); ok {
			t.Fatal("Joined before any exchange")
		}
		if ps := a2.Status().Pools; len(ps) != 0 {
			t.Fatalf("a refused creation left pools behind: %+v", ps)
		}

		// Gossip comes back: the daemon marks the node joined after the
		// exchange.
		net.setGroups(map[string]int{})
		net.syncAll()
		if err := a2.MarkJoined("full state exchange"); err != nil {
			t.Fatal(err)
		}
		if j, ok := a2.Joined(); !ok || j.How != "full state exchange" {
			t.Fatalf("Joined = %+v %v", j, ok)
		}
		mustPool(t, a2, p, nil)
		if o := a2.Status().Pools[0].Origin.Node; o != "n1" {
			t.Fatalf("n2 is in the lineage of %s, want n1's", o)
		}
		for range 5 {
			ad := alloc(t, a2, pool)
			if held[ad] {
				t.Fatalf("n2 handed out %s, which n1 holds", ad)
			}
			held[ad] = true
		}
		if c := n1.ipamOf().Status().Conflicts; len(c) != 0 {
			t.Fatalf("conflicts: %v", c)
		}
	})
}

// The mark lives as long as the node's state: a restart keeps it (and the
// node may create pools while partitioned, as before); losing the node's
// own records or its cluster cache loses it.
func TestJoinMarkLivesWithState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		dir := t.TempDir()
		n1 := net.addNode(t, "n1", dir, testConfig())
		mustPool(t, n1.ipamOf(), netip.MustParsePrefix("10.42.0.0/24"), nil)

		n1.stop()
		n1 = net.addUnjoined(t, "n1", dir, 0)
		if _, ok := n1.ipamOf().Joined(); !ok {
			t.Fatal("the mark did not survive a restart")
		}
		mustPool(t, n1.ipamOf(), netip.MustParsePrefix("10.43.0.0/24"), nil)

		for _, lost := range []string{"own.json", ClusterCacheFile} {
			func() { // (no subtests inside a synctest bubble)
				n1.stop()
				if err := os.Remove(filepath.Join(dir, lost)); err != nil {
					t.Fatal(err)
				}
				t.Logf("without %s", lost)
				n1 = net.addUnjoined(t, "n1", dir, 0)
				if _, ok := n1.ipamOf().Joined(); ok {
					t.Fatalf("joined after %s was lost", lost)
				}
				_, err := n1.ipamOf().RequestPool(netip.MustParsePrefix("10.44.0.0/24"), nil)
				wantKind(t, err, ErrNotJoined)
				if err := n1.ipamOf().MarkJoined("again"); err != nil {
					t.Fatal(err)
				}
			}()
		}
	})
}

// What a node owns by its own persisted records stays usable before it
// heard from the cluster (a restart during a partition, or a state from
// before the mark existed); once that is used up it says so at once
// instead of waiting for a block nobody can hand it.
func TestOwnBlocksUsableBeforeJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		dir := t.TempDir()
		cfg := testConfig()
		cfg.HandoffWait = time.Hour // a wait would end in the test's context error
		n1 := net.addNode(t, "n1", dir, cfg)
		p := netip.MustParsePrefix("10.42.0.0/28") // one block: 13 usable addresses
		pool := mustPool(t, n1.ipamOf(), p, nil)
		held := map[netip.Addr]bool{}
		for range 3 {
			held[alloc(t, n1.ipamOf(), pool)] = true
		}
		n1.stop()
		if err := os.Remove(filepath.Join(dir, ClusterCacheFile)); err != nil {
			t.Fatal(err)
		}
		n1 = net.addUnjoined(t, "n1", dir, 0)
		a := n1.ipamOf()
		if _, ok := a.Joined(); ok {
			t.Fatal("joined without the mark")
		}
		mustPool(t, a, p, nil) // Docker's replay of the pool: it is n1's own
		gw, err := requestAddress(context.Background(), a, pool, netip.Addr{}, true)
		if err != nil || gw.Addr() != netip.MustParseAddr("10.42.0.1") {
			t.Fatalf("gateway: %v %v", gw, err)
		}
		for range 10 {
			ad := alloc(t, a, pool)
			if held[ad] {
				t.Fatalf("%s handed out twice", ad)
			}
			held[ad] = true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = requestAddress(ctx, a, pool, netip.Addr{}, false)
		wantKind(t, err, ErrNotJoined, "no free address in the blocks this node owns")
	})
}
