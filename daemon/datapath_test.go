package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
)

// remoteAddrs lists the remote container addresses a desired state holds.
func remoteAddrs(st dataplane.State) []string {
	var out []string
	for _, n := range st.Networks {
		for _, r := range n.Remotes {
			out = append(out, r.Addr.String())
		}
	}
	slices.Sort(out)
	return out
}

// A dead node keeps its entries while its data path answers, and loses them
// once the probe fails too; a live node is untouched by the probe's verdict.
func TestDataPathView(t *testing.T) {
	underlay := dataplane.UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.11")}
	h2 := netip.MustParseAddr("198.18.0.12")
	for _, tc := range []struct {
		name       string
		dead       string
		probe      dataplane.ProbeState
		wantRemote bool // h2's 10.42.0.20 stays
		wantMember bool // h2 in the tunnel guard's members
	}{
		{"alive, data path up", "", dataplane.ProbeUp, true, true},
		{"alive, data path down (blocked port)", "", dataplane.ProbeDown, true, true},
		{"dead daemon, data path up", "h2", dataplane.ProbeUp, true, true},
		{"dead host, data path down", "h2", dataplane.ProbeDown, false, false},
		{"dead, not probed yet", "h2", dataplane.ProbeUnknown, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := testSnapshot(t, tc.dead)
			view := dataPathView(snap, map[string]dataplane.ProbeStatus{"h2": {State: tc.probe}})
			st := desiredDataplane(view, underlay, 4789)
			has := slices.Contains(remoteAddrs(st), "10.42.0.20")
			if has != tc.wantRemote {
				t.Errorf("h2's endpoint in the desired state: %v, want %v (%v)", has, tc.wantRemote, remoteAddrs(st))
			}
			if m := slices.Contains(memberAddrs(view), h2); m != tc.wantMember {
				t.Errorf("h2 among the tunnel members: %v, want %v", m, tc.wantMember)
			}
		})
	}
	// The snapshot itself is never changed.
	snap := testSnapshot(t, "h2")
	_ = dataPathView(snap, map[string]dataplane.ProbeStatus{"h2": {State: dataplane.ProbeUp}})
	if snap.Members["h2"].State != gossip.StateDead {
		t.Errorf("dataPathView changed the snapshot: h2 is %s", snap.Members["h2"].State)
	}
}

// Probed: nodes with a vxlan network of a subnet this node has, whatever
// gossip says of them, not those that left.
func TestProbePeers(t *testing.T) {
	got := probePeers(testSnapshot(t, "h2"))
	want := []dataplane.ProbePeer{{Name: "h2", Underlay: netip.MustParseAddr("198.18.0.12")}}
	if !slices.Equal(got, want) {
		t.Errorf("probePeers (h2 dead) = %v, want %v", got, want)
	}
	s := gossip.NewStore(gossip.StoreConfig{Self: "h1"})
	info := gossip.NetworkInfo{Subnet: "10.42.0.0/24", Gateway: "10.42.0.1", VNI: 100, Dataplane: "vxlan"}
	wg := gossip.NetworkInfo{Subnet: "10.44.0.0/24", Gateway: "10.44.0.1", VNI: 102, Dataplane: "wireguard"}
	if _, err := s.Merge([]gossip.Record{
		record(t, gossip.KindNode, "h1", "", gossip.NodeInfo{Addr: "198.18.0.11"}),
		record(t, gossip.KindNode, "h2", "", gossip.NodeInfo{Addr: "198.18.0.12"}),
		record(t, gossip.KindNode, "h3", "", gossip.NodeInfo{Addr: "198.18.0.13"}),
		record(t, gossip.KindNode, "h4", "", gossip.NodeInfo{Addr: "198.18.0.14"}),
		record(t, gossip.KindNetwork, "h1", "10.42.0.0/24", info),
		record(t, gossip.KindNetwork, "h1", "10.44.0.0/24", wg),
		record(t, gossip.KindNetwork, "h2", "10.42.0.0/24", info),
		record(t, gossip.KindNetwork, "h3", "10.44.0.0/24", wg), // wireguard only: not probed
		record(t, gossip.KindNetwork, "h4", "10.42.0.0/24", info),
	}); err != nil {
		t.Fatal(err)
	}
	s.SetMember(gossip.Member{Name: "h2", State: gossip.StateAlive})
	s.SetMember(gossip.Member{Name: "h4", State: gossip.StateLeft})
	got = probePeers(s.Snapshot())
	if !slices.Equal(got, want) {
		t.Errorf("probePeers (h3 wireguard only, h4 left) = %v, want %v", got, want)
	}
}
