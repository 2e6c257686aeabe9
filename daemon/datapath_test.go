package daemon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
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
		// Probed for less than a timeout (this daemon just started, or h2
		// just entered the probe's list): kept until the probe says down.
		{"dead, probe not answered yet", "h2", dataplane.ProbeUnknown, true, true},
		{"dead, not probed at all", "h2", "", false, false},
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

// A peer is up when any tunnel answers, unknown while none answers and one
// has yet to hear from it, down only when every tunnel probing it says so.
func TestMergeProbeStatus(t *testing.T) {
	st := func(s dataplane.ProbeState) dataplane.ProbeStatus { return dataplane.ProbeStatus{State: s} }
	got := mergeProbeStatus([]map[string]dataplane.ProbeStatus{
		{"up-down": st(dataplane.ProbeDown), "down-up": st(dataplane.ProbeUp), "down-unknown": st(dataplane.ProbeDown),
			"unknown-down": st(dataplane.ProbeUnknown), "down-down": st(dataplane.ProbeDown), "vxlan-only": st(dataplane.ProbeDown)},
		{"up-down": st(dataplane.ProbeUp), "down-up": st(dataplane.ProbeDown), "down-unknown": st(dataplane.ProbeUnknown),
			"unknown-down": st(dataplane.ProbeDown), "down-down": st(dataplane.ProbeDown), "wireguard-only": st(dataplane.ProbeUnknown)},
	})
	want := map[string]dataplane.ProbeState{"up-down": dataplane.ProbeUp, "down-up": dataplane.ProbeUp,
		"down-unknown": dataplane.ProbeUnknown, "unknown-down": dataplane.ProbeUnknown, "down-down": dataplane.ProbeDown,
		"vxlan-only": dataplane.ProbeDown, "wireguard-only": dataplane.ProbeUnknown}
	if len(got) != len(want) {
		t.Errorf("merged %d peers, want %d: %v", len(got), len(want), got)
	}
	for name, w := range want {
		if got[name].State != w {
			t.Errorf("%s: merged %q, want %q", name, got[name].State, w)
		}
	}
}

// Probed: nodes with a network of a subnet this node has, of the tunnel's
// kind, whatever gossip says of them, not those that left; through
// WireGuard only nodes that publish a key.
func TestProbePeers(t *testing.T) {
	got := probePeers(testSnapshot(t, "h2"), dataplane.KindVXLAN)
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
		record(t, gossip.KindNode, "h3", "", gossip.NodeInfo{Addr: "198.18.0.13", WireGuardKey: wgKey(3), WireGuardPort: 51820}),
		record(t, gossip.KindNode, "h4", "", gossip.NodeInfo{Addr: "198.18.0.14"}),
		record(t, gossip.KindNode, "h5", "", gossip.NodeInfo{Addr: "198.18.0.15"}),
		record(t, gossip.KindNetwork, "h1", "10.42.0.0/24", info),
		record(t, gossip.KindNetwork, "h1", "10.44.0.0/24", wg),
		record(t, gossip.KindNetwork, "h2", "10.42.0.0/24", info),
		record(t, gossip.KindNetwork, "h3", "10.44.0.0/24", wg), // wireguard only: not probed
		record(t, gossip.KindNetwork, "h4", "10.42.0.0/24", info),
		record(t, gossip.KindNetwork, "h5", "10.44.0.0/24", wg), // no WireGuard key: not probed
	}); err != nil {
		t.Fatal(err)
	}
	s.SetMember(gossip.Member{Name: "h2", State: gossip.StateAlive})
	s.SetMember(gossip.Member{Name: "h4", State: gossip.StateLeft})
	got = probePeers(s.Snapshot(), dataplane.KindVXLAN)
	if !slices.Equal(got, want) {
		t.Errorf("probePeers (h3 wireguard only, h4 left) = %v, want %v", got, want)
	}
	got = probePeers(s.Snapshot(), dataplane.KindWireGuard)
	want = []dataplane.ProbePeer{{Name: "h3", Underlay: netip.MustParseAddr("198.18.0.13")}}
	if !slices.Equal(got, want) {
		t.Errorf("probePeers through WireGuard = %v, want %v", got, want)
	}
}

// A peer's DataPath is the worst of its tunnels, and each tunnel is listed.
func TestFillDataPathWorstTunnel(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	vx := map[string]dataplane.ProbeStatus{
		"h2": {State: dataplane.ProbeUp, RTT: time.Millisecond, Since: t0},
		"h3": {State: dataplane.ProbeUp, RTT: 2 * time.Millisecond, Since: t0},
	}
	wg := map[string]dataplane.ProbeStatus{
		"h2": {State: dataplane.ProbeDown, Since: t0.Add(time.Second)},
		"h4": {State: dataplane.ProbeUnknown, Since: t0},
	}
	peers := []control.Peer{{Name: "h1", Self: true}, {Name: "h2"}, {Name: "h3"}, {Name: "h4"}, {Name: "h5"}}
	fillDataPath(peers, []tunnelStatus{{dataplane.KindVXLAN, vx}, {dataplane.KindWireGuard, wg}})
	for _, tc := range []struct {
		i       int
		state   string
		rtt     float64
		tunnels int
	}{{0, "", 0, 0}, {1, "down", 0, 2}, {2, "up", 0.002, 1}, {3, "unknown", 0, 1}, {4, "", 0, 0}} {
		p := peers[tc.i]
		if p.DataPath != tc.state || p.RTTSeconds != tc.rtt || len(p.Tunnels) != tc.tunnels {
			t.Errorf("%s: data path %q rtt %v tunnels %+v; want %q, %v, %d tunnels", p.Name, p.DataPath, p.RTTSeconds, p.Tunnels, tc.state, tc.rtt, tc.tunnels)
		}
	}
	if ts := peers[1].Tunnels; len(ts) == 2 && (ts[0].Tunnel != "vxlan" || ts[0].State != "up" || ts[1].Tunnel != "wireguard" || ts[1].State != "down") {
		t.Errorf("h2 tunnels %+v", ts)
	}
	if !peers[1].DataPathSince.Equal(t0.Add(time.Second)) {
		t.Errorf("h2 since %v: want the down tunnel's", peers[1].DataPathSince)
	}
}
