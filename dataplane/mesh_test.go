package dataplane

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
)

func TestMeshIndex(t *testing.T) {
	for a, want := range map[string]uint32{"198.18.0.11": 11, "10.1.2.3": 0x0203, "10.9.0.0": 0xffff, "::ffff:198.18.1.2": 0x0102} {
		if got := MeshIndex(netip.MustParseAddr(a)); got != want {
			t.Errorf("MeshIndex(%s) = %#x, want %#x", a, got, want)
		}
	}
	if i := MeshIndex(netip.MustParseAddr("2001:db8::1")); i == 0 || i > meshIndexMask {
		t.Errorf("IPv6 index %#x out of range", i)
	}
}

// Ports without replicas or of another protocol are dropped, the rest
// sorted with backends sorted, one service per protocol and port.
func TestNormalizedMeshPorts(t *testing.T) {
	a, b := netip.MustParseAddr("10.42.0.3"), netip.MustParseAddr("10.42.0.2")
	got := normalizedMeshPorts([]MeshPort{
		{Service: "web", Proto: "tcp", HostPort: 80, TargetPort: 8080, VNI: 42, Backends: []netip.Addr{a, b, a}},
		{Service: "dns", Proto: "udp", HostPort: 53, TargetPort: 53, VNI: 42, Backends: []netip.Addr{a}},
		{Service: "late", Proto: "tcp", HostPort: 80, TargetPort: 81, VNI: 42, Backends: []netip.Addr{a}},
		{Service: "none", Proto: "tcp", HostPort: 81, TargetPort: 81, VNI: 42},
		{Service: "sctp", Proto: "sctp", HostPort: 82, TargetPort: 82, VNI: 42, Backends: []netip.Addr{a}},
		{Service: "v6", Proto: "tcp", HostPort: 83, TargetPort: 83, VNI: 42, Backends: []netip.Addr{netip.MustParseAddr("fd00::1")}},
	})
	var names []string
	for _, m := range got {
		names = append(names, m.Service)
	}
	if !slices.Equal(names, []string{"web", "dns"}) {
		t.Fatalf("kept %v, want web then dns", names)
	}
	if !slices.Equal(got[0].Backends, []netip.Addr{b, a}) {
		t.Errorf("backends %v: want sorted, unique", got[0].Backends)
	}
	if c := got[0].comment(); c != "meshnet: mesh tcp 80 web via mnbr42 -> 10.42.0.2,10.42.0.3 :8080" {
		t.Errorf("comment %q", c)
	}
	nets := []Network{{VNI: 42, Subnet: netip.MustParsePrefix("10.42.0.0/24")}, {VNI: 44, Kind: KindWireGuard, Subnet: netip.MustParsePrefix("10.44.0.0/24")}}
	on := meshOnNetworks([]MeshPort{{Service: "wg", Proto: "tcp", HostPort: 90, TargetPort: 90, VNI: 44, Backends: []netip.Addr{a}},
		{Service: "gone", Proto: "tcp", HostPort: 91, TargetPort: 91, VNI: 7, Backends: []netip.Addr{a}}, got[0]}, nets)
	if len(on) != 1 || on[0].Service != "web" {
		t.Errorf("meshOnNetworks kept %+v; want only the vxlan network's port", on)
	}
}

// The replica side marks what arrives from every other IPv4 member's probe
// MAC, once any network with a mesh port has a local replica; and, for
// members that do not send over the probe device (an older meshnetd), what
// arrives bridged from their bridge MAC on that network.
func TestMeshMarks(t *testing.T) {
	self, h2, h3, h6 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("2001:db8::4")
	local := LocalEndpoint{ID: "e1", Addr: netip.MustParsePrefix("10.42.0.5/24")}
	nets := []Network{
		{VNI: 42, Subnet: netip.MustParsePrefix("10.42.0.0/24"), Locals: []LocalEndpoint{local}},
		{VNI: 43, Subnet: netip.MustParsePrefix("10.43.0.0/24")},                                 // no local replica
		{VNI: 45, Subnet: netip.MustParsePrefix("10.45.0.0/24"), Locals: []LocalEndpoint{local}}, // no mesh port
	}
	members := []netip.Addr{self, h2, h3, h6}
	got := meshMarks(nets, []MeshPort{{VNI: 42}, {VNI: 43}}, self, members, []netip.Addr{self, h2})
	if len(got.Probe) != 2 || got.Probe[ProbeMAC(h2).String()] != 2 || got.Probe[ProbeMAC(h3).String()] != 3 {
		t.Errorf("probe marks %+v: want the probe MACs of 198.18.0.2 and .3 with their indexes", got.Probe)
	}
	if len(got.Bridged) != 1 || got.Bridged[0].VNI != 42 || len(got.Bridged[0].Entries) != 1 || got.Bridged[0].Entries[bridgeMAC(h3, 42).String()] != 3 {
		t.Errorf("bridged marks %+v: want 198.18.0.3's bridge MAC on network 42 alone (the older host)", got.Bridged)
	}
	if !meshMarks(nets, []MeshPort{{VNI: 43}}, self, members, nil).empty() {
		t.Error("marks without a local replica of a mesh port")
	}
	want := wantVIPComments(serviceRules{Mesh: normalizedMeshPorts([]MeshPort{{Service: "web", Proto: "tcp", HostPort: 80, TargetPort: 80, VNI: 42,
		Backends: []netip.Addr{netip.MustParseAddr("10.42.0.5")}}}), Marks: got})
	if len(want[meshMarkChain]) != 3 || want[meshMarkChain][2] != meshCommentRestore || !strings.Contains(want[meshMarkChain][0], "from mnprobe") ||
		!strings.Contains(want[meshMarkChain][1], "mnbr42 from") || len(want[vipPre]) != 1 || len(want[meshOutChain]) != 1 || want[meshRouteChain] != nil {
		t.Errorf("table comments %q", want)
	}
}

// The entry side routes each remote replica to its host's index; local
// replicas, unknown ones, those on IPv6 hosts and on hosts that do not take
// mesh connections over the probe device are not in the map.
func TestMeshForwards(t *testing.T) {
	self := netip.MustParseAddr("198.18.0.1")
	r2, r3, r6, local, unknown := netip.MustParseAddr("10.42.0.22"), netip.MustParseAddr("10.42.0.33"), netip.MustParseAddr("10.42.0.66"),
		netip.MustParseAddr("10.42.0.11"), netip.MustParseAddr("10.42.0.99")
	nets := []Network{{VNI: 42, Remotes: []RemoteEndpoint{
		{Addr: r3, VTEP: netip.MustParseAddr("198.18.0.3")}, {Addr: r2, VTEP: netip.MustParseAddr("198.18.0.2")},
		{Addr: r6, VTEP: netip.MustParseAddr("2001:db8::6")}}}}
	ports := []MeshPort{{VNI: 42, Backends: []netip.Addr{local, r3, r2, unknown, r6}}, {VNI: 42, Backends: []netip.Addr{r2}}}
	probeHosts := []netip.Addr{self, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")}
	got := meshForwards(nets, ports, self, probeHosts)
	if want := []meshForward{{r2, 2}, {r3, 3}}; !slices.Equal(got, want) {
		t.Errorf("forwards %+v, want %+v", got, want)
	}
	// A host with an older meshnetd gets its replicas' share bridged.
	if older := meshForwards(nets, ports, self, probeHosts[:2]); !slices.Equal(older, []meshForward{{r2, 2}}) {
		t.Errorf("forwards with 198.18.0.3 older: %+v, want 10.42.0.22 alone", older)
	}
	if c := meshRouteComment(got); c != "meshnet: mesh route 10.42.0.22=2,10.42.0.33=3 via mnprobe" {
		t.Errorf("comment %q", c)
	}
	want := wantVIPComments(serviceRules{Forwards: got})
	if len(want[meshRouteChain]) != 1 || len(want[meshOutChain]) != 1 || want[meshMarkChain] != nil {
		t.Errorf("table comments %q", want)
	}
}

// Two peers with one index: the first by name keeps it, the other is
// reported; this host's own index is never given to a peer.
func TestPlanReturnRoutes(t *testing.T) {
	self := netip.MustParseAddr("10.1.0.1")
	got, err := planReturnRoutes(self, []ProbePeer{
		{Name: "c", Underlay: netip.MustParseAddr("10.2.0.5")},
		{Name: "b", Underlay: netip.MustParseAddr("10.1.0.5")},
		{Name: "d", Underlay: netip.MustParseAddr("10.3.0.1")}, // as this host
	})
	if len(got) != 1 || got[0].Name != "b" || got[0].Index != 5 {
		t.Errorf("routes %+v: want b alone", got)
	}
	if err == nil || !strings.Contains(err.Error(), "c (10.2.0.5) has mesh index 5, as b has") || !strings.Contains(err.Error(), "as this host has") {
		t.Errorf("error %v", err)
	}
}

// The FORWARD accepts: one per replica and target port, out of the bridge
// for a local (or unknown) replica, out of the probe device for a remote
// one; and the replies through the probe device once.
func TestMeshRules(t *testing.T) {
	view := firewallView{acceptChain: map[nftables.TableFamily]string{nftables.TableFamilyIPv4: "FORWARD"}}
	f := firewallSpec{MeshPorts: normalizedMeshPorts([]MeshPort{{Service: "web", Proto: "tcp", HostPort: 80, TargetPort: 8080, VNI: 42,
		Backends: []netip.Addr{netip.MustParseAddr("10.42.0.5"), netip.MustParseAddr("10.42.0.6")}}}),
		Self: netip.MustParseAddr("198.18.0.1"), MeshProbeHosts: []netip.Addr{netip.MustParseAddr("198.18.0.2")},
		Nets: []Network{{VNI: 42, Remotes: []RemoteEndpoint{{Addr: netip.MustParseAddr("10.42.0.6"), VTEP: netip.MustParseAddr("198.18.0.2")}}}}}
	var got []string
	for _, r := range meshRules(f, view) {
		got = append(got, r.Comment)
	}
	want := []string{"meshnet: accept mnbr42 mesh tcp 10.42.0.5:8080", "meshnet: accept mnprobe mesh tcp 10.42.0.6:8080", "meshnet: accept mesh replies from mnprobe"}
	if !slices.Equal(got, want) {
		t.Errorf("rules %q\nwant %q", got, want)
	}
	if len(meshRules(firewallSpec{}, view)) != 0 {
		t.Error("rules without mesh ports")
	}
}

// The hairpin SNATs: remote backends grouped by the member holding them;
// local ones (this host) and unknown ones are not.
func TestMeshHairpins(t *testing.T) {
	self := netip.MustParseAddr("198.18.0.1")
	r2a, r2b, r3, local := netip.MustParseAddr("10.42.0.22"), netip.MustParseAddr("10.42.0.21"), netip.MustParseAddr("10.42.0.33"), netip.MustParseAddr("10.42.0.11")
	nets := []Network{{VNI: 42, Remotes: []RemoteEndpoint{
		{Addr: r2a, VTEP: netip.MustParseAddr("198.18.0.2")}, {Addr: r2b, VTEP: netip.MustParseAddr("198.18.0.2")},
		{Addr: r3, VTEP: netip.MustParseAddr("198.18.0.3")}}}}
	got := meshHairpins(nets, []MeshPort{{VNI: 42, Backends: []netip.Addr{local, r2a, r3, r2b}}}, self)
	if len(got) != 2 || got[0].Member != netip.MustParseAddr("198.18.0.2") || !slices.Equal(got[0].Backends, []netip.Addr{r2b, r2a}) ||
		got[1].Member != netip.MustParseAddr("198.18.0.3") || !slices.Equal(got[1].Backends, []netip.Addr{r3}) {
		t.Errorf("hairpins %+v", got)
	}
	if c := got[0].comment(); c != "meshnet: mesh snat from 198.18.0.2 to its own replicas 10.42.0.21,10.42.0.22" {
		t.Errorf("comment %q", c)
	}
}
