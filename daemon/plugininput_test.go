package daemon

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestEndpointMAC(t *testing.T) {
	p := newPluginDaemon(t, true)
	p.network("net1", "10.42.0.0/24", "10.42.0.1/24")
	p.network("net2", "10.43.0.0/24", "10.43.0.1/24")
	ep := func(net, id, addr, mac string) (int, string) {
		return p.call("/NetworkDriver.CreateEndpoint", `{"NetworkID":"`+net+`","EndpointID":"`+id+`","Interface":{"Address":"`+addr+`","MacAddress":"`+mac+`"}}`)
	}
	if code, msg := ep("net1", "ep1", "10.42.0.2/24", "02:42:0a:00:00:05"); code != http.StatusOK {
		t.Fatalf("a valid MAC: %d %s", code, msg)
	}
	// An endpoint without a MAC gets one derived from its address.
	if code, msg := ep("net1", "ep0", "10.42.0.3/24", ""); code != http.StatusOK {
		t.Fatalf("no MAC: %d %s", code, msg)
	}
	for _, tc := range []struct{ mac, want string }{
		{"01:00:5e:00:00:01", "multicast"},
		{"ff:ff:ff:ff:ff:ff", "broadcast"},
		{"00:00:00:00:00:00", "all zeros"},
		{"02:42:0a:00:00:05", "already used on network"},
		{"02:6d:0a:2a:00:03", "already used on network"}, // derived for ep0
	} {
		code, msg := ep("net1", "ep2", "10.42.0.9/24", tc.mac)
		if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "leave --mac-address out") {
			t.Errorf("MAC %s: %d %q, want 400 saying %q and what to do", tc.mac, code, msg, tc.want)
		}
	}
	// The same MAC on another network is another segment: allowed.
	if code, msg := ep("net2", "ep3", "10.43.0.2/24", "02:42:0a:00:00:05"); code != http.StatusOK {
		t.Fatalf("the same MAC on another network: %d %s", code, msg)
	}
	// The endpoint itself, asked again (a retried call), is no conflict.
	if code, msg := ep("net1", "ep1", "10.42.0.2/24", "02:42:0a:00:00:05"); code != http.StatusOK {
		t.Fatalf("the same endpoint again: %d %s", code, msg)
	}
}

func TestSubnetClash(t *testing.T) {
	adv := netip.MustParseAddr("198.18.0.11")
	underlay := netip.MustParsePrefix("198.18.0.0/24")
	dns := netip.MustParseAddr("169.254.53.53")
	for _, tc := range []struct {
		subnet, want string
	}{
		{"10.42.0.0/16", ""},
		{"198.18.0.0/24", "underlay address 198.18.0.11"},
		{"198.0.0.0/8", "underlay address"},
		{"198.18.0.128/25", "overlaps this host's underlay network 198.18.0.0/24"},
		{"169.254.53.0/24", "DNS service address"},
		{"198.18.1.0/24", ""},
	} {
		got := subnetClash(netip.MustParsePrefix(tc.subnet), adv, underlay, dns)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.subnet, got, tc.want)
		}
	}
	// Through the plugin: refused at the pool, before any record exists.
	p := newPluginDaemon(t, true)
	code, msg := p.call("/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"198.18.0.0/24"}`)
	if code != http.StatusBadRequest || !strings.Contains(msg, "underlay address 198.18.0.11") {
		t.Fatalf("RequestPool of the underlay's subnet: %d %s", code, msg)
	}
	if st := p.d.ipam.Status(); len(st.Pools) != 0 {
		t.Fatalf("a refused pool left records: %+v", st.Pools)
	}
	code, msg = p.call("/NetworkDriver.CreateNetwork", `{"NetworkID":"n","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"169.254.53.0/24","Gateway":"169.254.53.1/24"}]}`)
	if code != http.StatusBadRequest || !strings.Contains(msg, "DNS service address") {
		t.Fatalf("CreateNetwork holding the DNS address: %d %s", code, msg)
	}
}
