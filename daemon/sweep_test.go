package daemon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshnet/meshnet/plugin"
)

func TestUnheld(t *testing.T) {
	snap := testSnapshot(t, "") // h1 owns endpoint ep1aaaaaaaaaaaa at 10.42.0.2; h2 and h3 own others
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	allocations := map[string][]netip.Addr{
		"10.42.0.0/24": addrs("10.42.0.2", "10.42.0.3", "10.42.0.4"),
		"10.50.0.0/24": addrs("10.50.0.7"), // a pool whose network the engine removed
	}
	gateways := map[netip.Addr]bool{netip.MustParseAddr("10.42.0.1"): true, netip.MustParseAddr("10.50.0.1"): true}
	keys := func(ls []leak) []string {
		var out []string
		for _, l := range ls {
			out = append(out, l.key())
		}
		return out
	}

	// The engine holds ep1 at 10.42.0.2 and 10.42.0.3 (a bridge network on meshnet's IPAM, say).
	held := plugin.Held{
		Endpoints: map[string]bool{"ep1aaaaaaaaaaaa": true},
		Addrs:     map[netip.Addr]bool{netip.MustParseAddr("10.42.0.2"): true, netip.MustParseAddr("10.42.0.3"): true},
	}
	got := keys(unheld("h1", snap, allocations, gateways, held))
	want := []string{"address 10.42.0.0/24 10.42.0.4", "address 10.50.0.0/24 10.50.0.7"}
	if !slices.Equal(got, want) {
		t.Errorf("unheld = %q, want %q", got, want)
	}

	// The engine lost the endpoint (a Join that failed while meshnetd was down): its record
	// and its address are leaks; other nodes' endpoints are never this node's to free.
	held = plugin.Held{Endpoints: map[string]bool{}, Addrs: map[netip.Addr]bool{}}
	got = keys(unheld("h1", snap, allocations, gateways, held))
	want = []string{"address 10.42.0.0/24 10.42.0.2", "address 10.42.0.0/24 10.42.0.3", "address 10.42.0.0/24 10.42.0.4",
		"address 10.50.0.0/24 10.50.0.7", "endpoint ep1aaaaaaaaaaaa"}
	if !slices.Equal(got, want) {
		t.Errorf("unheld with nothing held = %q, want %q", got, want)
	}
}

func TestLeakTracker(t *testing.T) {
	const grace = time.Minute
	t0 := time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)
	a := leak{pool: "10.42.0.0/24", addr: netip.MustParseAddr("10.42.0.4")}
	b := leak{endpoint: "ep9"}
	var tr leakTracker

	if due, _ := tr.observe(t0, []leak{a, b}, grace); len(due) != 0 {
		t.Fatalf("due at first sight: %v", due)
	}
	// b is held again (the container started after all): it starts over.
	if due, _ := tr.observe(t0.Add(30*time.Second), []leak{a}, grace); len(due) != 0 {
		t.Fatalf("due before the grace: %v", due)
	}
	due, since := tr.observe(t0.Add(grace), []leak{a, b}, grace)
	if len(due) != 1 || due[0] != a || !since[0].Equal(t0) {
		t.Fatalf("after the grace: due %v since %v, want only %v since %v", due, since, a, t0)
	}
	if due, _ = tr.observe(t0.Add(grace+30*time.Second), []leak{a, b}, grace); len(due) != 1 {
		t.Fatalf("b unheld for half a grace since it came back: due %v, want only a", due)
	}
	due, _ = tr.observe(t0.Add(2*grace), []leak{a, b}, grace)
	if len(due) != 2 {
		t.Fatalf("b unheld for a whole grace since it came back: due %v, want both", due)
	}
	// A pass that could not ask the engine forgets everything.
	tr.since = nil
	if due, _ := tr.observe(t0.Add(3*grace), []leak{a, b}, grace); len(due) != 0 {
		t.Fatalf("due right after a reset: %v", due)
	}
}
