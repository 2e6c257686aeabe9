package ipam

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// The creator of a pool that learns of a second, later creation (made
// before the two nodes saw each other) must wait for the later creator to
// give way, not fail: in the meantime the rival's claim freezes every block.
// Docker asks for the first address right after creating the network, so
// this window is what the e2e suite hit.
func TestCreatorWaitsForRivalCreationToConcede(t *testing.T) {
	net := newFakeNet(1, false)
	n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
	n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
	p := netip.MustParsePrefix("10.71.0.0/24")
	pool := mustPool(t, n1.ipamOf(), p, nil)
	time.Sleep(time.Millisecond)
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
	select {
	case r := <-done:
		t.Fatalf("RequestAddress returned before the rival conceded: %v %v", r.addr, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	// Now n2 hears of n1's creation, concedes, and the news travels back.
	n2.merge(n1.store().All())
	deadline := time.After(5 * time.Second)
	for {
		net.pump(1000)
		net.syncAll()
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("RequestAddress after the rival conceded: %v", r.err)
			}
			if !p.Contains(r.addr.Addr()) {
				t.Fatalf("got %s, outside %s", r.addr, p)
			}
			return
		case <-deadline:
			t.Fatal("RequestAddress did not return after the rival conceded")
		case <-time.After(10 * time.Millisecond):
		}
	}
}
