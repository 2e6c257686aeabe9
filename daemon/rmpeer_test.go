package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/gossip"
)

func TestStillSeen(t *testing.T) {
	dead, alive, suspect := gossip.StateDead, gossip.StateAlive, gossip.StateSuspect
	removed := map[string]uint64{"h5": 7}
	left := gossip.StateLeft
	for _, tc := range []struct {
		name string
		seen []gossip.Sighting
		want []string // nil: removal allowed
	}{
		{"gone everywhere", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", Member: alive, State: dead}, {Node: "h3", Member: dead, Err: "not reached: connection refused"},
		}, nil},
		{"partitioned from us only", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", Member: alive, State: alive}, {Node: "h4", Member: alive, State: suspect}, {Node: "h3", Member: dead, Err: "not reached"},
		}, []string{"h3 is still seen alive by h2 (alive), h4 (suspect)", "--force h3"}},
		{"answers itself", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", Member: alive, State: dead}, {Node: "h3", Member: dead, State: alive, Self: true},
		}, []string{"h3 answered", "itself", "--force h3"}},
		{"a member does not answer", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", Member: alive, State: dead}, {Node: "h4", Member: dead, Err: "no answer within 5s"}, {Node: "h3", Err: "not reached"},
		}, []string{"could not ask h4 (dead here; no answer within 5s)", "--force h3"}},
		{"left and removed members have no say", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", Member: alive, State: dead}, {Node: "h4", Member: left, Err: "not reached"}, {Node: "h5", Member: dead, Err: "not reached"},
		}, nil},
		{"nobody confirms", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h3", Member: dead, Err: "not reached"},
		}, []string{"no other node confirms", "--force h3"}},
		{"unknown to the others", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", Member: alive, State: ""},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := stillSeen("h3", "h1", tc.seen, removed)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("allowed")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
		})
	}
}

// RemovePeer asks the cluster unless forced, refuses with the members'
// word as the operator's mistake (400), and writes the removal otherwise.
func TestRemovePeerAsksTheCluster(t *testing.T) {
	p := newPluginDaemon(t, true)
	d := p.d
	d.store.SetMember(gossip.Member{Name: "h2", Addr: "198.18.0.12", State: gossip.StateAlive})
	d.store.SetMember(gossip.Member{Name: "h3", Addr: "198.18.0.13", State: gossip.StateDead})
	asked := 0
	h2sees := gossip.StateAlive
	d.sightings = func(_ context.Context, node string) ([]gossip.Sighting, error) {
		asked++
		return []gossip.Sighting{
			{Node: "n1", Member: gossip.StateAlive, State: gossip.StateDead},
			{Node: "h2", Member: gossip.StateAlive, State: h2sees},
			{Node: node, Member: gossip.StateDead, Err: "not reached"},
		}, nil
	}
	b := controlBackend{d}
	removed := func() bool {
		_, ok := d.store.Snapshot().Get(gossip.KindRemoval, "n1", "h3")
		return ok
	}
	err := b.RemovePeer(context.Background(), control.RemovePeerRequest{Node: "h3"})
	var ue control.UserError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "still seen alive by h2") || asked != 1 || removed() {
		t.Fatalf("rmpeer of a node h2 sees: %v (asked %d, removed %v)", err, asked, removed())
	}
	if err := b.RemovePeer(context.Background(), control.RemovePeerRequest{Node: "h3", Force: true}); err != nil || asked != 1 || !removed() {
		t.Fatalf("rmpeer --force: %v (asked %d, removed %v)", err, asked, removed())
	}
	// Refused before asking: a node that is up here.
	err = b.RemovePeer(context.Background(), control.RemovePeerRequest{Node: "h2", Force: true})
	if !errors.As(err, &ue) || asked != 1 {
		t.Fatalf("rmpeer --force of a node up here: %v (asked %d)", err, asked)
	}
}
