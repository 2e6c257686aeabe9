package ipam

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/clock"
)

// RequestAddress waits for a block exactly as long as Config.HandoffWait
// says, on the IPAM's clock: here a donor whose Run loop is not running
// never answers, and the call ends with ErrHandoffTimeout when, and only
// when, the fake clock has moved HandoffWait on.
func TestHandoffWaitOnTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		clk := net.clk.(*clock.Fake)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		pool := mustPool(t, n1.ipamOf(), netip.MustParsePrefix("10.42.0.0/24"), nil)
		// n1 keeps its store (records still arrive) but stops answering.
		n1.mu.Lock()
		n1.cancel()
		<-n1.done
		n1.mu.Unlock()
		mustPool(t, n2.ipamOf(), netip.MustParsePrefix("10.42.0.0/24"), nil)

		done := make(chan error, 1)
		go func() {
			_, err := n2.ipamOf().RequestAddress(context.Background(), pool, netip.Addr{}, false)
			done <- err
		}()
		synctest.Wait() // it asked n1 and waits, its timers armed
		wait := testConfig().HandoffWait
		clk.Advance(wait - time.Millisecond)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("returned before HandoffWait: %v", err)
		default:
		}
		clk.Advance(time.Millisecond)
		synctest.Wait()
		select {
		case err := <-done:
			wantKind(t, err, ErrHandoffTimeout, "within "+wait.String())
		default:
			t.Fatalf("still waiting once HandoffWait passed (now %v, %d timers)", clk.Now(), clk.Timers())
		}
	})
}

// Two containers asking at once for preferred addresses in two blocks
// another node owns both get them: their requests take turns on the one
// request record of the pool instead of overwriting each other at every
// store change (which kept both waiting, and the node writing, for as long
// as HandoffWait).
func TestTwoPreferredAddressesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		p := netip.MustParsePrefix("10.42.0.0/24") // 16 blocks of /28, all n1's
		pool := mustPool(t, n1.ipamOf(), p, nil)
		mustPool(t, n2.ipamOf(), p, nil)
		want := []netip.Addr{netip.MustParseAddr("10.42.0.100"), netip.MustParseAddr("10.42.0.200")}
		errs := make(chan error, len(want))
		for _, ad := range want {
			go func() {
				got, err := n2.ipamOf().RequestAddress(context.Background(), pool, ad, false)
				if err == nil && got.Addr() != ad {
					t.Errorf("asked for %s, got %s", ad, got)
				}
				errs <- err
			}()
		}
		for range want {
			var err error
			net.eventually(t, "both preferred addresses handed out", func() bool {
				select {
				case err = <-errs:
					return true
				default:
					return false
				}
			})
			if err != nil {
				t.Fatalf("preferred address: %v", err)
			}
		}
		if got := n2.ipamOf().Allocations(pool); !sameAddrs(got, want) {
			t.Fatalf("n2 holds %v, want %v", got, want)
		}
	})
}

// A request whose broadcast is lost is answered well before RequestTimeout:
// the requester gossips it (and its pool record) once more after a quarter
// of it. Before, the donor never heard of it until the timeout, and the
// requester then skipped its only donor for another RequestTimeout: a
// container waited two timeouts (11 s in an e2e run) for its first address.
func TestLostRequestGossipedAgain(t *testing.T) {
	for _, lost := range []int{1, 2} {
		t.Run(map[int]string{1: "first copy lost", 2: "first two copies lost"}[lost], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				net := newFakeNet(1, true)
				clk := net.clk.(*clock.Fake)
				var mu sync.Mutex
				dropped := 0
				net.drop = func(from, to string, r gossip.Record) bool {
					mu.Lock()
					defer mu.Unlock()
					if from == "n2" && r.Kind == KindRequest && dropped < lost {
						dropped++
						return true
					}
					return false
				}
				n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
				n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
				p := netip.MustParsePrefix("10.42.0.0/24") // 16 blocks of /28, all n1's
				pool := mustPool(t, n1.ipamOf(), p, nil)
				mustPool(t, n2.ipamOf(), p, nil)

				start := clk.Now()
				done := make(chan error, 1)
				go func() {
					_, err := n2.ipamOf().RequestAddress(context.Background(), pool, netip.Addr{}, false)
					done <- err
				}()
				timeout := testConfig().RequestTimeout
				// One copy lost: answered after the re-gossip at a quarter of
				// the timeout. Two: the donor is asked again when the timeout
				// ends, not skipped for another one.
				bound := timeout/2 + timeout/8
				if lost == 2 {
					bound = timeout + timeout/2
				}
				for {
					select {
					case err := <-done:
						if err != nil {
							t.Fatalf("request address: %v", err)
						}
						took := clk.Now().Sub(start)
						t.Logf("%d lost: the address came after %s (request timeout %s)", lost, took, timeout)
						if took > bound {
							t.Fatalf("%d lost: the address came after %s; want at most %s", lost, took, bound)
						}
						mu.Lock()
						if dropped != lost {
							t.Errorf("dropped %d request broadcasts, want %d: the test lost fewer than it means to", dropped, lost)
						}
						mu.Unlock()
						return
					default:
					}
					if clk.Now().Sub(start) > 4*timeout {
						t.Fatalf("%d lost: no address after %s", lost, clk.Now().Sub(start))
					}
					clk.Advance(timeout / 40)
					synctest.Wait()
				}
			})
		})
	}
}
