package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"
)

// The creator of a pool that learns of a second, later creation (made
// before the two nodes saw each other) must wait for the later creator to
// give way, not fail: in the meantime the rival's claim freezes every block.
// Docker asks for the first address right after creating the network, so
// this window is what the e2e suite hit.
func TestCreatorWaitsForRivalCreationToConcede(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, false)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		p := netip.MustParsePrefix("10.71.0.0/24")
		pool := mustPool(t, n1.ipamOf(), p, nil)
		net.step(time.Millisecond)
		mustPool(t, n2.ipamOf(), p, nil)
		// n1 hears of n2's creation; n2 has not heard of n1's yet.
		n1.merge(n2.store().All())

		type result struct {
			addr netip.Prefix
			err  error
		}
		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a, err := n1.ipamOf().RequestAddress(ctx, pool, netip.Addr{}, false)
			done <- result{a, err}
		}()
		for range 20 { // 200 ms of the nodes' time, well short of FullAfter
			net.step(stepSize)
		}
		select {
		case r := <-done:
			t.Fatalf("RequestAddress returned before the rival conceded: %v %v", r.addr, r.err)
		default:
		}
		// Now n2 hears of n1's creation, concedes, and the news travels back.
		n2.merge(n1.store().All())
		for i := 0; ; i++ {
			net.pump(1000)
			net.syncAll()
			synctest.Wait()
			select {
			case r := <-done:
				if r.err != nil {
					t.Fatalf("RequestAddress after the rival conceded: %v", r.err)
				}
				if !p.Contains(r.addr.Addr()) {
					t.Fatalf("got %s, outside %s", r.addr, p)
				}
				return
			default:
			}
			if i == int(5*time.Second/stepSize) {
				t.Fatal("RequestAddress did not return within 5 s of the nodes' time after the rival conceded")
			}
			net.step(stepSize)
		}
	})
}

// The e2e shape that failed: three nodes create the same network within
// milliseconds, twice in a row (the network removed in between). The first
// node's pool wins, the second's concedes, and the third, which joined the
// winner, must get a block even though it asked while the rival creation
// still froze every block.
func TestThirdNodeServedAfterRivalCreationTwice(t *testing.T) {
	for seed := range int64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { synctest.Test(t, func(t *testing.T) { thirdNodeServed(t, seed) }) })
	}
}

func thirdNodeServed(t *testing.T, seed int64) {
	net := newFakeNet(seed, false)
	cfg := testConfig()
	cfg.HandoffWait = 3 * time.Second
	n1 := net.addNode(t, "n1", t.TempDir(), cfg)
	n2 := net.addNode(t, "n2", t.TempDir(), cfg)
	n3 := net.addNode(t, "n3", t.TempDir(), cfg)
	p := netip.MustParsePrefix("10.72.0.0/24")
	for round := range 2 {
		pool := mustPool(t, n1.ipamOf(), p, nil)
		if _, err := n1.ipamOf().RequestAddress(context.Background(), pool, netip.Addr{}, true); err != nil {
			t.Fatalf("round %d: gateway: %v", round, err)
		}
		net.step(time.Millisecond)
		mustPool(t, n2.ipamOf(), p, nil) // before n1's creation reached it
		if _, err := n2.ipamOf().RequestAddress(context.Background(), pool, netip.Addr{}, true); err != nil {
			t.Fatalf("round %d: n2: gateway: %v", round, err)
		}
		// n3 hears of both creations (in the seed's order) and joins.
		net.pump(1000)
		mustPool(t, n3.ipamOf(), p, nil)
		if _, err := n3.ipamOf().RequestAddress(context.Background(), pool, netip.Addr{}, true); err != nil {
			t.Fatalf("round %d: n3: gateway: %v", round, err)
		}

		type result struct {
			node string
			addr netip.Prefix
			err  error
		}
		done := make(chan result, 3)
		for _, nd := range []*node{n1, n2, n3} {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				a, err := nd.ipamOf().RequestAddress(ctx, pool, netip.Addr{}, false)
				done <- result{nd.name, a, err}
			}()
		}
		got := map[netip.Addr]string{}
		for i := 0; len(got) < 3; i++ {
			net.pump(1000) // broadcasts only: push/pull comes every 30 s in a cluster
			synctest.Wait()
			select {
			case r := <-done:
				if r.err != nil {
					t.Fatalf("round %d: %s: RequestAddress: %v", round, r.node, r.err)
				}
				if other, dup := got[r.addr.Addr()]; dup {
					t.Fatalf("round %d: %s and %s both got %s", round, other, r.node, r.addr)
				}
				got[r.addr.Addr()] = r.node
				continue
			default:
			}
			if i == int(15*time.Second/stepSize) {
				t.Fatalf("round %d: only %v got an address within 15 s of the nodes' time", round, got)
			}
			net.step(stepSize)
		}
		// Docker removes the network everywhere: every address, then the pool.
		for ad, name := range got {
			if err := net.nodes[name].ipamOf().ReleaseAddress(pool, ad); err != nil {
				t.Fatal(err)
			}
		}
		for _, nd := range []*node{n1, n2, n3} {
			if err := nd.ipamOf().ReleasePool(pool); err != nil {
				t.Fatalf("round %d: %s: ReleasePool: %v", round, nd.name, err)
			}
		}
		net.pump(1000)
		net.syncAll()
	}
}

// A donor whose blocks a rival creation still freezes leaves a request for
// any block open, instead of answering "none" (which sends the requester
// away for its whole RequestTimeout), and grants it once the rival gives way.
func TestDonorLeavesRequestOpenWhileBlocksFrozen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(3, false)
		cfg := testConfig()
		cfg.RequestTimeout = time.Hour // the requester must not ask again: only the first request counts
		n1 := net.addNode(t, "n1", t.TempDir(), cfg)
		n2 := net.addNode(t, "n2", t.TempDir(), cfg)
		n3 := net.addNode(t, "n3", t.TempDir(), cfg)
		p := netip.MustParsePrefix("10.73.0.0/24")
		pool := mustPool(t, n1.ipamOf(), p, nil)
		net.step(time.Millisecond)
		mustPool(t, n2.ipamOf(), p, nil) // a rival creation, before n1's reached n2
		// n1 and n3 hear of both creations; n2 hears nothing yet, so it does not concede.
		n1.merge(n2.store().All())
		n3.merge(n1.store().All())
		n3.merge(n2.store().All())
		mustPool(t, n3.ipamOf(), p, nil)

		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := n3.ipamOf().RequestAddress(ctx, pool, netip.Addr{}, false)
			done <- err
		}()
		// n3's request reaches n1 while n2's claim freezes n1's blocks.
		net.eventually(t, "n3's request at n1", func() bool {
			n1.merge(n3.store().All())
			n1.ipamOf().mu.Lock()
			defer n1.ipamOf().mu.Unlock()
			v := n1.ipamOf().viewLocked(pool)
			return v != nil && len(v.requests) > 0
		})
		for range 5 { // n1 reconciles with the request in view, at every resync too
			net.step(cfg.ResyncInterval)
		}
		n1.ipamOf().mu.Lock()
		rec, _ := n1.ipamOf().ownPoolRecord(pool)
		n1.ipamOf().mu.Unlock()
		if rec.Answered["n3"] != 0 {
			t.Fatalf("n1 answered n3's request (seq %d) while its blocks were frozen; want it left open", rec.Answered["n3"])
		}
		// n2 hears of n1's creation, concedes, and everything spreads.
		n2.merge(n1.store().All())
		for i := 0; ; i++ {
			net.pump(1000)
			net.syncAll()
			synctest.Wait()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("n3: RequestAddress after the rival gave way: %v", err)
				}
				return
			default:
			}
			if i == int(10*time.Second/stepSize) {
				t.Fatal("n3 got no address within 10 s of the nodes' time after the rival gave way")
			}
			net.step(stepSize)
		}
	})
}
