package daemon

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
	mdns "github.com/miekg/dns"
)

var testUnderlay = dataplane.UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.11")}

func lookupA(t *testing.T, tbl *dns.Table, name string) []string {
	t.Helper()
	rrs, _ := tbl.Lookup(name, mdns.TypeA)
	var out []string
	for _, rr := range rrs {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, net.IP(a.A).String())
		}
	}
	return out
}

// vipSnapshot: service api in vip mode with replicas on h1 (healthy), h2
// (healthy) and h3 (stopped); two VIP records for it, written at once by
// h2 and h3; service db in dnsrr mode.
func vipSnapshot(t *testing.T, deadNode string) *gossip.Snapshot {
	t.Helper()
	s := gossip.NewStore(gossip.StoreConfig{Self: "h1"})
	netInfo := gossip.NetworkInfo{Subnet: "10.42.0.0/24", Gateway: "10.42.0.1", VNI: 100, Dataplane: "vxlan"}
	ep := func(addr string, healthy bool, mode string, svcs ...string) gossip.EndpointInfo {
		a := netip.MustParseAddr(addr)
		return gossip.EndpointInfo{Subnet: "10.42.0.0/24", Addr: addr, MAC: macFor(a).String(), Container: "c" + addr,
			Network: "app", Services: svcs, Healthy: healthy, EndpointMode: mode}
	}
	vip := func(addr string) vipInfo { return vipInfo{Subnet: "10.42.0.0/24", Service: "api", Addr: addr} }
	recs := []gossip.Record{
		record(t, gossip.KindNode, "h1", "", gossip.NodeInfo{Addr: "198.18.0.11"}),
		record(t, gossip.KindNode, "h2", "", gossip.NodeInfo{Addr: "198.18.0.12"}),
		record(t, gossip.KindNode, "h3", "", gossip.NodeInfo{Addr: "198.18.0.13"}),
		record(t, gossip.KindNetwork, "h1", "10.42.0.0/24", netInfo),
		record(t, gossip.KindEndpoint, "h1", "e1", ep("10.42.0.2", true, modeVIP, "api")),
		record(t, gossip.KindEndpoint, "h2", "e2", ep("10.42.0.20", true, modeVIP, "api")),
		record(t, gossip.KindEndpoint, "h3", "e3", ep("10.42.0.40", false, modeVIP, "api")),
		record(t, gossip.KindEndpoint, "h2", "e4", ep("10.42.0.21", true, "", "db")),
		record(t, kindVIP, "h3", "10.42.0.0/24 api", vip("10.42.0.41")),
		record(t, kindVIP, "h2", "10.42.0.0/24 api", vip("10.42.0.22")),
	}
	if _, err := s.Merge(recs); err != nil {
		t.Fatal(err)
	}
	// A record whose ID does not match its value is refused at the door.
	if _, err := s.Merge([]gossip.Record{record(t, kindVIP, "h2", "10.42.0.0/24 other", vip("10.42.0.23"))}); err == nil {
		t.Fatal("a VIP record whose ID does not name its value was merged")
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

func TestVIPWinnerAndBackends(t *testing.T) {
	snap := vipSnapshot(t, "")
	nets := desiredDataplane(snap, testUnderlay, 4789).Networks
	vips := desiredVIPs(snap, nets)
	if len(vips) != 1 {
		t.Fatalf("want one VIP, got %+v", vips)
	}
	v := vips[0]
	// Both hosts wrote one: every host takes the lowest owner's (h2).
	if v.Addr != netip.MustParseAddr("10.42.0.22") || v.Service != "api" {
		t.Errorf("VIP %v for %q, want 10.42.0.22 for api (h2's record wins over h3's)", v.Addr, v.Service)
	}
	want := []netip.Addr{netip.MustParseAddr("10.42.0.2"), netip.MustParseAddr("10.42.0.20")}
	if !slices.Equal(v.Backends, want) {
		t.Errorf("backends %v, want the healthy replicas %v", v.Backends, want)
	}

	// h2 dead: its replica leaves the backends, its VIP stays (stable).
	snap = vipSnapshot(t, "h2")
	vips = desiredVIPs(snap, desiredDataplane(snap, testUnderlay, 4789).Networks)
	if len(vips) != 1 || vips[0].Addr != netip.MustParseAddr("10.42.0.22") ||
		!slices.Equal(vips[0].Backends, want[:1]) {
		t.Errorf("with h2 dead: %+v, want 10.42.0.22 over 10.42.0.2 only", vips)
	}
}

func TestVIPDNSAnswers(t *testing.T) {
	snap := vipSnapshot(t, "")
	tbl := dns.NewTable("meshnet", withVIPs(snap, dnsEntries(snap)))
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"api.meshnet.", []string{"10.42.0.22"}},
		{"api.app.meshnet.", []string{"10.42.0.22"}},
		{"tasks.api.meshnet.", []string{"10.42.0.2", "10.42.0.20"}},
		{"db.meshnet.", []string{"10.42.0.21"}}, // dnsrr: every replica
		{"tasks.db.meshnet.", []string{"10.42.0.21"}},
	} {
		got := lookupA(t, tbl, tc.name)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEndpointMode(t *testing.T) {
	for labels, want := range map[string]string{"vip": modeVIP, " VIP ": modeVIP, "dnsrr": modeDNSRR, "": modeDNSRR, "x": modeDNSRR} {
		if got := endpointMode(map[string]string{labelEndpointMode: labels}); got != want {
			t.Errorf("label %q: %q, want %q", labels, got, want)
		}
	}
}
