package daemon

import (
	"encoding/json"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/plugin"
)

// record builds a record as its owner would have written it.
func record(t *testing.T, kind gossip.Kind, owner, id string, v any) gossip.Record {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return gossip.Record{Key: gossip.Key{Kind: kind, Owner: owner, ID: id}, Version: 1, Value: raw}
}

func testSnapshot(t *testing.T, deadNode string) *gossip.Snapshot {
	t.Helper()
	s := gossip.NewStore(gossip.StoreConfig{Self: "h1"})
	netInfo := gossip.NetworkInfo{Subnet: "10.42.0.0/24", Gateway: "10.42.0.1", VNI: 100, Dataplane: "vxlan"}
	recs := []gossip.Record{
		record(t, gossip.KindNode, "h1", "", gossip.NodeInfo{Addr: "198.18.0.11"}),
		record(t, gossip.KindNode, "h2", "", gossip.NodeInfo{Addr: "198.18.0.12"}),
		record(t, gossip.KindNode, "h3", "", gossip.NodeInfo{Addr: "198.18.0.13"}),
		record(t, gossip.KindNetwork, "h1", "10.42.0.0/24", netInfo),
		record(t, gossip.KindNetwork, "h2", "10.42.0.0/24", netInfo),
		// h2 has a second network h1 does not: no kernel state for it here.
		record(t, gossip.KindNetwork, "h2", "10.43.0.0/24", gossip.NetworkInfo{Subnet: "10.43.0.0/24", Gateway: "10.43.0.1", VNI: 101, Dataplane: "vxlan"}),
		record(t, gossip.KindEndpoint, "h1", "ep1aaaaaaaaaaaa", gossip.EndpointInfo{Subnet: "10.42.0.0/24", Addr: "10.42.0.2", MAC: "02:6d:0a:2a:00:02", Container: "a", Services: []string{"api"}, Healthy: true}),
		record(t, gossip.KindEndpoint, "h2", "ep2", gossip.EndpointInfo{Subnet: "10.42.0.0/24", Addr: "10.42.0.20", MAC: "02:6d:0a:2a:00:14", Container: "b", Services: []string{"api"}, Healthy: true}),
		record(t, gossip.KindEndpoint, "h2", "ep2b", gossip.EndpointInfo{Subnet: "10.43.0.0/24", Addr: "10.43.0.20", MAC: "02:6d:0a:2b:00:14", Healthy: true}),
		record(t, gossip.KindEndpoint, "h3", "ep3", gossip.EndpointInfo{Subnet: "10.42.0.0/24", Addr: "10.42.0.40", MAC: "02:6d:0a:2a:00:28", Container: "c", Services: []string{"api"}, Healthy: false}),
	}
	if _, err := s.Merge(recs); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"h1", "h2", "h3"} {
		st := gossip.StateAlive
		if n == deadNode {
			st = gossip.StateDead
		}
		s.SetMember(gossip.Member{Name: n, State: st})
	}
	return s.Snapshot()
}

func TestDesiredDataplane(t *testing.T) {
	underlay := dataplane.UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.11")}
	st := desiredDataplane(testSnapshot(t, ""), underlay, 4789)
	if len(st.Networks) != 1 {
		t.Fatalf("want only the local network, got %+v", st.Networks)
	}
	n := st.Networks[0]
	if n.VNI != 100 || n.Gateway != netip.MustParseAddr("10.42.0.1") || st.VXLANPort != 4789 {
		t.Fatalf("network: %+v", n)
	}
	if len(n.Locals) != 1 || n.Locals[0].Addr != netip.MustParsePrefix("10.42.0.2/24") {
		t.Fatalf("locals: %+v", n.Locals)
	}
	host, cont := dataplane.VethNames("ep1aaaaaaaaaaaa")
	if n.Locals[0].HostIf != host || n.Locals[0].ContainerIf != cont {
		t.Fatalf("veth names: %+v", n.Locals[0])
	}
	// Remotes on this subnet only, unhealthy ones too (an unhealthy
	// container still has its address and may still talk).
	got := map[netip.Addr]netip.Addr{}
	for _, r := range n.Remotes {
		got[r.Addr] = r.VTEP
	}
	want := map[netip.Addr]netip.Addr{
		netip.MustParseAddr("10.42.0.20"): netip.MustParseAddr("198.18.0.12"),
		netip.MustParseAddr("10.42.0.40"): netip.MustParseAddr("198.18.0.13"),
	}
	if len(got) != len(want) || got[netip.MustParseAddr("10.42.0.20")] != want[netip.MustParseAddr("10.42.0.20")] || got[netip.MustParseAddr("10.42.0.40")] != want[netip.MustParseAddr("10.42.0.40")] {
		t.Fatalf("remotes: got %v want %v", got, want)
	}

	// A dead node's endpoints are withdrawn at once.
	st = desiredDataplane(testSnapshot(t, "h2"), underlay, 4789)
	for _, r := range st.Networks[0].Remotes {
		if r.VTEP == netip.MustParseAddr("198.18.0.12") {
			t.Fatalf("endpoint of dead h2 still programmed: %+v", r)
		}
	}
}

func TestDNSEntries(t *testing.T) {
	entries := dnsEntries(testSnapshot(t, ""))
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Container] = true
	}
	if !names["a"] || !names["b"] || names["c"] {
		t.Fatalf("want healthy a and b, not unhealthy c: %+v", entries)
	}
	entries = dnsEntries(testSnapshot(t, "h2"))
	for _, e := range entries {
		if e.Node == "h2" {
			t.Fatalf("dead node's endpoint answered: %+v", e)
		}
	}
}

func TestVNIAndMAC(t *testing.T) {
	a, b := vniFor(netip.MustParsePrefix("10.42.0.0/24")), vniFor(netip.MustParsePrefix("10.42.0.7/24"))
	if a != b {
		t.Fatal("VNI must depend on the masked subnet only")
	}
	if a < 2 || a >= 1<<24 {
		t.Fatalf("VNI %d out of range", a)
	}
	if vniFor(netip.MustParsePrefix("10.43.0.0/24")) == a {
		t.Fatal("different subnets should (almost always) get different VNIs")
	}
	if got := macFor(netip.MustParseAddr("10.42.0.5")).String(); got != "02:6d:0a:2a:00:05" {
		t.Fatalf("mac %s", got)
	}
}

func TestServiceNames(t *testing.T) {
	c := plugin.ContainerInfo{
		ID:   "0123456789abcdef",
		Name: "web_1",
		Labels: map[string]string{
			labelService:        "API",
			labelComposeService: "web",
			labelComposeProject: "shop",
		},
	}
	ep := plugin.EndpointSettings{Aliases: []string{"0123456789ab", "web_1", "frontend"}}
	got := serviceNames(c, ep)
	want := []string{"api", "frontend", "web", "web.shop"}
	if len(got) != len(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v want %v", got, want)
		}
	}
}

func TestDescribeEndpointHealth(t *testing.T) {
	base := gossip.EndpointInfo{Subnet: "10.42.0.0/24", Addr: "10.42.0.2", MAC: "02:6d:0a:2a:00:02", Healthy: true}
	if describeEndpoint(base, containerEndpoint{}).Healthy {
		t.Fatal("an endpoint with no running container must not be healthy")
	}
	ce := containerEndpoint{c: plugin.ContainerInfo{ID: "x", Name: "a", Running: true}, network: "app"}
	got := describeEndpoint(base, ce)
	if !got.Healthy || got.Container != "a" || got.Network != "app" {
		t.Fatalf("running: %+v", got)
	}
	ce.c.Paused = true
	if describeEndpoint(base, ce).Healthy {
		t.Fatal("a paused container must not be healthy")
	}
}

func TestEndpointPortsReachDNS(t *testing.T) {
	base := gossip.EndpointInfo{Subnet: "10.42.0.0/24", Addr: "10.42.0.2", MAC: "02:6d:0a:2a:00:02"}
	ce := containerEndpoint{c: plugin.ContainerInfo{ID: "x", Name: "a", Running: true,
		Ports: []plugin.Port{{Proto: "tcp", Port: 80}, {Proto: "udp", Port: 53}}}, network: "app"}
	got := describeEndpoint(base, ce)
	if strings.Join(got.Ports, ",") != "80/tcp,53/udp" {
		t.Fatalf("ports %q", got.Ports)
	}
	if endpointInfoEqual(base, got) {
		t.Fatal("a change of ports must be written")
	}
	ports := dnsPorts(append(got.Ports, "x/tcp", "0/tcp", "70000/tcp", "8080"))
	if len(ports) != 2 || ports[0] != (dns.Port{Proto: "tcp", Port: 80}) || ports[1] != (dns.Port{Proto: "udp", Port: 53}) {
		t.Fatalf("dnsPorts = %+v", ports)
	}
}

func TestDesiredPublishedAndInternal(t *testing.T) {
	s := gossip.NewStore(gossip.StoreConfig{Self: "h1"})
	open := gossip.NetworkInfo{Subnet: "10.42.0.0/24", Gateway: "10.42.0.1", VNI: 100, Dataplane: "vxlan"}
	internal := gossip.NetworkInfo{Subnet: "10.45.0.0/24", Gateway: "10.45.0.1", VNI: 102, Dataplane: "vxlan", Internal: true}
	recs := []gossip.Record{
		record(t, gossip.KindNode, "h1", "", gossip.NodeInfo{Addr: "198.18.0.11"}),
		record(t, gossip.KindNetwork, "h1", open.Subnet, open),
		record(t, gossip.KindNetwork, "h1", internal.Subnet, internal),
		record(t, gossip.KindEndpoint, "h1", "ep1aaaaaaaaaaaa", gossip.EndpointInfo{Subnet: open.Subnet, Addr: "10.42.0.2", MAC: "02:6d:0a:2a:00:02",
			Published: []string{"0.0.0.0:8081:8080/tcp", "198.18.0.11:53:5353/udp", "from a newer node"}}),
		record(t, gossip.KindEndpoint, "h1", "ep2aaaaaaaaaaaa", gossip.EndpointInfo{Subnet: internal.Subnet, Addr: "10.45.0.2", MAC: "02:6d:0a:2d:00:02",
			Published: []string{"0.0.0.0:8085:8080/tcp"}}),
		record(t, gossip.KindEndpoint, "h2", "ep3", gossip.EndpointInfo{Subnet: open.Subnet, Addr: "10.42.0.9", MAC: "02:6d:0a:2a:00:09",
			Published: []string{"0.0.0.0:9999:80/tcp"}}),
	}
	if _, err := s.Merge(recs); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"h1", "h2"} {
		s.SetMember(gossip.Member{Name: n, State: gossip.StateAlive})
	}
	snap := s.Snapshot()
	st := desiredDataplane(snap, dataplane.UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.11")}, 4789)
	if len(st.Networks) != 2 || st.Networks[0].Internal || !st.Networks[1].Internal {
		t.Fatalf("networks %+v: want 10.42 open, 10.45 internal", st.Networks)
	}
	want := []dataplane.PortMapping{
		{Proto: "tcp", HostPort: 8081, ContainerPort: 8080},
		{Proto: "udp", HostIP: netip.MustParseAddr("198.18.0.11"), HostPort: 53, ContainerPort: 5353},
	}
	if got := st.Networks[0].Locals[0].Ports; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ports %+v, want %+v (the unparsable entry skipped)", got, want)
	}
	// The sockets to hold: this node's, not on internal networks.
	var keys []string
	for _, p := range ownPublished(snap) {
		keys = append(keys, p.key())
	}
	if strings.Join(keys, " ") != "tcp/0.0.0.0:8081 udp/198.18.0.11:53" {
		t.Errorf("held ports %q", keys)
	}
}

// With the bridge bypass, a local container whose VIP table is not in place
// stays on the bridge; the others do not.
func TestBridgedEndpoints(t *testing.T) {
	st := dataplane.State{Networks: []dataplane.Network{
		{VNI: 1, Locals: []dataplane.LocalEndpoint{{ID: "ready"}, {ID: "starting"}}},
		{VNI: 2, Locals: []dataplane.LocalEndpoint{{ID: "failed", Bridged: false}}},
	}}
	bridgedEndpoints(&st, map[string]bool{"ready": true, "elsewhere": true})
	got := map[string]bool{}
	for _, n := range st.Networks {
		for _, l := range n.Locals {
			got[l.ID] = l.Bridged
		}
	}
	if want := map[string]bool{"ready": false, "starting": true, "failed": true}; !maps.Equal(got, want) {
		t.Errorf("bridged: %v, want %v", got, want)
	}
}
