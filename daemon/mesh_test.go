package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
)

func TestParsePublishLabel(t *testing.T) {
	for label, want := range map[string][]string{
		"80:8080/tcp":        {"80:8080/tcp"},
		"80":                 {"80:80/tcp"},
		" 53/UDP , 80:8080 ": {"80:8080/tcp", "53:53/udp"},
		"443:8443,443:8443":  {"443:8443/tcp"},
	} {
		got, err := meshPublishStrings(map[string]string{labelPublish: label})
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%q: %v, %v; want %v", label, got, err, want)
		}
	}
	for _, bad := range []string{"0", "80:0", "http", "80:8080/sctp", "70000", "80:8080/tcp/x"} {
		if _, err := meshPublishStrings(map[string]string{labelPublish: bad}); err == nil || !strings.Contains(err.Error(), "e.g. 80:8080/tcp") {
			t.Errorf("%q: %v, want an error saying the form", bad, err)
		}
	}
	if got, err := meshPublishStrings(map[string]string{}); got != nil || err != nil {
		t.Errorf("no label: %v, %v", got, err)
	}
}

func meshEndpoint(owner, subnet, addr, service string, up, healthy bool, publish ...string) gossip.Endpoint {
	return gossip.Endpoint{Owner: owner, Subnet: netip.MustParsePrefix(subnet), Addr: netip.MustParseAddr(addr), Up: up,
		Info: gossip.EndpointInfo{Services: []string{service}, Healthy: healthy, MeshPublish: publish}}
}

// Every healthy replica of up nodes is a backend; a rival service asking
// for the same port on another network loses it everywhere (lowest subnet
// wins) and is a problem; the host publishes only ports of its vxlan
// networks.
func TestMeshTable(t *testing.T) {
	eps := []gossip.Endpoint{
		meshEndpoint("h1", "10.42.0.0/24", "10.42.0.5", "web", true, true, "80:8080/tcp"),
		meshEndpoint("h2", "10.42.0.0/24", "10.42.0.6", "web", true, true, "80:8080/tcp"),
		meshEndpoint("h3", "10.42.0.0/24", "10.42.0.7", "web", false, true, "80:8080/tcp"), // node down
		meshEndpoint("h2", "10.42.0.0/24", "10.42.0.8", "web", true, false, "80:8080/tcp"), // stopped
		meshEndpoint("h1", "10.43.0.0/24", "10.43.0.5", "other", true, true, "80:80/tcp"),  // loses 80
		meshEndpoint("h1", "10.44.0.0/24", "10.44.0.5", "dns", true, true, "53:53/udp"),    // wireguard network
		meshEndpoint("h1", "10.42.0.0/24", "10.42.0.9", "plain", true, true),
	}
	tab := buildMeshTable(eps)
	if len(tab.problems) != 1 || !strings.Contains(tab.problems[0], "tcp/80 is published by web (10.42.0.0/24 port 8080) and by other (10.43.0.0/24 port 80); the first has it") {
		t.Errorf("problems %q", tab.problems)
	}
	nets := []dataplane.Network{
		{VNI: 42, Subnet: netip.MustParsePrefix("10.42.0.0/24")},
		{VNI: 43, Subnet: netip.MustParsePrefix("10.43.0.0/24")},
		{VNI: 44, Subnet: netip.MustParsePrefix("10.44.0.0/24"), Kind: dataplane.KindWireGuard},
	}
	got := desiredMeshPorts(tab, nets)
	want := []dataplane.MeshPort{{Service: "web", Proto: "tcp", HostPort: 80, TargetPort: 8080, VNI: 42,
		Backends: []netip.Addr{netip.MustParseAddr("10.42.0.5"), netip.MustParseAddr("10.42.0.6")}}}
	if len(got) != 1 || got[0].Service != want[0].Service || got[0].HostPort != 80 || got[0].TargetPort != 8080 || got[0].VNI != 42 ||
		!slices.Equal(got[0].Backends, want[0].Backends) {
		t.Errorf("desired %+v\nwant %+v", got, want)
	}
	if ps := desiredMeshPorts(tab, nets[1:]); len(ps) != 0 {
		t.Errorf("a host without the winning network publishes %+v", ps)
	}
	if held := meshHeld(got); len(held) != 1 || held[0].key() != "tcp/0.0.0.0:80" {
		t.Errorf("held %v", held)
	}
}

// meshnet.publish-prefer=local on any replica makes the port prefer local
// replicas; the label alone, without a port, publishes nothing.
func TestMeshPreferLocal(t *testing.T) {
	a := meshEndpoint("h1", "10.42.0.0/24", "10.42.0.5", "web", true, true, "80:8080/tcp")
	b := meshEndpoint("h2", "10.42.0.0/24", "10.42.0.6", "web", true, true, "80:8080/tcp")
	b.Info.MeshPreferLocal = true
	nets := []dataplane.Network{{VNI: 42, Subnet: netip.MustParsePrefix("10.42.0.0/24")}}
	got := desiredMeshPorts(buildMeshTable([]gossip.Endpoint{a, b}), nets)
	if len(got) != 1 || !got[0].PreferLocal {
		t.Errorf("ports %+v: want one preferring local replicas", got)
	}
	if !preferLocal(map[string]string{labelPublishPrefer: " Local "}) || preferLocal(map[string]string{labelPublishPrefer: "spread"}) {
		t.Error("preferLocal reads the label wrong")
	}
}

// Only nodes whose record lists the feature get mesh connections over the
// probe device; a node of an older meshnetd, without it, gets them bridged.
func TestMeshProbeHosts(t *testing.T) {
	st := gossip.NewStore(gossip.StoreConfig{Self: "n1"})
	for _, n := range []struct {
		name, addr string
		features   []string
	}{{"n2", "198.18.0.12", []string{gossip.FeatureMeshProbe}}, {"n3", "198.18.0.13", nil}, {"n4", "198.18.0.14", []string{"later", gossip.FeatureMeshProbe}}} {
		peer := gossip.NewStore(gossip.StoreConfig{Self: n.name})
		r, err := peer.Put(gossip.KindNode, "", gossip.NodeInfo{Addr: n.addr, Features: n.features})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Merge([]gossip.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	got := meshProbeHosts(st.Snapshot())
	if want := []netip.Addr{netip.MustParseAddr("198.18.0.12"), netip.MustParseAddr("198.18.0.14")}; !slices.Equal(got, want) {
		t.Errorf("mesh probe hosts %v, want %v", got, want)
	}
}
