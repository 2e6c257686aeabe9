package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"
)

// The words u32 compares, as tc writes them ("match u16 0x0242 0xffff at
// -14" and so on, aligned down to 4 bytes).
func TestBypassKeys(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x42, 0x0a, 0x2a, 0x00, 0x15}
	if got := macKeys(-14, mac); got[0] != (nl.TcU32Key{Off: -16, Mask: 0x0000ffff, Val: 0x0242}) || got[1] != (nl.TcU32Key{Off: -12, Mask: 0xffffffff, Val: 0x0a2a0015}) {
		t.Errorf("destination MAC keys %+v", got)
	}
	if got := macKeys(-8, mac); got[0] != (nl.TcU32Key{Off: -8, Mask: 0xffffffff, Val: 0x02420a2a}) || got[1] != (nl.TcU32Key{Off: -4, Mask: 0xffff0000, Val: 0x00150000}) {
		t.Errorf("source MAC keys %+v", got)
	}
	if got := ipKey(16, netip.MustParsePrefix("10.42.0.0/24")); got != (nl.TcU32Key{Off: 16, Mask: 0xffffff00, Val: 0x0a2a0000}) {
		t.Errorf("destination subnet key %+v", got)
	}
	if got := ipKey(12, netip.MustParsePrefix("10.42.0.21/32")); got != (nl.TcU32Key{Off: 12, Mask: 0xffffffff, Val: 0x0a2a0015}) {
		t.Errorf("source address key %+v", got)
	}
}

// Per vxlan network with local containers: on each veth the gateway pass,
// one redirect per other local container, the redirect to the vxlan
// device; on the vxlan device one redirect per local container. wireguard
// and IPv6-only networks and endpoints without a MAC get none.
func TestPlanBypass(t *testing.T) {
	a := testLocalEndpoint("b1b1b1b1b1b1b1", "02:42:00:00:00:01", "10.42.0.11/24")
	b := testLocalEndpoint("b2b2b2b2b2b2b2", "02:42:00:00:00:02", "10.42.0.12/24")
	noMAC := testLocalEndpoint("b3b3b3b3b3b3b3", "02:42:00:00:00:03", "10.42.0.13/24")
	noMAC.MAC = nil
	nets := []Network{
		testNet42([]LocalEndpoint{a, b, noMAC}),
		{VNI: 7, Kind: KindWireGuard, Subnet: netip.MustParsePrefix("10.7.0.0/24"), Locals: []LocalEndpoint{a}},
		{VNI: 8, Subnet: netip.MustParsePrefix("fd08::/64"), Locals: []LocalEndpoint{a}},
	}
	brMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	got, over := planBypass(nets, func(Network) net.HardwareAddr { return brMAC })
	if len(over) != 0 {
		t.Errorf("networks over the limit: %q", over)
	}
	// The same in another order (the daemon builds Locals from maps).
	nets[0].Locals = []LocalEndpoint{noMAC, b, a}
	if again, _ := planBypass(nets, func(Network) net.HardwareAddr { return brMAC }); !slices.EqualFunc(got, again, func(x, y bypassFilter) bool {
		return x.Dev == y.Dev && x.Prio == y.Prio && x.To == y.To && slices.Equal(x.Keys, y.Keys)
	}) {
		t.Errorf("another order of the locals gives other filters:\n%+v\n%+v", got, again)
	}
	rows := bypassRows(got)
	want := []bypassRow{
		{a.HostIf, bypassPrioGateway, ""}, {a.HostIf, bypassPrioLocal + 1, b.HostIf}, {a.HostIf, bypassPrioRemote, "mnvx42"},
		{b.HostIf, bypassPrioGateway, ""}, {b.HostIf, bypassPrioLocal, a.HostIf}, {b.HostIf, bypassPrioRemote, "mnvx42"},
		{"mnvx42", bypassPrioLocal, a.HostIf}, {"mnvx42", bypassPrioLocal + 1, b.HostIf},
	}
	if len(rows) != len(want) {
		t.Fatalf("filters %+v\nwant %+v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("filter %d: %+v, want %+v", i, rows[i], want[i])
		}
	}
	// The redirect to the vxlan device asks for the container's own
	// source MAC and address, a destination in the subnet, unicast.
	remote := got[2].Keys
	if len(remote) != 5 || remote[2] != ipKey(12, netip.MustParsePrefix("10.42.0.11/32")) || remote[3] != ipKey(16, netip.MustParsePrefix("10.42.0.0/24")) || remote[4] != unicastDstKey {
		t.Errorf("keys of the redirect to the vxlan device: %+v", remote)
	}
	// From the overlay: a source in the subnet only.
	if k := got[6].Keys; len(k) != 3 || k[2] != ipKey(12, netip.MustParsePrefix("10.42.0.0/24")) {
		t.Errorf("keys of the redirect from the overlay: %+v", k)
	}
}

// A container kept on the bridge (its VIP table is not in place) gets no
// filter of its own and none on the vxlan device; the others leave frames
// to it to the bridge rather than send them to the vxlan device.
func TestPlanBypassBridged(t *testing.T) {
	a := testLocalEndpoint("b1b1b1b1b1b1b1", "02:42:00:00:00:01", "10.42.0.11/24")
	b := testLocalEndpoint("b2b2b2b2b2b2b2", "02:42:00:00:00:02", "10.42.0.12/24")
	c := testLocalEndpoint("b3b3b3b3b3b3b3", "02:42:00:00:00:03", "10.42.0.13/24")
	c.Bridged = true
	brMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	got, _ := planBypass([]Network{testNet42([]LocalEndpoint{c, a, b})}, func(Network) net.HardwareAddr { return brMAC })
	rows := bypassRows(got)
	for _, f := range got {
		if f.Dev == c.HostIf || f.To == c.HostIf {
			t.Errorf("a filter on or to the bridged container: %+v", f)
		}
		if f.Prio == bypassPrioBridged && !slices.Equal(f.Keys, macKeys(-14, c.MAC)) {
			t.Errorf("the pass to the bridged container matches %+v, want its MAC", f.Keys)
		}
	}
	want := []bypassRow{
		{a.HostIf, bypassPrioGateway, ""}, {a.HostIf, bypassPrioLocal + 1, b.HostIf}, {a.HostIf, bypassPrioBridged, ""}, {a.HostIf, bypassPrioRemote, "mnvx42"},
		{b.HostIf, bypassPrioGateway, ""}, {b.HostIf, bypassPrioLocal, a.HostIf}, {b.HostIf, bypassPrioBridged, ""}, {b.HostIf, bypassPrioRemote, "mnvx42"},
		{"mnvx42", bypassPrioLocal, a.HostIf}, {"mnvx42", bypassPrioLocal + 1, b.HostIf},
	}
	if !slices.Equal(rows, want) {
		t.Errorf("filters\n%+v\nwant\n%+v", rows, want)
	}
	// Only bridged containers: nothing to bypass.
	a.Bridged = true
	if got, _ := planBypass([]Network{testNet42([]LocalEndpoint{a, c})}, func(Network) net.HardwareAddr { return brMAC }); len(got) != 0 {
		t.Errorf("filters with every container bridged: %+v", got)
	}
}

// A network with more than bypassMaxLocals containers on the host
// (bridged ones included) gets no filter and is named; one at the limit,
// beside it, keeps its filters.
func TestPlanBypassLimit(t *testing.T) {
	locals := func(n int, bridged int) []LocalEndpoint {
		var out []LocalEndpoint
		for i := range n {
			l := testLocalEndpoint(fmt.Sprintf("%04dc0000000000", i), fmt.Sprintf("02:42:00:00:01:%02x", i), fmt.Sprintf("10.42.0.%d/24", i+2))
			l.Bridged = i < bridged
			out = append(out, l)
		}
		return out
	}
	brMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	atLimit := testNet42(locals(bypassMaxLocals, 0))
	over := testNet42(locals(bypassMaxLocals+1, 2))
	over.VNI, over.Subnet = 43, netip.MustParsePrefix("10.43.0.0/24")
	got, bridged := planBypass([]Network{atLimit, over}, func(Network) net.HardwareAddr { return brMAC })
	if want := bypassMaxLocals*(bypassMaxLocals+1) + bypassMaxLocals; len(got) != want {
		t.Errorf("%d filters, want %d (the network at the limit's alone)", len(got), want)
	}
	for _, f := range got {
		if f.Dev == "mnvx43" || f.To == "mnvx43" {
			t.Errorf("a filter of the network over the limit: %+v", f)
		}
	}
	if len(bridged) != 1 || !strings.Contains(bridged[0], "10.43.0.0/24 on mnbr43: 33 containers here, over 32") {
		t.Errorf("left on the bridge: %q", bridged)
	}
}

// bypassRow is a filter as the plan tests compare it: where, in which
// order, to where.
type bypassRow struct {
	dev  string
	prio uint16
	to   string
}

func bypassRows(fs []bypassFilter) []bypassRow {
	var rows []bypassRow
	for _, f := range fs {
		rows = append(rows, bypassRow{f.Dev, f.Prio, f.To})
	}
	return rows
}
