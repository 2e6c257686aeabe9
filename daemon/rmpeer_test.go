package daemon

import (
	"strings"
	"testing"

	"github.com/meshnet/meshnet/gossip"
)

func TestStillSeen(t *testing.T) {
	dead, alive, suspect := gossip.StateDead, gossip.StateAlive, gossip.StateSuspect
	for _, tc := range []struct {
		name string
		seen []gossip.Sighting
		want []string // nil: removal allowed
	}{
		{"gone everywhere", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", State: dead}, {Node: "h3", Err: "not reached: connection refused"},
		}, nil},
		{"partitioned from us only", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", State: alive}, {Node: "h4", State: suspect}, {Node: "h3", Err: "not reached"},
		}, []string{"h3 is still seen alive by h2 (alive), h4 (suspect)", "--force h3"}},
		{"answers itself", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", State: dead}, {Node: "h3", State: alive, Self: true},
		}, []string{"h3 answered", "itself", "--force h3"}},
		{"a member does not answer", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", Err: "no answer within 5s"}, {Node: "h3", Err: "not reached"},
		}, []string{"could not ask h2 (no answer within 5s)", "--force h3"}},
		{"unknown to the others", []gossip.Sighting{
			{Node: "h1", State: dead}, {Node: "h2", State: ""},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := stillSeen("h3", "h1", tc.seen)
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
