package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// Per network with local containers: each container's veth is a port,
// and the network's vxlan device or the WireGuard device; every container
// a destination, and a wireguard network's an address too. wireguard
// networks without a WireGuard device, IPv6-only networks and endpoints
// without a MAC get none; the order of the locals does not matter (the
// daemon builds them from maps).
func TestPlanBypass(t *testing.T) {
	a := testLocalEndpoint("b1b1b1b1b1b1b1", "02:42:00:00:00:01", "10.42.0.11/24")
	b := testLocalEndpoint("b2b2b2b2b2b2b2", "02:42:00:00:00:02", "10.42.0.12/24")
	noMAC := testLocalEndpoint("b3b3b3b3b3b3b3", "02:42:00:00:00:03", "10.42.0.13/24")
	noMAC.MAC = nil
	w := testLocalEndpoint("w1w1w1w1w1w1w1", "02:42:00:00:07:05", "10.7.0.5/24")
	nets := []Network{
		testNet42([]LocalEndpoint{a, b, noMAC}),
		{VNI: 7, Kind: KindWireGuard, Subnet: netip.MustParsePrefix("10.7.0.0/24"), Gateway: netip.MustParseAddr("10.7.0.1"), Locals: []LocalEndpoint{w}},
		{VNI: 8, Subnet: netip.MustParsePrefix("fd08::/64"), Locals: []LocalEndpoint{a}},
	}
	brMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	macOf := func(Network) net.HardwareAddr { return brMAC }
	plan := planBypass(nets, macOf, WireGuardDevice)
	nets[0].Locals = []LocalEndpoint{noMAC, b, a}
	if plan2 := planBypass(nets, macOf, WireGuardDevice); fmt.Sprint(plan) != fmt.Sprint(plan2) {
		t.Errorf("another order of the locals gives another plan:\n%v\n%v", plan, plan2)
	}
	subnet, subnet7 := netip.MustParsePrefix("10.42.0.0/24"), netip.MustParsePrefix("10.7.0.0/24")
	want := []bypassPort{
		{Kind: bypassKindVeth, Dev: a.HostIf, Net: "mnvx42", Out: "mnvx42", Subnet: subnet, Addr: a.Addr.Addr(), MAC: a.MAC, GatewayMAC: brMAC},
		{Kind: bypassKindVeth, Dev: b.HostIf, Net: "mnvx42", Out: "mnvx42", Subnet: subnet, Addr: b.Addr.Addr(), MAC: b.MAC, GatewayMAC: brMAC},
		{Kind: bypassKindVethWG, Dev: w.HostIf, Net: "mnbr7", Out: WireGuardDevice, Subnet: subnet7, Addr: w.Addr.Addr(), MAC: w.MAC,
			GatewayMAC: brMAC, Gateway: netip.MustParseAddr("10.7.0.1")},
		{Kind: bypassKindVXLAN, Dev: "mnvx42", Net: "mnvx42", Subnet: subnet},
		{Kind: bypassKindWireGuard, Dev: WireGuardDevice},
	}
	if fmt.Sprint(plan.Ports) != fmt.Sprint(want) {
		t.Errorf("ports\n%v\nwant\n%v", plan.Ports, want)
	}
	wantDests := []bypassDest{{Net: "mnbr7", MAC: w.MAC, Dev: w.HostIf}, {Net: "mnvx42", MAC: a.MAC, Dev: a.HostIf}, {Net: "mnvx42", MAC: b.MAC, Dev: b.HostIf}}
	if fmt.Sprint(plan.Dests) != fmt.Sprint(wantDests) {
		t.Errorf("destinations\n%v\nwant\n%v", plan.Dests, wantDests)
	}
	wantAddrs := []bypassAddr{{Addr: w.Addr.Addr(), Dev: w.HostIf, MAC: w.MAC, GatewayMAC: brMAC, Subnet: subnet7}}
	if fmt.Sprint(plan.Addrs) != fmt.Sprint(wantAddrs) {
		t.Errorf("addresses\n%v\nwant\n%v", plan.Addrs, wantAddrs)
	}
	// No WireGuard device: the wireguard network is left alone.
	if plan := planBypass(nets, macOf, ""); len(plan.Ports) != 3 || len(plan.Dests) != 2 || len(plan.Addrs) != 0 {
		t.Errorf("without a WireGuard device: %v", plan)
	}
}

// A container kept on the bridge (its VIP table is not in place) is no
// port, and a destination marked so: frames to it are left to the bridge
// rather than sent to the vxlan device, which does not know its MAC. With
// every container kept there, the network has nothing to bypass.
func TestPlanBypassBridged(t *testing.T) {
	a := testLocalEndpoint("b1b1b1b1b1b1b1", "02:42:00:00:00:01", "10.42.0.11/24")
	c := testLocalEndpoint("b3b3b3b3b3b3b3", "02:42:00:00:00:03", "10.42.0.13/24")
	c.Bridged = true
	brMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	macOf := func(Network) net.HardwareAddr { return brMAC }
	plan := planBypass([]Network{testNet42([]LocalEndpoint{c, a})}, macOf, "")
	for _, p := range plan.Ports {
		if p.Dev == c.HostIf {
			t.Errorf("the bridged container's veth is a port: %v", p)
		}
	}
	if ports, dests := plan.Ports, plan.Dests; len(ports) != 2 || len(dests) != 2 || dests[1].Dev != c.HostIf || !dests[1].Bridged || dests[0].Bridged {
		t.Errorf("ports %v, destinations %v: want a's veth and the vxlan device; a, and c bridged", ports, dests)
	}
	// On a wireguard network the bridged container's address says so
	// too: WireGuard's packets for it are left to the host's routing.
	wgNet := Network{VNI: 7, Kind: KindWireGuard, Subnet: netip.MustParsePrefix("10.42.0.0/24"), Gateway: netip.MustParseAddr("10.42.0.1"),
		Locals: []LocalEndpoint{c, a}}
	plan = planBypass([]Network{wgNet}, macOf, WireGuardDevice)
	if len(plan.Ports) != 2 || len(plan.Addrs) != 2 || plan.Addrs[0].Bridged || !plan.Addrs[1].Bridged {
		t.Errorf("wireguard network: ports %v, addresses %v: want a's veth and the WireGuard device; a, and c bridged", plan.Ports, plan.Addrs)
	}
	a.Bridged = true
	for _, n := range []Network{testNet42([]LocalEndpoint{a, c}), wgNet} {
		n.Locals = []LocalEndpoint{a, c}
		if plan := planBypass([]Network{n}, macOf, WireGuardDevice); len(plan.Ports)+len(plan.Dests)+len(plan.Addrs) != 0 {
			t.Errorf("with every container bridged: %v", plan)
		}
	}
}

// Map entries are laid out as the program reads them: addresses, masks
// and MACs as the frame carries them.
func TestBypassEncode(t *testing.T) {
	idx := map[string]int{"mnh1": 7, "mnvx42": 9, "mnbr7": 5, "mnwg0": 3}
	ifindex := func(n string) (int, error) {
		if i, ok := idx[n]; ok {
			return i, nil
		}
		return 0, fmt.Errorf("no device %s", n)
	}
	mac, gw := net.HardwareAddr{2, 0x42, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 0x99}
	k, v, err := bypassPort{Kind: bypassKindVeth, Dev: "mnh1", Net: "mnvx42", Out: "mnvx42", Subnet: netip.MustParsePrefix("10.42.0.0/24"),
		Addr: netip.MustParseAddr("10.42.0.11"), MAC: mac, GatewayMAC: gw}.encode(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	wantV := []byte{1, 0, 0, 0, 9, 0, 0, 0, 10, 42, 0, 0, 255, 255, 255, 0, 10, 42, 0, 11, 2, 0x42, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0x99, 0, 0,
		9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if binary.NativeEndian.Uint32(k) != 7 || !slices.Equal(v, wantV) {
		t.Errorf("veth port: key %v value %v, want 7 and %v", k, v, wantV)
	}
	_, v, err = bypassPort{Kind: bypassKindVethWG, Dev: "mnh1", Net: "mnbr7", Out: "mnwg0", Subnet: netip.MustParsePrefix("10.7.0.0/16"),
		Addr: netip.MustParseAddr("10.7.0.11"), MAC: mac, GatewayMAC: gw, Gateway: netip.MustParseAddr("10.7.0.1")}.encode(ifindex)
	wantV = []byte{3, 0, 0, 0, 5, 0, 0, 0, 10, 7, 0, 0, 255, 255, 0, 0, 10, 7, 0, 11, 2, 0x42, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0x99, 0, 0,
		3, 0, 0, 0, 10, 7, 0, 1, 0, 0, 0, 0}
	if err != nil || !slices.Equal(v, wantV) {
		t.Errorf("wireguard veth port: value %v (%v), want %v", v, err, wantV)
	}
	k, v, err = bypassDest{Net: "mnvx42", MAC: mac, Dev: "mnh1", Bridged: true}.encode(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k, []byte{9, 0, 0, 0, 2, 0x42, 0, 0, 0, 1, 0, 0}) || binary.NativeEndian.Uint32(v) != 7 || binary.NativeEndian.Uint32(v[4:]) != destBridged {
		t.Errorf("destination: key %v value %v", k, v)
	}
	k, v, err = bypassAddr{Addr: netip.MustParseAddr("10.7.0.11"), Dev: "mnh1", MAC: mac, GatewayMAC: gw, Subnet: netip.MustParsePrefix("10.7.0.0/16")}.encode(ifindex)
	wantV = []byte{7, 0, 0, 0, 0, 0, 0, 0, 2, 0x42, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0x99, 0, 0, 10, 7, 0, 0, 255, 255, 0, 0}
	if err != nil || !slices.Equal(k, []byte{10, 7, 0, 11}) || !slices.Equal(v, wantV) {
		t.Errorf("address: key %v value %v (%v), want %v", k, v, err, wantV)
	}
	if _, _, err := (bypassDest{Net: "mnvx42", MAC: mac, Dev: "gone"}).encode(ifindex); err == nil {
		t.Error("a destination on a missing device encoded")
	}
}

// The program's decisions, frame by frame, through the kernel's test run
// (BPF_PROG_TEST_RUN: the program runs on a frame as if it arrived on a
// device, and its verdict comes back without the redirect being done).
// The device is lo; its ports entry says which kind of port it plays.
func TestBypassProgram(t *testing.T) {
	requireRoot(t)
	p, err := loadBypassProgram()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	const lo, vx, vethB = 1, 9, 12
	subnet := netip.MustParsePrefix("10.42.0.0/24")
	macA, macB := net.HardwareAddr{2, 0x42, 0, 0, 0, 0x21}, net.HardwareAddr{2, 0x42, 0, 0, 0, 0x22}
	macC, macGw := net.HardwareAddr{2, 0x42, 0, 0, 0, 0x23}, net.HardwareAddr{2, 0, 0, 0, 0, 0x99}
	macBridged := net.HardwareAddr{2, 0x42, 0, 0, 0, 0x24}
	ifindex := func(n string) (int, error) {
		return map[string]int{"lo": lo, "mnvx42": vx, "vethB": vethB, "vethBridged": 13, "mnbr7": 5, "mnwg0": 3}[n], nil
	}
	asVeth := bypassPort{Kind: bypassKindVeth, Dev: "lo", Net: "mnvx42", Out: "mnvx42", Subnet: subnet, Addr: netip.MustParseAddr("10.42.0.21"), MAC: macA, GatewayMAC: macGw}
	asVXLAN := bypassPort{Kind: bypassKindVXLAN, Dev: "lo", Net: "lo", Subnet: subnet}
	asVethWG := bypassPort{Kind: bypassKindVethWG, Dev: "lo", Net: "mnbr7", Out: "mnwg0", Subnet: subnet, Addr: netip.MustParseAddr("10.42.0.21"),
		MAC: macA, GatewayMAC: macGw, Gateway: netip.MustParseAddr("10.42.0.1")}
	asWireGuard := bypassPort{Kind: bypassKindWireGuard, Dev: "lo"}
	want := map[*ebpf.Map]map[string]string{p.ports: {}, p.dests: {}, p.addrs: {}}
	for _, d := range []bypassDest{{Net: "mnvx42", MAC: macB, Dev: "vethB"}, {Net: "mnvx42", MAC: macBridged, Dev: "vethBridged", Bridged: true},
		{Net: "lo", MAC: macB, Dev: "vethB"}, {Net: "lo", MAC: macBridged, Dev: "vethBridged", Bridged: true}, {Net: "mnbr7", MAC: macB, Dev: "vethB"}} {
		k, v, _ := d.encode(ifindex)
		want[p.dests][string(k)] = string(v)
	}
	for _, a := range []bypassAddr{{Addr: netip.MustParseAddr("10.42.0.22"), Dev: "vethB", MAC: macB, GatewayMAC: macGw, Subnet: subnet},
		{Addr: netip.MustParseAddr("10.42.0.24"), Dev: "vethBridged", MAC: macBridged, GatewayMAC: macGw, Subnet: subnet, Bridged: true}} {
		k, v, _ := a.encode(ifindex)
		want[p.addrs][string(k)] = string(v)
	}
	port := func(pt bypassPort) {
		k, v, _ := pt.encode(ifindex)
		want[p.ports] = map[string]string{string(k): string(v)}
		if _, err := p.write(want); err != nil {
			t.Fatal(err)
		}
	}
	packet := func(from, to string, ttl byte) []byte {
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, ttl, 17
		s, d := netip.MustParseAddr(from).As4(), netip.MustParseAddr(to).As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^ipSum(ip))
		return append(ip, make([]byte, 32)...)
	}
	frameTTL := func(dst, src net.HardwareAddr, ethType uint16, from, to string, ttl byte) []byte {
		f := append(append(slices.Clone(dst), src...), byte(ethType>>8), byte(ethType))
		return append(f, packet(from, to, ttl)...)
	}
	frame := func(dst, src net.HardwareAddr, ethType uint16, from, to string) []byte {
		return frameTTL(dst, src, ethType, from, to, 64)
	}
	const ok, redirect = 0, 7 // TC_ACT_OK, TC_ACT_REDIRECT
	run := func(why string, f []byte, want uint32) []byte {
		t.Helper()
		ctx := make([]byte, 44)
		binary.NativeEndian.PutUint32(ctx[40:], lo) // __sk_buff.ifindex
		out := make([]byte, len(f)+64)
		opts := &ebpf.RunOptions{Data: f, DataOut: out, Context: ctx}
		got, err := p.prog.Run(opts)
		if err != nil {
			t.Fatalf("%s: test run: %v", why, err)
		}
		if got != want {
			t.Errorf("%s: verdict %d, want %d", why, got, want)
		}
		return opts.DataOut
	}
	// routed checks a frame's IPv4 header after the program routed it: the
	// TTL one less, the checksum still right.
	routed := func(why string, ip []byte) {
		t.Helper()
		if len(ip) < 20 || ip[8] != 63 || ipSum(ip[:20]) != 0xffff {
			t.Errorf("%s: IPv4 header after routing %x: want TTL 63 and a valid checksum", why, ip[:min(20, len(ip))])
		}
	}
	port(asVeth)
	run("a to c on another host", frame(macC, macA, 0x0800, "10.42.0.21", "10.42.0.23"), redirect)
	run("a to b on this host", frame(macB, macA, 0x0800, "10.42.0.21", "10.42.0.22"), redirect)
	run("a to a container kept on the bridge", frame(macBridged, macA, 0x0800, "10.42.0.21", "10.42.0.24"), ok)
	run("a to the gateway", frame(macGw, macA, 0x0800, "10.42.0.21", "10.42.0.1"), ok)
	run("a to another host's container through the gateway's MAC", frame(macGw, macA, 0x0800, "10.42.0.21", "10.42.0.23"), ok)
	run("a routed off the subnet", frame(macGw, macA, 0x0800, "10.42.0.21", "192.0.2.1"), ok)
	run("a to a MAC of the subnet, off-subnet address", frame(macC, macA, 0x0800, "10.42.0.21", "192.0.2.1"), ok)
	run("a forging its source address", frame(macC, macA, 0x0800, "10.42.0.99", "10.42.0.23"), ok)
	run("a forging its source MAC", frame(macC, macB, 0x0800, "10.42.0.21", "10.42.0.23"), ok)
	run("a broadcasting", frame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macA, 0x0800, "10.42.0.21", "10.42.0.255"), ok)
	run("a's ARP", frame(macC, macA, 0x0806, "10.42.0.21", "10.42.0.23"), ok)
	// (Shorter than its IPv4 header the test run refuses an IPv4 frame.)
	run("a truncated frame", frame(macC, macA, 0x0806, "10.42.0.21", "10.42.0.23")[:30], ok)
	port(asVXLAN)
	run("from the overlay to b", frame(macB, macC, 0x0800, "10.42.0.23", "10.42.0.22"), redirect)
	run("from the overlay to a container kept on the bridge", frame(macBridged, macC, 0x0800, "10.42.0.23", "10.42.0.24"), ok)
	run("from the overlay to a MAC not here", frame(macA, macC, 0x0800, "10.42.0.23", "10.42.0.21"), ok)
	run("from the overlay, a host's own address", frame(macB, macC, 0x0800, "198.18.0.2", "10.42.0.22"), ok)

	// A wireguard network: what is for another host's container is sent
	// to the gateway's MAC (the bridge answers ARP for it) and routed.
	port(asVethWG)
	out := run("wireguard: a to c on another host", frame(macGw, macA, 0x0800, "10.42.0.21", "10.42.0.23"), redirect)
	routed("a to c", out[14:])
	run("wireguard: a to b on this host, by its MAC", frame(macB, macA, 0x0800, "10.42.0.21", "10.42.0.22"), redirect)
	run("wireguard: a to b on this host, through the gateway's MAC", frame(macGw, macA, 0x0800, "10.42.0.21", "10.42.0.22"), ok)
	run("wireguard: a to the gateway", frame(macGw, macA, 0x0800, "10.42.0.21", "10.42.0.1"), ok)
	run("wireguard: a routed off the subnet", frame(macGw, macA, 0x0800, "10.42.0.21", "192.0.2.1"), ok)
	run("wireguard: a's last hop", frameTTL(macGw, macA, 0x0800, "10.42.0.21", "10.42.0.23", 1), ok)
	run("wireguard: a to a MAC not here", frame(macC, macA, 0x0800, "10.42.0.21", "10.42.0.23"), ok)
	run("wireguard: a forging its source address", frame(macGw, macA, 0x0800, "10.42.0.99", "10.42.0.23"), ok)
	port(asWireGuard)
	out = run("from WireGuard to b", packet("10.42.0.23", "10.42.0.22", 64), redirect)
	if wantEth := append(append(slices.Clone(macB), macGw...), 8, 0); len(out) < 34 || !slices.Equal(out[:14], wantEth) {
		t.Errorf("from WireGuard to b: frame %x, want it to start %x", out, wantEth)
	} else {
		routed("from WireGuard to b", out[14:])
	}
	run("from WireGuard to a container kept on the bridge", packet("10.42.0.23", "10.42.0.24", 64), ok)
	run("from WireGuard to an address not here", packet("10.42.0.23", "10.42.0.25", 64), ok)
	run("from WireGuard, another network's source", packet("10.9.0.23", "10.42.0.22", 64), ok)
	run("from WireGuard, a last hop", packet("10.42.0.23", "10.42.0.22", 1), ok)

	want[p.ports] = map[string]string{}
	if _, err := p.write(want); err != nil {
		t.Fatal(err)
	}
	run("a device that is no port", frame(macB, macC, 0x0800, "10.42.0.23", "10.42.0.22"), ok)
	toHosts, toC, err := p.counts()
	if err != nil || toHosts != 2 || toC != 4 {
		t.Errorf("counters: %d to other hosts, %d to containers (%v); want 2 and 4", toHosts, toC, err)
	}
}

// ipSum is the ones' complement sum of b's 16-bit words: 0xffff over an
// IPv4 header whose checksum is right.
func ipSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
