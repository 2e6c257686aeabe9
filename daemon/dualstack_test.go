package daemon

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
)

// dualStackNetwork creates a dual-stack network as the engine does for
// `docker network create --ipv6 --subnet S4 --subnet S6`: both pools, both
// gateways, then CreateNetwork with both halves.
func (p *pluginDaemon) dualStackNetwork(id, subnet, gateway, subnet6, gateway6 string) (int, string) {
	p.t.Helper()
	p.must("/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"`+subnet+`"}`)
	p.must("/IpamDriver.RequestAddress", `{"PoolID":"`+subnet+`","Options":{"RequestAddressType":"com.docker.network.gateway"}}`)
	p.must("/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"`+subnet6+`","V6":true}`)
	p.must("/IpamDriver.RequestAddress", `{"PoolID":"`+subnet6+`","Options":{"RequestAddressType":"com.docker.network.gateway"}}`)
	return p.call("/NetworkDriver.CreateNetwork", `{"NetworkID":"`+id+`","Options":{"com.docker.network.enable_ipv6":true},`+
		`"IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"`+subnet+`","Gateway":"`+gateway+`"}],`+
		`"IPv6Data":[{"AddressSpace":"meshnet-local","Pool":"`+subnet6+`","Gateway":"`+gateway6+`"}]}`)
}

// A dual-stack network through the plugin: the records carry both halves,
// an endpoint gets an address of each family from the engine, and the
// desired dataplane and DNS have both.
func TestDualStackNetwork(t *testing.T) {
	p := newPluginDaemon(t, true)
	if code, msg := p.dualStackNetwork("ds", "10.42.0.0/24", "10.42.0.1/24", "fd42::/64", "fd42::1/64"); code != http.StatusOK {
		t.Fatalf("CreateNetwork dual-stack: %d %s", code, msg)
	}
	n, ok := p.d.ownNetworkByDockerID("ds")
	if !ok || n.subnet6 != netip.MustParsePrefix("fd42::/64") || n.gateway6 != netip.MustParseAddr("fd42::1") {
		t.Fatalf("network record: %+v", n)
	}
	code, addr := p.call("/IpamDriver.RequestAddress", `{"PoolID":"fd42::/64"}`)
	if code != http.StatusOK {
		t.Fatalf("an IPv6 address: %d %s", code, addr)
	}
	p.must("/NetworkDriver.CreateEndpoint", `{"NetworkID":"ds","EndpointID":"ep1","Interface":{"Address":"10.42.0.2/24","AddressIPv6":"fd42::2/64"}}`)
	e, ok := p.d.ownEndpoint("ep1")
	if !ok || e.addr6 != netip.MustParseAddr("fd42::2") {
		t.Fatalf("endpoint record: %+v", e)
	}
	// (Join needs the veth in the kernel: TestDualStack in e2e checks its
	// IPv6 gateway, inside a container.)

	st := desiredDataplane(p.d.store.Snapshot(), dataplane.UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.11")}, 4789)
	if len(st.Networks) != 1 || st.Networks[0].Gateway6 != netip.MustParseAddr("fd42::1") ||
		len(st.Networks[0].Locals) != 1 || st.Networks[0].Locals[0].Addr6 != netip.MustParsePrefix("fd42::2/64") {
		t.Errorf("desired dataplane: %+v", st.Networks)
	}
	// A remote dual-stack endpoint is two remotes, one per address, with
	// one MAC behind one VTEP.
	peer := gossip.NewStore(gossip.StoreConfig{Self: "n2"})
	put := func(kind gossip.Kind, id string, v any) {
		t.Helper()
		r, err := peer.Put(kind, id, v)
		if err != nil {
			t.Fatal(err)
		}
		p.d.store.Merge([]gossip.Record{r})
	}
	put(gossip.KindNode, "", gossip.NodeInfo{Addr: "198.18.0.12"})
	put(gossip.KindEndpoint, "ep9", gossip.EndpointInfo{Subnet: "10.42.0.0/24", Addr: "10.42.0.9", Subnet6: "fd42::/64", Addr6: "fd42::9", MAC: "02:42:0a:2a:00:09", Healthy: true})
	p.d.store.SetMember(gossip.Member{Name: "n2", Addr: "198.18.0.12", State: gossip.StateAlive})
	st = desiredDataplane(p.d.store.Snapshot(), dataplane.UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.11")}, 4789)
	var remotes []string
	for _, r := range st.Networks[0].Remotes {
		remotes = append(remotes, r.Addr.String()+" "+r.MAC.String()+" "+r.VTEP.String())
	}
	if strings.Join(remotes, ", ") != "10.42.0.9 02:42:0a:2a:00:09 198.18.0.12, fd42::9 02:42:0a:2a:00:09 198.18.0.12" {
		t.Errorf("remotes: %q", remotes)
	}
	var entries []string
	for _, e := range dnsEntries(p.d.store.Snapshot()) {
		entries = append(entries, e.Addr.String()+" "+e.Addr6.String())
	}
	if !strings.Contains(strings.Join(entries, ","), "10.42.0.9 fd42::9") {
		t.Errorf("DNS entries: %q", entries)
	}
}

// What the engine or a user can get wrong about IPv6 is refused with what
// to do, and leaves no network record.
func TestDualStackRefusals(t *testing.T) {
	p := newPluginDaemon(t, true)
	if code, msg := p.dualStackNetwork("ds", "10.42.0.0/24", "10.42.0.1/24", "fd42::/64", "fd42::1/64"); code != http.StatusOK {
		t.Fatalf("CreateNetwork dual-stack: %d %s", code, msg)
	}
	p.network("v4", "10.43.0.0/24", "10.43.0.1/24")
	for _, tc := range []struct {
		path, body, want string
	}{
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"x","Options":{"com.docker.network.enable_ipv6":true},"IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.44.0.0/24","Gateway":"10.44.0.1/24"}]}`,
			"--ipv6 needs an IPv6 --subnet"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"x","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.44.0.0/24","Gateway":"10.44.0.1/24"}],` +
			`"IPv6Data":[{"AddressSpace":"meshnet-local","Pool":"fd42:0:0:0:8000::/65","Gateway":"fd42::8000:0:0:1/65"}]}`,
			"overlaps meshnet network 10.42.0.0/24"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"x","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.44.0.0/24","Gateway":"10.44.0.1/24"}],` +
			`"IPv6Data":[{"AddressSpace":"meshnet-local","Pool":"fd44::/64","Gateway":"fd44::1/64"},{"AddressSpace":"meshnet-local","Pool":"fd45::/64","Gateway":"fd45::1/64"}]}`,
			"at most one IPv6 subnet"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"x","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.44.0.0/24","Gateway":"10.44.0.1/24"}],` +
			`"IPv6Data":[{"AddressSpace":"null","Pool":"fd44::/64","Gateway":"fd44::1/64"}]}`,
			"--ipam-driver meshnet"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"x","Options":{"com.docker.network.generic":{"ipv6-egress":"nat64"}},"IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.44.0.0/24","Gateway":"10.44.0.1/24"}],` +
			`"IPv6Data":[{"AddressSpace":"meshnet-local","Pool":"fd44::/64","Gateway":"fd44::1/64"}]}`,
			"choose nat or routed"},
		{"/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","V6":true}`, "needs an IPv6 --subnet"},
		{"/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"10.45.0.0/24","V6":true}`, "is not an IPv6 subnet"},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"ds","EndpointID":"e1","Interface":{"Address":"10.42.0.5/24"}}`, "no IPv6 address on dual-stack network"},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"ds","EndpointID":"e1","Interface":{"Address":"10.42.0.5/24","AddressIPv6":"fd43::5/64"}}`, "outside the network's IPv6 subnet"},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"v4","EndpointID":"e1","Interface":{"Address":"10.43.0.5/24","AddressIPv6":"fd43::5/64"}}`, "has no IPv6 subnet"},
	} {
		code, msg := p.call(tc.path, tc.body)
		if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s: %d %q, want 400 saying %q", tc.path, tc.body, code, msg, tc.want)
		}
	}
	if _, ok := p.d.ownNetworkByDockerID("x"); ok {
		t.Error("a refused network left a record")
	}
	if _, ok := p.d.ownEndpoint("e1"); ok {
		t.Error("a refused endpoint left a record")
	}
}

// A peer whose underlay address is of the other family is out of VXLAN's
// reach: its containers are no remotes, it is no VXLAN probe peer, and
// meshctl status says why and what to do.
func TestMixedUnderlayFamilies(t *testing.T) {
	s := gossip.NewStore(gossip.StoreConfig{Self: "h1"})
	vx := gossip.NetworkInfo{Subnet: "10.42.0.0/24", Gateway: "10.42.0.1", VNI: 42, Dataplane: "vxlan"}
	if _, err := s.Merge([]gossip.Record{
		record(t, gossip.KindNode, "h1", "", gossip.NodeInfo{Addr: "198.18.0.11"}),
		record(t, gossip.KindNode, "h2", "", gossip.NodeInfo{Addr: "fd00:18::12"}),
		record(t, gossip.KindNode, "h3", "", gossip.NodeInfo{Addr: "198.18.0.13"}),
		record(t, gossip.KindNetwork, "h1", vx.Subnet, vx),
		record(t, gossip.KindNetwork, "h2", vx.Subnet, vx),
		record(t, gossip.KindNetwork, "h3", vx.Subnet, vx),
		record(t, gossip.KindEndpoint, "h2", "e2", gossip.EndpointInfo{Subnet: vx.Subnet, Addr: "10.42.0.2", MAC: "02:00:00:00:00:02", Healthy: true}),
		record(t, gossip.KindEndpoint, "h3", "e3", gossip.EndpointInfo{Subnet: vx.Subnet, Addr: "10.42.0.3", MAC: "02:00:00:00:00:03", Healthy: true}),
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"h2", "h3"} {
		s.SetMember(gossip.Member{Name: n, State: gossip.StateAlive})
	}
	snap := s.Snapshot()
	st := desiredDataplane(snap, dataplane.UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.11")}, 4789)
	if len(st.Networks) != 1 || len(st.Networks[0].Remotes) != 1 || st.Networks[0].Remotes[0].Addr != netip.MustParseAddr("10.42.0.3") {
		t.Errorf("remotes: %+v", st.Networks)
	}
	if peers := probePeers(snap, dataplane.KindVXLAN); len(peers) != 1 || peers[0].Name != "h3" {
		t.Errorf("VXLAN probe peers: %+v", peers)
	}
	problems := underlayFamilyProblems(snap)
	if len(problems) != 1 || !strings.Contains(problems[0], "peer h2 is at fd00:18::12 (IPv6), this host at 198.18.0.11 (IPv4)") ||
		!strings.Contains(problems[0], "--advertise-addr") {
		t.Errorf("problems: %q", problems)
	}
}

// An IPv6-only network, as engine 27 and newer create it (--ipv4=false
// --ipv6): no IPv4 data at all. Its IPv6 subnet is its identity; endpoints
// have one address, an IPv6 one, and a MAC derived from it; Join gives the
// IPv6 gateway and no route to the (IPv4) DNS address.
func TestIPv6OnlyNetwork(t *testing.T) {
	p := newPluginDaemon(t, true)
	p.must("/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"fd43::/64","V6":true}`)
	p.must("/IpamDriver.RequestAddress", `{"PoolID":"fd43::/64","Options":{"RequestAddressType":"com.docker.network.gateway"}}`)
	p.must("/NetworkDriver.CreateNetwork", `{"NetworkID":"v6","Options":{"com.docker.network.enable_ipv6":true},"IPv4Data":[],`+
		`"IPv6Data":[{"AddressSpace":"meshnet-local","Pool":"fd43::/64","Gateway":"fd43::1/64"}]}`)
	n, ok := p.d.ownNetworkByDockerID("v6")
	if !ok || n.subnet != netip.MustParsePrefix("fd43::/64") || n.gateway != netip.MustParseAddr("fd43::1") || n.subnet6.IsValid() {
		t.Fatalf("network record: %+v", n)
	}
	p.must("/NetworkDriver.CreateEndpoint", `{"NetworkID":"v6","EndpointID":"ep6","Interface":{"Address":"","AddressIPv6":"fd43::2/64"}}`)
	e, ok := p.d.ownEndpoint("ep6")
	if !ok || e.addr != netip.MustParseAddr("fd43::2") || e.addr6.IsValid() || e.mac[0] != 0x0a {
		t.Fatalf("endpoint record: %+v", e)
	}
	st := desiredDataplane(p.d.store.Snapshot(), dataplane.UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.11")}, 4789)
	if len(st.Networks) != 1 || st.Networks[0].Gateway != netip.MustParseAddr("fd43::1") ||
		len(st.Networks[0].Locals) != 1 || st.Networks[0].Locals[0].Addr != netip.MustParsePrefix("fd43::2/64") {
		t.Errorf("desired dataplane: %+v", st.Networks)
	}
	if es := dnsEntries(p.d.store.Snapshot()); len(es) != 1 || es[0].Addr != netip.MustParseAddr("fd43::2") {
		t.Errorf("DNS entries: %+v", es)
	}
	// Engine 20.10 asks for an IPv4 pool without a subnet: what to do.
	code, msg := p.call("/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local"}`)
	if code != http.StatusBadRequest || !strings.Contains(msg, "engine 27 or newer and --ipv4=false") {
		t.Errorf("an IPv4 pool without a subnet: %d %q", code, msg)
	}
	// Overlaps across the two kinds of IPv6 subnet: a dual-stack network's IPv6 half
	// over this IPv6-only network, and an IPv6-only network over a dual-stack half.
	if code, msg := p.dualStackNetwork("ds", "10.42.0.0/24", "10.42.0.1/24", "fd44::/64", "fd44::1/64"); code != http.StatusOK {
		t.Fatalf("CreateNetwork dual-stack: %d %s", code, msg)
	}
	for _, tc := range []struct{ path, body, want string }{
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"x","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.44.0.0/24","Gateway":"10.44.0.1/24"}],` +
			`"IPv6Data":[{"AddressSpace":"meshnet-local","Pool":"fd43::/80","Gateway":"fd43::1/80"}]}`,
			"subnet fd43::/80 overlaps meshnet network fd43::/64"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"x","IPv4Data":[],"IPv6Data":[{"AddressSpace":"meshnet-local","Pool":"fd44::/96","Gateway":"fd44::1/96"}]}`,
			"subnet fd44::/96 overlaps meshnet network 10.42.0.0/24 (its subnet fd44::/64"},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"v6","EndpointID":"e4","Interface":{"Address":"10.43.0.5/24","AddressIPv6":"fd43::5/64"}}`,
			"IPv4 address 10.43.0.5 on IPv6-only network fd43::/64"},
	} {
		if code, msg := p.call(tc.path, tc.body); code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s: %d %q, want 400 saying %q", tc.path, tc.body, code, msg, tc.want)
		}
	}
	if _, ok := p.d.ownEndpoint("e4"); ok {
		t.Error("a refused endpoint left a record")
	}
}

// MACs derived from addresses: IPv4 spelled out, IPv6 hashed, never equal.
func TestMACFor(t *testing.T) {
	if got := macFor(netip.MustParseAddr("10.42.0.5")).String(); got != "02:6d:0a:2a:00:05" {
		t.Errorf("IPv4: %s", got)
	}
	a, b := macFor(netip.MustParseAddr("fd43::2")), macFor(netip.MustParseAddr("fd43::3"))
	if a[0] != 0x0a || a.String() == b.String() || a.String() != macFor(netip.MustParseAddr("fd43::2")).String() {
		t.Errorf("IPv6: %s %s", a, b)
	}
}
