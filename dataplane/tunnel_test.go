package dataplane

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// withoutTunnelRules drops the tunnel-port rules, for tests about the
// per-network rules alone.
func withoutTunnelRules(rules []ruleSpec) []ruleSpec {
	return slices.DeleteFunc(rules, func(r ruleSpec) bool {
		return strings.HasPrefix(r.Comment, commentPrefix+" tunnel ")
	})
}

func wgNetwork(vni uint32, subnet, gw string, locals ...LocalEndpoint) Network {
	return Network{VNI: vni, Kind: KindWireGuard, Subnet: netip.MustParsePrefix(subnet),
		Gateway: netip.MustParseAddr(gw), Locals: locals}
}

func TestTunnelRules(t *testing.T) {
	vx := Network{VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/16"), Gateway: netip.MustParseAddr("10.7.0.1")}
	wg := wgNetwork(8, "10.8.0.0/24", "10.8.0.1")
	spec := firewallSpec{VXLANPort: 4789, WireGuardPort: 51820, Tunnel: WireGuardDevice,
		Members: []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}}

	for _, tc := range []struct {
		name  string
		nets  []Network
		ports []int
	}{
		{"none", nil, nil},
		{"vxlan only", []Network{vx}, []int{4789}},
		{"wireguard only", []Network{wg}, []int{51820}},
		{"both", []Network{vx, wg}, []int{4789, 51820}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := spec
			f.Nets = tc.nets
			if got := f.tunnelPorts(); !slices.Equal(got, tc.ports) {
				t.Fatalf("ports %v, want %v", got, tc.ports)
			}
			rules := tunnelRules(f)
			byChain := ruleComments(rules)
			var wantInput []string
			for _, p := range tc.ports {
				ps := strconv.Itoa(p)
				wantInput = append(wantInput, "meshnet: tunnel udp "+ps+" accept ip members on their route",
					"meshnet: tunnel udp "+ps+" accept ip6 members on their route", "meshnet: tunnel udp "+ps+" drop others")
				for _, fam := range []string{"ip", "ip6"} {
					want := "meshnet: tunnel udp " + ps + " drop forwarded to " + fam + " members"
					if !slices.Contains(byChain["meshnet/forward"], want) {
						t.Errorf("forward chain %q lacks %q", byChain["meshnet/forward"], want)
					}
				}
			}
			slices.Sort(wantInput)
			if got := byChain["meshnet/input"]; !slices.Equal(got, wantInput) {
				t.Errorf("input chain %q, want %q", got, wantInput)
			}
			// Host sockets are kept from the VXLAN port only (wireguard-go
			// sends from meshnetd's own socket), and the mark that exempts
			// host packets into an overlay comes first.
			var wantOut []string
			if slices.Contains(tc.ports, 4789) {
				wantOut = []string{"meshnet: tunnel mark host packets into overlays",
					"meshnet: tunnel udp 4789 drop host sockets to ip members",
					"meshnet: tunnel udp 4789 drop host sockets to ip6 members"}
			}
			if got := byChain["meshnet/localout"]; !slices.Equal(got, wantOut) {
				t.Errorf("localout chain %q, want %q", got, wantOut)
			}
			for _, r := range rules {
				if r.Chain == meshnetLocalOut && r.First != strings.Contains(r.Comment, " mark ") {
					t.Errorf("%q: First=%v", r.Comment, r.First)
				}
			}
			// Accepts go first, the drop after them.
			for _, r := range rules {
				accept := strings.Contains(r.Comment, " accept ")
				if r.Chain == meshnetInput && r.First != accept {
					t.Errorf("%q: First=%v", r.Comment, r.First)
				}
			}
			if slices.ContainsFunc(tc.nets, func(n Network) bool { return n.wireguard() }) {
				for _, want := range []string{"meshnet: isolate mnbr8 from mnwg0 outside 10.8.0.0/24", "meshnet: isolate mnbr8 to mnwg0 outside 10.8.0.0/24"} {
					if !slices.Contains(byChain["meshnet/forward"], want) {
						t.Errorf("forward chain %q lacks %q", byChain["meshnet/forward"], want)
					}
				}
			}
		})
	}

	v4, v6 := spec.members()
	if !slices.Equal(v4, []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}) || len(v6) != 0 {
		t.Errorf("members %v %v", v4, v6)
	}
	// Without a running device, a wireguard network guards no WireGuard port
	// (nothing listens) and gets no device rules.
	f := spec
	f.Nets, f.Tunnel = []Network{wg}, ""
	if rules := tunnelRules(f); len(rules) != 0 {
		t.Errorf("rules without a device: %v", ruleComments(rules))
	}
}

func TestWantRulesWireGuard(t *testing.T) {
	wg := wgNetwork(8, "10.8.0.0/24", "10.8.0.1")
	view := firewallView{acceptChain: map[nftables.TableFamily]string{
		nftables.TableFamilyIPv4: iptDockerUser, nftables.TableFamilyIPv6: iptDockerUser,
	}}
	got := ruleComments(wantRules(firewallSpec{Nets: []Network{wg}, WireGuardPort: 51820, Tunnel: WireGuardDevice}, view))
	if !slices.Contains(got["meshnet/postrouting"], "meshnet: masquerade 10.8.0.0/24 from mnbr8 off subnet") ||
		slices.Contains(got["meshnet/postrouting"], "meshnet: masquerade 10.8.0.0/24 from mnbr8") {
		t.Errorf("postrouting %q: want only the off-subnet masquerade", got["meshnet/postrouting"])
	}
	// The accept from the tunnel exists once, in the family of the subnet.
	n := 0
	for _, r := range wantRules(firewallSpec{Nets: []Network{wg}, Tunnel: WireGuardDevice}, view) {
		if r.Comment == "meshnet: accept mnbr8 from mnwg0" {
			n++
			if r.Family != nftables.TableFamilyIPv4 {
				t.Errorf("accept from tunnel in family %v", r.Family)
			}
		}
	}
	if n != 1 {
		t.Errorf("accept from tunnel %d times, want 1", n)
	}
}

func TestCompileWireGuard(t *testing.T) {
	h, c := VethNames("aaaaaaaaaaaaaaaa")
	local := LocalEndpoint{ID: "aaaaaaaaaaaaaaaa", HostIf: h, ContainerIf: c, MAC: mustMAC("02:00:00:00:00:05"),
		Addr: netip.MustParsePrefix("10.8.0.20/24")} // inside peer B's block: kept after a handoff
	h2, c2 := VethNames("bbbbbbbbbbbbbbbb")
	local2 := LocalEndpoint{ID: "bbbbbbbbbbbbbbbb", HostIf: h2, ContainerIf: c2, MAC: mustMAC("02:00:00:00:00:06"),
		Addr: netip.MustParsePrefix("10.8.0.5/24")} // in this host's own block
	st := State{
		Underlay: UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.1")},
		Networks: []Network{wgNetwork(8, "10.8.0.0/24", "10.8.0.1", local, local2)},
		WireGuard: WireGuardState{Peers: []WireGuardPeer{
			{PublicKey: "B", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.16/28"), netip.MustParsePrefix("10.9.0.0/28")}},
			{PublicKey: "C", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.32/28"), netip.MustParsePrefix("10.8.0.6/32")}},
		}},
	}
	if _, err := compile(st, 1500, ""); err == nil || !strings.Contains(err.Error(), "no WireGuard device") {
		t.Errorf("compile without a device: %v", err)
	}
	cw, err := compile(st, 1500, WireGuardDevice)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	if cw.MTU[8] != 1440 {
		t.Errorf("MTU %d, want 1500-60", cw.MTU[8])
	}
	if _, ok := cw.Want.Links["mnvx8"]; ok {
		t.Error("wireguard network got a vxlan device")
	}
	if cw.Want.Links["mnbr8"].Kind != kindBridge || cw.Want.Links[h].Master != "mnbr8" {
		t.Errorf("links %v", cw.Want.Links)
	}
	want := []routeEntry{
		{netip.MustParsePrefix("10.8.0.6/32"), WireGuardDevice},
		{netip.MustParsePrefix("10.8.0.16/28"), WireGuardDevice},
		{netip.MustParsePrefix("10.8.0.32/28"), WireGuardDevice},
		{netip.MustParsePrefix("10.8.0.20/32"), "mnbr8"},
	}
	if !slices.Equal(cw.Want.Routes, want) {
		t.Errorf("routes\n got %v\nwant %v", cw.Want.Routes, want)
	}

	// A peer owning the whole subnet is routed as its two halves (a route
	// of the subnet itself would replace the bridge's connected route), and
	// the local container inside it goes back to the bridge.
	st.WireGuard.Peers = st.WireGuard.Peers[:1]
	st.WireGuard.Peers[0].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24")}
	cw, err = compile(st, 1500, WireGuardDevice)
	if err != nil {
		t.Fatalf("whole-subnet peer prefix: %v", err)
	}
	want = []routeEntry{
		{netip.MustParsePrefix("10.8.0.0/25"), WireGuardDevice},
		{netip.MustParsePrefix("10.8.0.128/25"), WireGuardDevice},
		{netip.MustParsePrefix("10.8.0.20/32"), "mnbr8"},
		{netip.MustParsePrefix("10.8.0.5/32"), "mnbr8"},
	}
	if !slices.Equal(cw.Want.Routes, want) {
		t.Errorf("routes for a whole-subnet peer\n got %v\nwant %v", cw.Want.Routes, want)
	}
	st.Underlay.Addr = netip.MustParseAddr("2001:db8::1")
	if c6, _ := compile(st, 1500, WireGuardDevice); c6.MTU[8] != 1420 {
		t.Errorf("MTU over IPv6 %d, want 1500-80", c6.MTU[8])
	}
}

func TestPlanRoutes(t *testing.T) {
	r := func(p, dev string) routeEntry { return routeEntry{netip.MustParsePrefix(p), dev} }
	want := kernelModel{Routes: []routeEntry{r("10.8.0.16/28", "mnwg0"), r("10.8.0.20/32", "mnbr8")}}
	have := kernelModel{Routes: []routeEntry{
		r("10.8.0.16/28", "mnwg0"), // as wanted
		r("10.8.0.20/32", "mnwg0"), // wrong device: replaced
		r("10.8.0.48/28", "mnwg0"), // stale: deleted
		r("10.9.0.16/28", "mnwg0"), // in a reserved subnet: kept
	}}
	set, del := planRoutes(want, have, []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")})
	if !slices.Equal(set, []routeEntry{r("10.8.0.20/32", "mnbr8")}) {
		t.Errorf("set %v", set)
	}
	if !slices.Equal(del, []routeEntry{r("10.8.0.48/28", "mnwg0")}) {
		t.Errorf("del %v", del)
	}
}

func TestStateEqualWireGuard(t *testing.T) {
	a := State{
		Members: []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.1")},
		WireGuard: WireGuardState{Peers: []WireGuardPeer{
			{PublicKey: "B", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.32/28"), netip.MustParsePrefix("10.8.0.16/28")}},
			{PublicKey: "A"},
		}},
	}
	b := State{
		Members: []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")},
		WireGuard: WireGuardState{Port: DefaultWireGuardPort, Peers: []WireGuardPeer{
			{PublicKey: "A"},
			{PublicKey: "B", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.16/28"), netip.MustParsePrefix("10.8.0.32/28")}},
		}},
	}
	if !a.Equal(b) {
		t.Error("same states in another order differ")
	}
	b.WireGuard.Peers[0].Endpoint = netip.MustParseAddrPort("198.18.0.3:51820")
	if a.Equal(b) {
		t.Error("a changed endpoint went unnoticed")
	}
	b.WireGuard.Peers[0].Endpoint = netip.AddrPort{}
	b.Members = b.Members[:1]
	if a.Equal(b) {
		t.Error("a changed member set went unnoticed")
	}
}
