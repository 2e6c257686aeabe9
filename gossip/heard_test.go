package gossip

import (
	"context"
	"testing"
	"time"
)

func heard(n *testNode) bool {
	select {
	case <-n.c.Heard():
		return true
	default:
		return false
	}
}

// Heard closes on both sides of the first full state exchange, not before:
// a node alone has heard nobody.
func TestHeard(t *testing.T) {
	checkGoroutineLeaks(t)
	n0 := startNode(t, testConfig(t, 0), false)
	if heard(n0) {
		t.Fatal("a node alone has heard from its cluster")
	}
	cfg := testConfig(t, 1)
	cfg.Join = []string{n0.addr()}
	n1 := startNode(t, cfg, false)
	stopTogether(t, []*testNode{n0, n1})
	for _, n := range []*testNode{n0, n1} {
		select {
		case <-n.c.Heard():
		case <-time.After(15 * time.Second):
			t.Fatalf("%s has not heard from the other after 15s", n.name)
		}
	}
	// By then the other's records are in the store.
	if _, ok := n1.store.Snapshot().Members[n0.name]; !ok {
		t.Fatalf("%s heard, but does not know %s", n1.name, n0.name)
	}
}

func TestSeedsOnlySelf(t *testing.T) {
	for _, tc := range []struct {
		join []string
		want bool
	}{
		{nil, true},
		{[]string{"198.18.0.11:7946"}, true},
		{[]string{"198.18.0.11"}, true}, // the node's port is the mesh's
		{[]string{"198.18.0.11", "198.18.0.11:7946"}, true},
		{[]string{"198.18.0.11", "198.18.0.12"}, false},
		{[]string{"198.18.0.12:7946"}, false},
		{[]string{"198.18.0.11:7947"}, false},
	} {
		c := &Cluster{cfg: Config{Join: tc.join, BindPort: 7946}, localHost: "198.18.0.11", localPort: 7946}
		if got := c.SeedsOnlySelf(); got != tc.want {
			t.Errorf("join %v: SeedsOnlySelf = %v, want %v", tc.join, got, tc.want)
		}
	}
	// Seeds that expand to nothing yet may still come.
	c := &Cluster{cfg: Config{Join: []string{"seeds.example"}, BindPort: 7946, Seeds: emptySeeds{}}, localHost: "198.18.0.11", localPort: 7946, stop: make(chan struct{})}
	if c.SeedsOnlySelf() {
		t.Error("a join list that expands to nothing counts as only this node")
	}
}

type emptySeeds struct{}

func (emptySeeds) Seeds(context.Context, []string) ([]string, error) { return nil, nil }

// Sightings asks every member that is up and the node itself; a node that
// is gone is reported by the others as dead and as not reached itself.
func TestSightings(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 3, false)
	eventually(t, 20*time.Second, "all up", func() error { return expectAllUp(nodes) })
	ctx := context.Background()
	got, err := nodes[0].c.Sightings(ctx, nodes[2].name)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Sighting{
		"n00": {Node: "n00", State: StateAlive},
		"n01": {Node: "n01", State: StateAlive},
		"n02": {Node: "n02", State: StateAlive, Self: true},
	}
	if len(got) != 3 || got[0].Node != "n00" {
		t.Fatalf("sightings %+v: want n00's own view first, then n01 and n02", got)
	}
	for _, s := range got {
		w := want[s.Node]
		if s.State.Up() != w.State.Up() || s.Self != w.Self || s.Err != "" {
			t.Errorf("sighting %+v, want %+v", s, w)
		}
	}

	nodes[2].kill()
	eventually(t, 30*time.Second, "n02 dead", func() error {
		return expectMembers(nodes[:2], map[string]MemberState{"n02": StateDead})
	})
	got, err = nodes[0].c.Sightings(ctx, nodes[2].name)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got {
		switch s.Node {
		case "n00", "n01":
			if s.State != StateDead || s.Err != "" {
				t.Errorf("%s: %+v, want dead", s.Node, s)
			}
		case "n02":
			if s.Self || s.Err == "" {
				t.Errorf("the killed node answered: %+v", s)
			}
		}
	}
}
