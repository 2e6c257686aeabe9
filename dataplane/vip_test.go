package dataplane

import (
	"net/netip"
	"testing"
)

func TestVIPStateEqual(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.42.0.2"), netip.MustParseAddr("10.42.0.3"), netip.MustParseAddr("10.42.0.4")
	vip := netip.MustParseAddr("10.42.0.200")
	base := State{VIPs: []VIP{{Addr: vip, Service: "api", Backends: []netip.Addr{a, b}}}}
	for _, tc := range []struct {
		name  string
		other State
		equal bool
	}{
		{"same", State{VIPs: []VIP{{Addr: vip, Service: "api", Backends: []netip.Addr{a, b}}}}, true},
		{"backends reordered and doubled", State{VIPs: []VIP{{Addr: vip, Service: "api", Backends: []netip.Addr{b, a, b}}}}, true},
		{"a replica more", State{VIPs: []VIP{{Addr: vip, Service: "api", Backends: []netip.Addr{a, b, c}}}}, false},
		{"no replica", State{VIPs: []VIP{{Addr: vip, Service: "api"}}}, false},
		{"no VIP", State{}, false},
	} {
		if got := base.Equal(tc.other); got != tc.equal {
			t.Errorf("%s: Equal = %v, want %v", tc.name, got, tc.equal)
		}
	}
}

func TestWantVIPComments(t *testing.T) {
	vs := normalizedVIPs([]VIP{
		{Addr: netip.MustParseAddr("10.42.0.201"), Service: "db"},
		{Addr: netip.MustParseAddr("10.42.0.200"), Service: "api", Backends: []netip.Addr{netip.MustParseAddr("10.42.0.3"), netip.MustParseAddr("10.42.0.2")}},
		{Addr: netip.MustParseAddr("fd00::1"), Service: "v6"}, // the table is IPv4: skipped
	})
	if len(vs) != 2 {
		t.Fatalf("normalized: %+v", vs)
	}
	want := wantVIPComments(serviceRules{VIPs: vs})
	if got := want[vipPre]; len(got) != 1 || got[0] != "meshnet: vip 10.42.0.200 api -> 10.42.0.2,10.42.0.3" {
		t.Errorf("prerouting rules %q: want one DNAT, for the VIP with replicas, backends sorted", got)
	}
	if len(want[vipPost]) != 1 || len(want[vipInput]) != 1 {
		t.Errorf("postrouting %q, input %q: want one rule each", want[vipPost], want[vipInput])
	}
}
