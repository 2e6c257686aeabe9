package daemon

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
)

func TestContainerBridges(t *testing.T) {
	p := netip.MustParsePrefix
	underlay := netip.MustParseAddr("198.18.0.11")
	links := []linkInfo{
		{index: 1, name: "lo", kind: "device", addrs: []netip.Prefix{p("127.0.0.1/8"), p("169.254.53.53/32")}},
		{index: 2, name: "eth0", kind: "veth", addrs: []netip.Prefix{p("198.18.0.11/24")}}, // the underlay, not enslaved
		{index: 3, name: "docker0", kind: "bridge", addrs: []netip.Prefix{p("172.17.0.1/16"), p("fe80::1/64")}},
		{index: 4, name: "vethabc", kind: "veth", master: 3},
		{index: 5, name: "br-0123456789ab", kind: "bridge", addrs: []netip.Prefix{p("172.18.0.1/16")}}, // no container yet
		{index: 6, name: "mnbr4242", kind: "bridge", addrs: []netip.Prefix{p("10.42.0.1/24")}},
		{index: 7, name: "mnvx4242", kind: "vxlan", master: 6},
		{index: 8, name: "mnh1234", kind: "veth", master: 6},
		// A LAN bridge with a NIC in it: not containers, even with a veth beside the NIC.
		{index: 9, name: "br0", kind: "bridge", addrs: []netip.Prefix{p("192.168.1.5/24")}},
		{index: 10, name: "enp3s0", kind: "device", master: 9},
		{index: 11, name: "vethlan", kind: "veth", master: 9},
		// A VXLAN in a bridge that is not meshnet's: someone else's overlay.
		{index: 12, name: "ovbr", kind: "bridge", addrs: []netip.Prefix{p("10.99.0.1/24")}},
		{index: 13, name: "vx99", kind: "vxlan", master: 12},
		// The underlay on a bridge (a host whose NIC is bridged): never local.
		{index: 14, name: "brunder", kind: "bridge", addrs: []netip.Prefix{p("198.18.0.11/24")}},
		{index: 15, name: "vethu", kind: "veth", master: 14},
		{index: 16, name: "mnwg0", kind: "wireguard", addrs: []netip.Prefix{p("10.43.0.1/32")}},
		// Custom-named Docker bridge (com.docker.network.bridge.name).
		{index: 17, name: "appnet", kind: "bridge", addrs: []netip.Prefix{p("172.30.0.1/24")}},
		{index: 18, name: "veth9", kind: "veth", master: 17},
	}
	s := containerBridges(links, underlay)
	if got, want := slices.Sorted(maps.Keys(s.ifindex)), []int{3, 5, 6, 17}; !slices.Equal(got, want) {
		t.Errorf("container bridges %v, want %v (docker0, br-…, mnbr4242, appnet)", got, want)
	}
	wantPrefixes := []netip.Prefix{p("10.42.0.0/24"), p("172.17.0.0/16"), p("172.18.0.0/16"), p("172.30.0.0/24")}
	got := slices.Clone(s.prefixes)
	slices.SortFunc(got, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if !slices.Equal(got, wantPrefixes) {
		t.Errorf("prefixes %v, want %v", got, wantPrefixes)
	}
}

func TestLocalSourcesChecks(t *testing.T) {
	var l localSources
	a := netip.MustParseAddr
	if l.interfaceOK(3) || l.sourceOK(a("172.17.0.2")) {
		t.Fatal("before the first refresh nothing may be local")
	}
	l.set.Store(&localSet{ifindex: map[int]bool{3: true}, prefixes: []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16")}})
	for _, tc := range []struct {
		idx  int
		src  string
		want bool
	}{
		{3, "172.17.0.2", true},
		{2, "172.17.0.2", false}, // a container's address, arriving on the underlay: forged
		{3, "198.18.0.12", false},
	} {
		if got := l.interfaceOK(tc.idx) && l.sourceOK(a(tc.src)); got != tc.want {
			t.Errorf("interface %d, source %s: local=%v, want %v", tc.idx, tc.src, got, tc.want)
		}
	}
}

// readLinks reads this namespace's links as the classification needs them (no root needed).
func TestReadLinks(t *testing.T) {
	links, err := readLinks()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(links, func(l linkInfo) bool { return l.name == "lo" })
	if i < 0 {
		t.Fatalf("no lo among %d links", len(links))
	}
	if lo := links[i]; lo.index <= 0 || lo.kind != "device" || !slices.Contains(lo.addrs, netip.MustParsePrefix("127.0.0.1/8")) {
		t.Errorf("lo read as %+v", lo)
	}
}
