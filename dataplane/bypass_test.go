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

// Per vxlan network with local containers: each container's veth and the
// vxlan device are ports, every container a destination. wireguard and
// IPv6-only networks and endpoints without a MAC get none; the order of
// the locals does not matter (the daemon builds them from maps).
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
	ports, dests := planBypass(nets, func(Network) net.HardwareAddr { return brMAC })
	nets[0].Locals = []LocalEndpoint{noMAC, b, a}
	ports2, dests2 := planBypass(nets, func(Network) net.HardwareAddr { return brMAC })
	if fmt.Sprint(ports) != fmt.Sprint(ports2) || fmt.Sprint(dests) != fmt.Sprint(dests2) {
		t.Errorf("another order of the locals gives another plan:\n%v %v\n%v %v", ports, dests, ports2, dests2)
	}
	subnet := netip.MustParsePrefix("10.42.0.0/24")
	want := []bypassPort{
		{Dev: a.HostIf, VXLAN: "mnvx42", Subnet: subnet, Addr: a.Addr.Addr(), MAC: a.MAC, GatewayMAC: brMAC},
		{Dev: b.HostIf, VXLAN: "mnvx42", Subnet: subnet, Addr: b.Addr.Addr(), MAC: b.MAC, GatewayMAC: brMAC},
		{Dev: "mnvx42", VXLAN: "mnvx42", Subnet: subnet},
	}
	if fmt.Sprint(ports) != fmt.Sprint(want) {
		t.Errorf("ports\n%v\nwant\n%v", ports, want)
	}
	wantDests := []bypassDest{{VXLAN: "mnvx42", MAC: a.MAC, Dev: a.HostIf}, {VXLAN: "mnvx42", MAC: b.MAC, Dev: b.HostIf}}
	if fmt.Sprint(dests) != fmt.Sprint(wantDests) {
		t.Errorf("destinations\n%v\nwant\n%v", dests, wantDests)
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
	ports, dests := planBypass([]Network{testNet42([]LocalEndpoint{c, a})}, func(Network) net.HardwareAddr { return brMAC })
	for _, p := range ports {
		if p.Dev == c.HostIf {
			t.Errorf("the bridged container's veth is a port: %v", p)
		}
	}
	if len(ports) != 2 || len(dests) != 2 || dests[1].Dev != c.HostIf || !dests[1].Bridged || dests[0].Bridged {
		t.Errorf("ports %v, destinations %v: want a's veth and the vxlan device; a, and c bridged", ports, dests)
	}
	a.Bridged = true
	if ports, dests := planBypass([]Network{testNet42([]LocalEndpoint{a, c})}, func(Network) net.HardwareAddr { return brMAC }); len(ports)+len(dests) != 0 {
		t.Errorf("with every container bridged: %v %v", ports, dests)
	}
}

// Map entries are laid out as the program reads them: addresses, masks
// and MACs as the frame carries them.
func TestBypassEncode(t *testing.T) {
	idx := map[string]int{"mnh1": 7, "mnvx42": 9}
	ifindex := func(n string) (int, error) {
		if i, ok := idx[n]; ok {
			return i, nil
		}
		return 0, fmt.Errorf("no device %s", n)
	}
	mac, gw := net.HardwareAddr{2, 0x42, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 0x99}
	k, v, err := bypassPort{Dev: "mnh1", VXLAN: "mnvx42", Subnet: netip.MustParsePrefix("10.42.0.0/24"),
		Addr: netip.MustParseAddr("10.42.0.11"), MAC: mac, GatewayMAC: gw}.encode(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	wantV := []byte{1, 0, 0, 0, 9, 0, 0, 0, 10, 42, 0, 0, 255, 255, 255, 0, 10, 42, 0, 11, 2, 0x42, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0x99, 0, 0, 0, 0, 0, 0}
	if binary.NativeEndian.Uint32(k) != 7 || !slices.Equal(v, wantV) {
		t.Errorf("veth port: key %v value %v, want 7 and %v", k, v, wantV)
	}
	k, v, err = bypassDest{VXLAN: "mnvx42", MAC: mac, Dev: "mnh1", Bridged: true}.encode(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k, []byte{9, 0, 0, 0, 2, 0x42, 0, 0, 0, 1, 0, 0}) || binary.NativeEndian.Uint32(v) != 7 || binary.NativeEndian.Uint32(v[4:]) != destBridged {
		t.Errorf("destination: key %v value %v", k, v)
	}
	if _, _, err := (bypassDest{VXLAN: "mnvx42", MAC: mac, Dev: "gone"}).encode(ifindex); err == nil {
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
		return map[string]int{"lo": lo, "mnvx42": vx, "vethB": vethB, "vethBridged": 13}[n], nil
	}
	asVeth := bypassPort{Dev: "lo", VXLAN: "mnvx42", Subnet: subnet, Addr: netip.MustParseAddr("10.42.0.21"), MAC: macA, GatewayMAC: macGw}
	asVXLAN := bypassPort{Dev: "lo", VXLAN: "lo", Subnet: subnet}
	dests := map[string]string{}
	for _, d := range []bypassDest{{VXLAN: "mnvx42", MAC: macB, Dev: "vethB"}, {VXLAN: "mnvx42", MAC: macBridged, Dev: "vethBridged", Bridged: true},
		{VXLAN: "lo", MAC: macB, Dev: "vethB"}, {VXLAN: "lo", MAC: macBridged, Dev: "vethBridged", Bridged: true}} {
		k, v, _ := d.encode(ifindex)
		dests[string(k)] = string(v)
	}
	port := func(pt bypassPort) {
		k, v, _ := pt.encode(ifindex)
		if _, err := p.write(map[string]string{string(k): string(v)}, dests); err != nil {
			t.Fatal(err)
		}
	}
	frame := func(dst, src net.HardwareAddr, ethType uint16, from, to string) []byte {
		f := append(append(slices.Clone(dst), src...), byte(ethType>>8), byte(ethType))
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		s, d := netip.MustParseAddr(from).As4(), netip.MustParseAddr(to).As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		return append(append(f, ip...), make([]byte, 32)...)
	}
	const ok, redirect = 0, 7 // TC_ACT_OK, TC_ACT_REDIRECT
	run := func(why string, f []byte, want uint32) {
		t.Helper()
		ctx := make([]byte, 44)
		binary.NativeEndian.PutUint32(ctx[40:], lo) // __sk_buff.ifindex
		got, err := p.prog.Run(&ebpf.RunOptions{Data: f, Context: ctx})
		if err != nil {
			t.Fatalf("%s: test run: %v", why, err)
		}
		if got != want {
			t.Errorf("%s: verdict %d, want %d", why, got, want)
		}
	}
	port(asVeth)
	run("a to c on another host", frame(macC, macA, 0x0800, "10.42.0.21", "10.42.0.23"), redirect)
	run("a to b on this host", frame(macB, macA, 0x0800, "10.42.0.21", "10.42.0.22"), redirect)
	run("a to a container kept on the bridge", frame(macBridged, macA, 0x0800, "10.42.0.21", "10.42.0.24"), ok)
	run("a to the gateway", frame(macGw, macA, 0x0800, "10.42.0.21", "10.42.0.1"), ok)
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
	if _, err := p.write(map[string]string{}, dests); err != nil {
		t.Fatal(err)
	}
	run("a device that is no port", frame(macB, macC, 0x0800, "10.42.0.23", "10.42.0.22"), ok)
	toVX, toC, err := p.counts()
	if err != nil || toVX != 1 || toC != 2 {
		t.Errorf("counters: %d to the vxlan device, %d to containers (%v); want 1 and 2", toVX, toC, err)
	}
}
