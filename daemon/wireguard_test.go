package daemon

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
)

// wgSnapshot: h1 (self), h2, h3 share wireguard network 10.8.0.0/24; h4 has
// it as well but publishes no WireGuard key; h5 has only a vxlan network.
func wgSnapshot(t *testing.T, h2Addr string, dead ...string) *gossip.Snapshot {
	t.Helper()
	s := gossip.NewStore(gossip.StoreConfig{Self: "h1"})
	wg := gossip.NetworkInfo{Subnet: "10.8.0.0/24", Gateway: "10.8.0.1", VNI: 8, Dataplane: "wireguard"}
	vx := gossip.NetworkInfo{Subnet: "10.9.0.0/24", Gateway: "10.9.0.1", VNI: 9, Dataplane: "vxlan"}
	node := func(addr, key string) gossip.NodeInfo {
		return gossip.NodeInfo{Addr: addr, WireGuardKey: key, WireGuardPort: 51820}
	}
	ep := func(subnet, addr string) gossip.EndpointInfo {
		return gossip.EndpointInfo{Subnet: subnet, Addr: addr, MAC: "02:00:00:00:00:01", Healthy: true}
	}
	recs := []gossip.Record{
		record(t, gossip.KindNode, "h1", "", node("198.18.0.11", wgKey(1))),
		record(t, gossip.KindNode, "h2", "", node(h2Addr, wgKey(2))),
		record(t, gossip.KindNode, "h3", "", node("198.18.0.13", wgKey(3))),
		record(t, gossip.KindNode, "h4", "", gossip.NodeInfo{Addr: "198.18.0.14"}),
		record(t, gossip.KindNode, "h5", "", node("198.18.0.15", wgKey(5))),
		record(t, gossip.KindNetwork, "h1", wg.Subnet, wg),
		record(t, gossip.KindNetwork, "h2", wg.Subnet, wg),
		record(t, gossip.KindNetwork, "h3", wg.Subnet, wg),
		record(t, gossip.KindNetwork, "h4", wg.Subnet, wg),
		record(t, gossip.KindNetwork, "h1", vx.Subnet, vx),
		record(t, gossip.KindNetwork, "h5", vx.Subnet, vx),
		record(t, gossip.KindEndpoint, "h1", "e1", ep(wg.Subnet, "10.8.0.2")),
		// h2 kept 10.8.0.50 when it handed that block to h3.
		record(t, gossip.KindEndpoint, "h2", "e2", ep(wg.Subnet, "10.8.0.50")),
		record(t, gossip.KindEndpoint, "h2", "e2b", ep(wg.Subnet, "10.8.0.20")),
		// An address both h1 and h3 hold (a conflict): h1 keeps it.
		record(t, gossip.KindEndpoint, "h3", "e3", ep(wg.Subnet, "10.8.0.2")),
		record(t, gossip.KindEndpoint, "h5", "e5", ep(vx.Subnet, "10.9.0.5")),
	}
	if _, err := s.Merge(recs); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"h2", "h3", "h4", "h5"} {
		st := gossip.StateAlive
		if slices.Contains(dead, n) {
			st = gossip.StateDead
		}
		s.SetMember(gossip.Member{Name: n, State: st})
	}
	return s.Snapshot()
}

// wgKey is a WireGuard public key for the tests: the store refuses node
// records whose key is not 32 bytes of base64.
func wgKey(n byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{n}, 32))
}

func wgBlocks() map[netip.Prefix][]block {
	p := netip.MustParsePrefix
	return map[netip.Prefix][]block{
		p("10.8.0.0/24"): {{Prefix: p("10.8.0.0/28"), Node: "h1"}, {Prefix: p("10.8.0.16/28"), Node: "h2"}, {Prefix: p("10.8.0.32/28"), Node: "h2"},
			{Prefix: p("10.8.0.48/28"), Node: "h3"}, {Prefix: p("10.8.0.64/28"), Node: "h4"}},
		p("10.9.0.0/24"): {{Prefix: p("10.9.0.0/28"), Node: "h5"}},
	}
}

func peerSummary(st dataplane.WireGuardState) []string {
	var out []string
	for _, p := range st.Peers {
		out = append(out, fmt.Sprintf("%s %v %v %v", p.PublicKey, p.Endpoint, p.Keepalive, p.AllowedIPs))
	}
	return out
}

func TestDesiredWireGuard(t *testing.T) {
	st := desiredWireGuard(wgSnapshot(t, "198.18.0.12"), wgBlocks(), 51820, 25*time.Second)
	want := []string{
		// Each peer's probe address last (the data-path probe).
		wgKey(2) + " 198.18.0.12:51820 25s [10.8.0.16/28 10.8.0.32/28 10.8.0.50/32 fe80::6d6e:0:c612:c/128]",
		wgKey(3) + " 198.18.0.13:51820 25s [10.8.0.48/28 fe80::6d6e:0:c612:d/128]",
	}
	if got := peerSummary(st); !slices.Equal(got, want) || st.Port != 51820 {
		t.Errorf("peers\n got %q\nwant %q (port %d)", got, want, st.Port)
	}

	// h3 dies: its peer and blocks go; h2 is unchanged.
	st = desiredWireGuard(wgSnapshot(t, "198.18.0.12", "h3"), wgBlocks(), 51820, 0)
	want = []string{wgKey(2) + " 198.18.0.12:51820 0s [10.8.0.16/28 10.8.0.32/28 10.8.0.50/32 fe80::6d6e:0:c612:c/128]"}
	if got := peerSummary(st); !slices.Equal(got, want) {
		t.Errorf("with h3 dead\n got %q\nwant %q", got, want)
	}

	// h2 moves to another address: the same peer (same key), a new endpoint.
	st = desiredWireGuard(wgSnapshot(t, "198.18.0.22"), wgBlocks(), 51820, 0)
	if len(st.Peers) != 2 || st.Peers[0].PublicKey != wgKey(2) || st.Peers[0].Endpoint != netip.MustParseAddrPort("198.18.0.22:51820") {
		t.Errorf("after h2 moved: %q", peerSummary(st))
	}

	// A node without the wireguard network here has no peers at all.
	snap := wgSnapshot(t, "198.18.0.12")
	snap.Self = "h5"
	if st := desiredWireGuard(snap, wgBlocks(), 51820, 0); len(st.Peers) != 0 {
		t.Errorf("h5 has peers: %q", peerSummary(st))
	}
}

// A dual-stack wireguard network routes its IPv6 pool like its IPv4 one:
// each peer carries its IPv6 blocks, and an IPv6 address one of its
// containers holds outside them.
func TestDesiredWireGuardDualStack(t *testing.T) {
	s := gossip.NewStore(gossip.StoreConfig{Self: "h1"})
	wg := gossip.NetworkInfo{Subnet: "10.8.0.0/24", Gateway: "10.8.0.1", Subnet6: "fd08::/64", Gateway6: "fd08::1", VNI: 8, Dataplane: "wireguard"}
	node := func(addr, key string) gossip.NodeInfo {
		return gossip.NodeInfo{Addr: addr, WireGuardKey: key, WireGuardPort: 51820}
	}
	if _, err := s.Merge([]gossip.Record{
		record(t, gossip.KindNode, "h1", "", node("198.18.0.11", wgKey(1))),
		record(t, gossip.KindNode, "h2", "", node("198.18.0.12", wgKey(2))),
		record(t, gossip.KindNetwork, "h1", wg.Subnet, wg),
		record(t, gossip.KindNetwork, "h2", wg.Subnet, wg),
		record(t, gossip.KindEndpoint, "h2", "e2", gossip.EndpointInfo{Subnet: wg.Subnet, Addr: "10.8.0.20", Subnet6: wg.Subnet6,
			Addr6: "fd08::99", MAC: "02:00:00:00:00:02", Healthy: true}),
	}); err != nil {
		t.Fatal(err)
	}
	s.SetMember(gossip.Member{Name: "h2", State: gossip.StateAlive})
	p := netip.MustParsePrefix
	blocks := map[netip.Prefix][]block{
		p("10.8.0.0/24"): {{Prefix: p("10.8.0.0/28"), Node: "h1"}, {Prefix: p("10.8.0.16/28"), Node: "h2"}},
		p("fd08::/64"):   {{Prefix: p("fd08::/65"), Node: "h1"}, {Prefix: p("fd08:0:0:0:8000::/65"), Node: "h2"}},
	}
	st := desiredWireGuard(s.Snapshot(), blocks, 51820, 0)
	want := []string{wgKey(2) + " 198.18.0.12:51820 0s [10.8.0.16/28 fd08::8000:0:0:0/65 fd08::99/128 fe80::6d6e:0:c612:c/128]"}
	if got := peerSummary(st); !slices.Equal(got, want) {
		t.Errorf("peers\n got %q\nwant %q", got, want)
	}
}

func TestMemberAddrs(t *testing.T) {
	snap := wgSnapshot(t, "198.18.0.12", "h3")
	// memberlist already has h6 alive; its record has not arrived.
	snap.Members["h6"] = gossip.Member{Name: "h6", Addr: "198.18.0.16", State: gossip.StateAlive}
	got := memberAddrs(snap)
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	want := []string{"198.18.0.11", "198.18.0.12", "198.18.0.14", "198.18.0.15", "198.18.0.16"}
	if !slices.Equal(s, want) {
		t.Errorf("members %v, want %v (h3 dead)", s, want)
	}
}
