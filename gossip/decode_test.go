package gossip

import (
	"encoding/json"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The values below are records as meshnet wrote them before the typed
// record layer (main at f0da3ae), byte for byte. Mixed-version clusters
// depend on both directions: a new node must parse an old node's records,
// and must write the same bytes, so an old node parses its records too.
var wireRecords = []struct {
	kind  Kind
	id    string
	value string
}{
	{KindNode, "", `{"addr":"198.18.0.11","gossip_port":7946,"wireguard_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","wireguard_port":51820,"version":"v1","started":"2026-12-01T10:00:00Z"}`},
	{KindNetwork, "10.42.0.0/16", `{"subnet":"10.42.0.0/16","gateway":"10.42.0.1","vni":4242,"dataplane":"vxlan","mtu":1450,"options":{"a":"b"},"internal":true,"name":"app","docker_id":"abc","created":"2026-12-01T10:00:00Z"}`},
	{KindEndpoint, "ep1", `{"subnet":"10.42.0.0/16","addr":"10.42.0.5","mac":"02:42:0a:2a:00:05","container":"web","network":"app","services":["api"],"ports":["80/tcp"],"published":["0.0.0.0:8080:80/tcp"],"healthy":true}`},
	{KindRemoval, "h2", `{"up_to":5,"at":"2026-12-01T10:00:00Z","by":"h1"}`},
	{KindPool, "10.42.0.0/16", `{"subnet":"10.42.0.0/16","gateway":"10.42.0.1","block_bits":8,"origin":{"epoch":1,"version":77,"node":"h1"},"allocated":3,"spare":2,"answered":{"h2":4}}`},
	{KindBlock, "10.42.0.0/16 10.42.1.0/24 5082a1c887b32113", `{"pool":"10.42.0.0/16","prefix":"10.42.1.0/24","origin":{"epoch":1,"version":77,"node":"h1"},"gen":2,"from":"h3","held":["10.42.1.4-10.42.1.6","10.42.9.9"]}`},
	{KindRequest, "10.42.0.0/16", `{"subnet":"10.42.0.0/16","origin":{"epoch":1,"version":77,"node":"h1"},"seq":4,"donor":"h1","want":2}`},
}

func TestRecordsOfEarlierVersionsParseAndReencode(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, w := range wireRecords {
		r := Record{Key: Key{Kind: w.kind, Owner: "h1", ID: w.id}, Version: 10, Value: json.RawMessage(w.value)}
		var parsed, wire any
		var err error
		switch w.kind {
		case KindNode:
			var n Node
			n, err = ParseNode(r)
			parsed, wire = n, n.Info
			if err == nil && (n.Addr != netip.MustParseAddr("198.18.0.11") || n.Info.WireGuardPort != 51820 || !n.Info.Started.Equal(at)) {
				t.Errorf("node: %+v", n)
			}
		case KindNetwork:
			var n Network
			n, err = ParseNetwork(r)
			parsed, wire = n, n.Info
			if err == nil && (n.Subnet != netip.MustParsePrefix("10.42.0.0/16") || n.Gateway != netip.MustParseAddr("10.42.0.1") || n.Info.VNI != 4242 || !n.Info.Internal) {
				t.Errorf("network: %+v", n)
			}
		case KindEndpoint:
			var e Endpoint
			e, err = ParseEndpoint(r)
			parsed, wire = e, e.Info
			if err == nil && (e.Addr != netip.MustParseAddr("10.42.0.5") || e.MAC.String() != "02:42:0a:2a:00:05" || !e.Info.Healthy || e.ID != "ep1") {
				t.Errorf("endpoint: %+v", e)
			}
		case KindRemoval:
			var rm Removal
			rm, err = ParseRemoval(r)
			parsed, wire = rm, rm
			if err == nil && (rm.UpTo != 5 || rm.By != "h1") {
				t.Errorf("removal: %+v", rm)
			}
		case KindPool:
			var p PoolRecord
			p, err = ParsePool(r)
			parsed, wire = p, p
			if err == nil && (p.Origin != Origin{Epoch: 1, Version: 77, Node: "h1"} || p.Answered["h2"] != 4) {
				t.Errorf("pool: %+v", p)
			}
		case KindBlock:
			var b Block
			b, err = ParseBlock(r)
			parsed, wire = b, b.Value
			// 10.42.9.9 lies outside the block: left out of Held.
			want := []netip.Addr{netip.MustParseAddr("10.42.1.4"), netip.MustParseAddr("10.42.1.5"), netip.MustParseAddr("10.42.1.6")}
			if err == nil && (b.Prefix != netip.MustParsePrefix("10.42.1.0/24") || b.Value.Gen != 2 || !reflect.DeepEqual(b.Held, want)) {
				t.Errorf("block: %+v", b)
			}
		case KindRequest:
			var rq RequestRecord
			rq, err = ParseRequest(r)
			parsed, wire = rq, rq
			if err == nil && (rq.Want != 2 || rq.Donor != "h1") {
				t.Errorf("request: %+v", rq)
			}
		}
		if err != nil {
			t.Errorf("%s record of an earlier version: %v", w.kind, err)
			continue
		}
		if err := checkValue(r); err != nil {
			t.Errorf("Merge would refuse an earlier version's %s record: %v", w.kind, err)
		}
		back, err := json.Marshal(wire)
		if err != nil || string(back) != w.value {
			t.Errorf("%s re-encodes as\n%s\nwant\n%s (%v; parsed %+v)", w.kind, back, w.value, err, parsed)
		}
	}
}

// An endpoint address has one form, the bare address every meshnet version
// writes; anything else is refused where records enter, with its reason.
func TestEndpointAddressHasOneForm(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
		why  string
	}{
		{"10.42.0.5", true, ""},
		{"::ffff:10.42.0.5", true, ""}, // the IPv4 address, unmapped
		{"10.42.0.5/16", false, "address"},
		{"10.43.0.5", false, "outside subnet"},
		{"", false, "address"},
	} {
		v, _ := json.Marshal(EndpointInfo{Subnet: "10.42.0.0/16", Addr: tc.addr, MAC: "02:42:0a:2a:00:05"})
		r := Record{Key: Key{Kind: KindEndpoint, Owner: "h1", ID: "ep"}, Version: 1, Value: v}
		e, err := ParseEndpoint(r)
		if tc.ok {
			if err != nil || e.Addr != netip.MustParseAddr("10.42.0.5") || !e.Addr.Is4() {
				t.Errorf("%q: %v, %v", tc.addr, e.Addr, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%q: err %v, want one saying %q", tc.addr, err, tc.why)
		}
		if checkValue(r) == nil {
			t.Errorf("%q: Merge would admit it", tc.addr)
		}
	}
}

// The view is decoded once per snapshot, leaves out what does not parse
// with a counted reason, and marks endpoints of nodes that are down.
func TestSnapshotViewDecodesOnce(t *testing.T) {
	s := NewStore(StoreConfig{Self: "a"})
	mustPut := func(kind Kind, id string, v any) {
		t.Helper()
		if _, err := s.Put(kind, id, v); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(KindNode, "", NodeInfo{Addr: "198.18.0.11"})
	mustPut(KindNetwork, "10.42.0.0/16", NetworkInfo{Subnet: "10.42.0.0/16", Gateway: "10.42.0.1", VNI: 7, Dataplane: "vxlan"})
	mustPut(KindEndpoint, "good", EndpointInfo{Subnet: "10.42.0.0/16", Addr: "10.42.0.5", MAC: "02:42:0a:2a:00:05"})
	mustPut(KindEndpoint, "nomac", EndpointInfo{Subnet: "10.42.0.0/16", Addr: "10.42.0.6"})
	// The owner's own writes do not pass Merge's check: the view refuses
	// it on its own.
	mustPut(KindEndpoint, "prefix", EndpointInfo{Subnet: "10.42.0.0/16", Addr: "10.42.0.7/16"})
	snap := s.Snapshot()
	v := snap.View()
	if snap.View() != v {
		t.Error("a second View call decoded again")
	}
	if n, ok := v.Nodes["a"]; !ok || n.Addr != netip.MustParseAddr("198.18.0.11") {
		t.Errorf("nodes: %+v", v.Nodes)
	}
	if len(v.Networks) != 1 || v.Networks[0].Subnet != netip.MustParsePrefix("10.42.0.0/16") {
		t.Errorf("networks: %+v", v.Networks)
	}
	got := map[string]net.HardwareAddr{}
	for _, e := range v.Endpoints {
		if !e.Up {
			t.Errorf("the local node's endpoint %s is not up", e.ID)
		}
		got[e.ID] = e.MAC
	}
	if len(got) != 2 || got["good"] == nil || got["nomac"] != nil {
		t.Errorf("endpoints: %v", got)
	}
	if len(v.Rejected) != 1 {
		t.Errorf("rejected: %v", v.Rejected)
	}
	for reason, n := range v.Rejected {
		if n != 1 || !strings.HasPrefix(reason, "endpoint: ") || !strings.Contains(reason, "address") {
			t.Errorf("rejected %q %d times", reason, n)
		}
	}
}

// A dual-stack network's record names its IPv4 subnet (its identity) and
// its IPv6 one; its endpoints carry an address of each family. Records
// that mix the families up are refused where they enter, with the reason.
func TestDualStackRecords(t *testing.T) {
	for _, tc := range []struct {
		subnet, gw, subnet6, gw6 string
		why                      string // "" = accepted
	}{
		{"10.42.0.0/16", "10.42.0.1", "fd42::/64", "fd42::1", ""},
		{"fd42::/64", "fd42::1", "", "", ""}, // IPv6-only
		{"10.42.0.0/16", "10.42.0.1", "fd42::/64", "fd43::1", "outside subnet"},
		{"10.42.0.0/16", "10.42.0.1", "10.43.0.0/16", "10.43.0.1", "an IPv4 subnet and an IPv6 one"},
		{"fd43::/64", "fd43::1", "fd42::/64", "fd42::1", "an IPv4 subnet and an IPv6 one"},
		{"10.42.0.0/16", "10.42.0.1", "fd42::1/64", "fd42::1", "host bits"},
		{"10.42.0.0/16", "10.42.0.1", "", "fd42::1", "IPv6 half"},
	} {
		v, _ := json.Marshal(NetworkInfo{Subnet: tc.subnet, Gateway: tc.gw, Subnet6: tc.subnet6, Gateway6: tc.gw6, VNI: 7, Dataplane: "vxlan"})
		r := Record{Key: Key{Kind: KindNetwork, Owner: "h1", ID: tc.subnet}, Version: 1, Value: v}
		n, err := ParseNetwork(r)
		if tc.why == "" {
			if err != nil || n.Subnet.String() != tc.subnet || tc.subnet6 != "" && n.Subnet6.String() != tc.subnet6 {
				t.Errorf("%s %s: %v, subnets %s and %s", tc.subnet, tc.subnet6, err, n.Subnet, n.Subnet6)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s %s: err %v, want one saying %q", tc.subnet, tc.subnet6, err, tc.why)
		}
		if checkValue(r) == nil {
			t.Errorf("%s %s: Merge would admit it", tc.subnet, tc.subnet6)
		}
	}
	for _, tc := range []struct {
		subnet, addr, subnet6, addr6 string
		ok                           bool
	}{
		{"10.42.0.0/16", "10.42.0.5", "fd42::/64", "fd42::5", true},
		{"10.42.0.0/16", "10.42.0.5", "", "", true},
		{"10.42.0.0/16", "10.42.0.5", "fd42::/64", "fd43::5", false},
		{"10.42.0.0/16", "10.42.0.5", "", "fd42::5", false},
		{"10.42.0.0/16", "10.42.0.5", "10.42.0.0/16", "10.42.0.6", false},
		{"10.42.0.0/16", "10.42.0.5", "::ffff:10.42.0.0/112", "::ffff:10.42.0.6", false},
		{"10.42.0.0/16", "10.42.0.5", "fe80::/64", "fe80::1%eth0", false},
		{"fd42::/64", "fd42::5", "fd42::/64", "fd42::6", false}, // IPv6-only: one address
	} {
		v, _ := json.Marshal(EndpointInfo{Subnet: tc.subnet, Addr: tc.addr, Subnet6: tc.subnet6, Addr6: tc.addr6, MAC: "02:42:0a:2a:00:05"})
		r := Record{Key: Key{Kind: KindEndpoint, Owner: "h1", ID: "ep"}, Version: 1, Value: v}
		e, err := ParseEndpoint(r)
		if tc.ok != (err == nil) {
			t.Errorf("endpoint %s %s: err %v, want ok=%v", tc.addr, tc.addr6, err, tc.ok)
		}
		if tc.ok && e.Addr6.IsValid() != (tc.addr6 != "") {
			t.Errorf("endpoint %s %s: Addr6 %v", tc.addr, tc.addr6, e.Addr6)
		}
	}
}
