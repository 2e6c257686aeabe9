package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestBridgeBypass: two Docker-like hosts (FORWARD policy DROP,
// br_netfilter on), containers a and b on host 1 and c on host 2, the
// bridge bypass on. Containers reach each other on one host and across,
// and the filters' own counters show the frames went past the bridge: with
// meshnet's FORWARD accepts deleted they still arrive. What needs the
// host's conntrack still crosses the bridge: the gateway, egress, a host
// reaching a remote container from its underlay address, a VIP balanced in
// the client's namespace. A re-apply writes nothing; turned off, the
// filters go and the bridged path carries everything again.
func TestBridgeBypass(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)
	eA, eB, eC := bypassEndpoints()
	st1, st2 := bypassStates([]LocalEndpoint{eA, eB}, []LocalEndpoint{eC})
	d1, d2 := newTestDataplaneWith(t, h1ns, Options{BridgeBypass: BypassOn}), newTestDataplaneWith(t, h2ns, Options{BridgeBypass: BypassOn})
	apply(t, d1, st1)
	apply(t, d2, st2)
	cA := moveIntoContainer(t, h1, eA, "10.42.0.1")
	cB := moveIntoContainer(t, h1, eB, "10.42.0.1")
	cC := moveIntoContainer(t, h2, eC, "10.42.0.1")
	apply(t, d1, st1)
	apply(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}
	srvB := serveIn(t, cB, "10.42.0.22:0")
	srvC := serveIn(t, cC, "10.42.0.23:0")
	srvH1 := serveIn(t, h1ns, "198.18.0.1:0")
	srvGw := serveIn(t, h1ns, "10.42.0.1:0")

	reach := func(t *testing.T) {
		t.Helper()
		expectReach(t, cA, srvC, "10.42.0.21") // across hosts
		expectReach(t, cC, srvB, "10.42.0.23")
		expectReach(t, cA, srvB, "10.42.0.21") // on one host
		expectPing(t, cB, "10.42.0.23")
	}
	reach(t)
	// The frames went past the bridge: the program counted them.
	for _, c := range []struct {
		d         *Kernel
		toVX, toC bool
		why       string
	}{{d1, true, true, "host 1: a to c, to the vxlan device; a to b and the overlay to a and b, into the containers"},
		{d2, true, true, "host 2: c to a and b, to the vxlan device; the overlay to c, into c"}} {
		toVX, toC := bypassCounts(t, c.d)
		if (toVX > 0) != c.toVX || (toC > 0) != c.toC {
			t.Errorf("%s: %d frames to the vxlan device, %d into containers", c.why, toVX, toC)
		}
	}
	// What needs the host's conntrack or routing crosses the bridge.
	expectReach(t, cA, srvGw, "10.42.0.21")                                                    // the gateway
	expectReach(t, cC, srvH1, "198.18.0.2")                                                    // egress, masqueraded
	if got, err := dialFromAddr(h1ns, "198.18.0.1", srvC); err != nil || got != "198.18.0.1" { // host 1 to a container on host 2
		t.Errorf("host 1 (from 198.18.0.1) to %s: %q, %v", srvC, got, err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Without meshnet's FORWARD accepts the bridged path is dropped
	// (TestTwoHosts); the bypassed one never meets FORWARD.
	deleteForwardAccepts(t, h1ns, h2ns)
	reach(t)
	expectBlocked(t, cC, srvH1) // egress is routed: FORWARD's drop applies
	apply(t, d1, st1)
	apply(t, d2, st2)

	// A VIP balanced in the client's own namespace: the replica's reply,
	// bypassed on both hosts, is un-NATed by the client's conntrack.
	vip := VIP{Addr: netip.MustParseAddr("10.42.0.200"), Service: "api", Backends: []netip.Addr{eC.Addr.Addr()}}
	conn, err := nftables.New(nftables.WithNetNSFd(int(cA)), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseLasting()
	if err := WriteClientVIPs(conn, []VIP{vip}); err != nil {
		t.Fatalf("WriteClientVIPs: %v", err)
	}
	serveWho(t, cC, "c")
	target := "10.42.0.200:8080"
	waitVIP(t, cA, target)
	if who, src, err := askWho(cA, target); err != nil || who != "c" || src != "10.42.0.21" {
		t.Errorf("through the VIP: %s saw %s (%v), want c seeing 10.42.0.21", who, src, err)
	}

	// A VIP balanced on the host, for b, whose own table is not in place
	// (Bridged): its traffic crosses the bridge both ways, so host 1's
	// conntrack un-NATs the replica's reply; bypassed, that reply would
	// reach b unchanged, from c's own address.
	bridged, _ := bypassStates([]LocalEndpoint{eA, eB}, []LocalEndpoint{eC})
	bridged.Networks[0].Locals[1].Bridged = true
	bridged.VIPs, bridged.ServiceAddrs = []VIP{vip}, []netip.Addr{vip.Addr}
	apply(t, d1, bridged)
	for _, c := range []struct {
		dev  string
		want bool
	}{{eB.HostIf, false}, {eA.HostIf, true}, {"mnvx42", true}} {
		out := mustRunIn(t, h1ns, "tc", "filter", "show", "dev", c.dev, "ingress")
		if got := strings.Contains(out, "mn_bypass"); got != c.want {
			t.Errorf("b bridged: the program on %s: %v, want %v\n%s", c.dev, got, c.want, out)
		}
	}
	waitVIP(t, cB, target)
	if who, src, err := askWho(cB, target); err != nil || who != "c" || src != "10.42.0.22" {
		t.Errorf("b through the host's VIP table: %s saw %s (%v), want c seeing 10.42.0.22", who, src, err)
	}
	expectReach(t, cA, srvB, "10.42.0.21") // a to b: the bridge now
	expectReach(t, cB, srvC, "10.42.0.22") // b to c: the bridge, then the overlay
	expectReach(t, cA, srvC, "10.42.0.21") // a is still bypassed
	apply(t, d1, st1)

	// Auto: on while DOCKER-USER holds only Docker's return; an operator's
	// rule there wakes the watcher, and the next Apply takes every
	// container back to the bridge, where the rule applies; its removal
	// brings the bypass back.
	auto := newTestDataplaneWith(t, h1ns, Options{BridgeBypass: BypassAuto})
	// FORWARD as engine 20.10 fills it, written by iptables-nft itself:
	// Docker's, not the operator's.
	mustRunIn(t, h1ns, "iptables", "-N", "DOCKER")
	for _, r := range [][]string{{"-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-o", "br-1a2b3c", "-j", "DOCKER"}, {"-i", "br-1a2b3c", "!", "-o", "br-1a2b3c", "-j", "ACCEPT"}, {"-i", "br-+", "-o", "docker0", "-j", "ACCEPT"}} {
		mustRunIn(t, h1ns, "iptables", append([]string{"-A", "FORWARD"}, r...)...)
	}
	apply(t, auto, st1)
	hasFilters := func() bool {
		return strings.Contains(mustRunIn(t, h1ns, "tc", "filter", "show", "dev", "mnvx42", "ingress"), "mn_bypass")
	}
	if st := auto.BypassStatus(); !st.On || !hasFilters() {
		t.Fatalf("auto with an empty DOCKER-USER: %+v, filters %v", st, hasFilters())
	}
	woken := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() {
		watched <- auto.WatchHostFilters(ctx, func() {
			select {
			case woken <- struct{}{}:
			default:
			}
		})
	}()
	defer func() {
		cancel()
		if err := <-watched; err != nil {
			t.Errorf("WatchHostFilters: %v", err)
		}
	}()
	wake := func(why string) {
		t.Helper()
		select {
		case <-woken:
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: the watcher did not call within 3s", why)
		}
	}
	time.Sleep(200 * time.Millisecond) // the watcher subscribes
	drop := []string{"DOCKER-USER", "-d", "10.42.0.22/32", "-j", "DROP"}
	mustRunIn(t, h1ns, "iptables", append([]string{"-I"}, drop...)...)
	wake("an operator's DOCKER-USER drop")
	apply(t, auto, st1)
	if st := auto.BypassStatus(); st.On || len(st.Why) != 1 || !strings.Contains(st.Why[0], "DOCKER-USER holds 1 rule") || hasFilters() {
		t.Errorf("auto with an operator's rule: %+v, filters %v", st, hasFilters())
	}
	expectBlocked(t, cC, srvB) // the drop applies to the overlay's traffic
	expectBlocked(t, cA, srvB) // and between containers of one host
	mustRunIn(t, h1ns, "iptables", append([]string{"-D"}, drop...)...)
	wake("the rule's removal")
	apply(t, auto, st1)
	if st := auto.BypassStatus(); !st.On || !hasFilters() {
		t.Errorf("auto once the rule is gone: %+v, filters %v", st, hasFilters())
	}
	reach(t)
	// A FORWARD rule that is not Docker's (ufw jumps to its chains there).
	mustRunIn(t, h1ns, "iptables", "-N", "ufw-before-forward")
	mustRunIn(t, h1ns, "iptables", "-A", "FORWARD", "-j", "ufw-before-forward")
	wake("a jump to ufw's chain in FORWARD")
	apply(t, auto, st1)
	if st := auto.BypassStatus(); st.On || len(st.Why) != 1 || !strings.Contains(st.Why[0], "FORWARD holds 1 rule") {
		t.Errorf("auto with ufw's jump in FORWARD: %+v", st)
	}
	mustRunIn(t, h1ns, "iptables", "-D", "FORWARD", "-j", "ufw-before-forward")
	wake("the jump's removal")
	apply(t, auto, st1)
	if st := auto.BypassStatus(); !st.On {
		t.Errorf("auto once ufw's jump is gone: %+v", st)
	}

	// a bridged, then bypassed again: a re-apply finds the program and
	// its maps as planned, and every container still reaches the others.
	aBridged, _ := bypassStates([]LocalEndpoint{eA, eB}, []LocalEndpoint{eC})
	aBridged.Networks[0].Locals[0].Bridged = true
	for _, st := range []State{aBridged, st1} {
		apply(t, d1, st)
		apply(t, d1, st)
		if len(d1.changes) != 0 {
			t.Errorf("re-apply changed %q:\n%s", d1.changes, mustRunIn(t, h1ns, "tc", "filter", "show", "dev", "mnvx42", "ingress"))
		}
		reach(t)
	}

	// Off: the filters go, the bridge carries everything again.
	for _, ns := range []netns.NsHandle{h1ns, h2ns} {
		d := newTestDataplaneWith(t, ns, Options{})
		apply(t, d, map[netns.NsHandle]State{h1ns: st1, h2ns: st2}[ns])
		for _, dev := range []string{"mnvx42", eA.HostIf, eB.HostIf, eC.HostIf} {
			if out, _ := runIn(ns, "tc", "filter", "show", "dev", dev, "ingress"); strings.Contains(out, "filter") {
				t.Errorf("bypass off: %s keeps filters:\n%s", dev, out)
			}
		}
	}
	vx0, c0 := bypassCounts(t, d1)
	reach(t)
	if vx1, c1 := bypassCounts(t, d1); vx1 != vx0 || c1 != c0 {
		t.Errorf("bypass off: %d frames redirected", vx1-vx0+c1-c0)
	}

	// An older meshnetd's u32 filters (its bypass) on a veth give way to
	// the program at the next run's first Apply.
	mustRunIn(t, h1ns, "tc", "qdisc", "replace", "dev", eA.HostIf, "clsact")
	for _, prio := range []string{"1", "10"} {
		mustRunIn(t, h1ns, "tc", "filter", "add", "dev", eA.HostIf, "ingress", "protocol", "ip", "prio", prio, "u32", "match", "u32", "0", "0")
	}
	apply(t, newTestDataplaneWith(t, h1ns, Options{BridgeBypass: BypassOn}), st1)
	if out := mustRunIn(t, h1ns, "tc", "filter", "show", "dev", eA.HostIf, "ingress"); strings.Contains(out, "u32") || !strings.Contains(out, "mn_bypass") {
		t.Errorf("after an upgrade from u32 filters, %s holds:\n%s", eA.HostIf, out)
	}
	reach(t)
}

// bypassEndpoints are the bypass tests' containers a, b and c.
func bypassEndpoints() (a, b, c LocalEndpoint) {
	return testLocalEndpoint("p1p1p1p1p1p1p1", "02:42:00:00:00:21", "10.42.0.21/24"),
		testLocalEndpoint("p2p2p2p2p2p2p2", "02:42:00:00:00:22", "10.42.0.22/24"),
		testLocalEndpoint("p3p3p3p3p3p3p3", "02:42:00:00:00:23", "10.42.0.23/24")
}

// bypassStates are the states of host 1 (198.18.0.1), holding locals1,
// and host 2 (198.18.0.2), holding locals2, on network 42: each host's
// containers are the other's remotes.
func bypassStates(locals1, locals2 []LocalEndpoint) (st1, st2 State) {
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	remotes := func(ls []LocalEndpoint, vtep string) []RemoteEndpoint {
		var out []RemoteEndpoint
		for _, l := range ls {
			out = append(out, testRemoteEndpoint(l, vtep))
		}
		return out
	}
	st1 = State{Underlay: UnderlayInfo{Addr: members[0]}, VXLANPort: 4790, Members: members,
		Networks: []Network{testNet42(slices.Clone(locals1), remotes(locals2, "198.18.0.2")...)}}
	st2 = State{Underlay: UnderlayInfo{Addr: members[1]}, VXLANPort: 4790, Members: members,
		Networks: []Network{testNet42(slices.Clone(locals2), remotes(locals1, "198.18.0.1")...)}}
	return st1, st2
}

// bypassCounts reads d's program's counters: frames sent to vxlan
// devices, frames handed into containers.
func bypassCounts(t *testing.T, d *Kernel) (toVXLAN, toContainer uint64) {
	t.Helper()
	p := d.bypassProg.Load()
	if p == nil {
		t.Fatal("no bypass program loaded")
	}
	toVXLAN, toContainer, err := p.counts()
	if err != nil {
		t.Fatal(err)
	}
	return toVXLAN, toContainer
}

// TestBypassFlipLosesNothing: a container going from bypassed to bridged
// and back (its box's VIP table written or not, as around every restart of
// meshnetd) while another host pings it every 5 ms loses no ping. Writing
// the filters used to replace the clsact qdisc, which deactivates the
// device for a moment: a frame sent through it then was dropped (3 or 4 of
// 1,200 pings over these 40 changes).
func TestBypassFlipLosesNothing(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)
	eA, _, eC := bypassEndpoints()
	st1, st2 := bypassStates([]LocalEndpoint{eA}, []LocalEndpoint{eC})
	d1, d2 := newTestDataplaneWith(t, h1ns, Options{BridgeBypass: BypassOn}), newTestDataplaneWith(t, h2ns, Options{BridgeBypass: BypassOn})
	apply(t, d1, st1)
	apply(t, d2, st2)
	moveIntoContainer(t, h1, eA, "10.42.0.1")
	cC := moveIntoContainer(t, h2, eC, "10.42.0.1")
	apply(t, d1, st1)
	apply(t, d2, st2)
	expectPing(t, cC, "10.42.0.21")
	bridged, _ := bypassStates([]LocalEndpoint{eA}, []LocalEndpoint{eC})
	bridged.Networks[0].Locals[0].Bridged = true
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := runIn(cC, "ping", "-n", "-i", "0.005", "-c", "1200", "-W", "1", "10.42.0.21")
		done <- result{out, err}
	}()
	time.Sleep(300 * time.Millisecond)
	for range 20 {
		apply(t, d1, bridged)
		time.Sleep(100 * time.Millisecond)
		apply(t, d1, st1)
		time.Sleep(100 * time.Millisecond)
	}
	r := <-done
	summary := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(r.out)
	if summary == nil {
		t.Fatalf("ping from c: %v\n%s", r.err, r.out)
	}
	if summary[1] != summary[2] {
		t.Errorf("c -> a across 40 changes between bypassed and bridged: %s of %s answered; want all", summary[2], summary[1])
	}
}

// TestWireGuardBypass: the bypass on a wireguard network, two Docker-like
// hosts with the embedded WireGuard. Containers reach each other across
// hosts and on one host, the program counts their frames on both hosts,
// and with meshnet's FORWARD accepts deleted they still arrive: the
// bridge, the host's routing and FORWARD are left out. A hop through a
// host is still a routed hop (ping's TTL across is 62, as without the
// bypass). What the host must see still crosses it: the gateway, egress,
// another network, a container kept on the bridge; with every container
// kept there, the WireGuard device's filter goes.
func TestWireGuardBypass(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHost(t, h1ns)
	dockerHost(t, h2ns)
	e1 := testLocalEndpoint("g1g1g1g1g1g1g1", "02:42:00:00:08:05", "10.8.0.5/24")   // host 1
	e4 := testLocalEndpoint("g4g4g4g4g4g4g4", "02:42:00:00:08:06", "10.8.0.6/24")   // host 1
	e2 := testLocalEndpoint("g2g2g2g2g2g2g2", "02:42:00:00:08:20", "10.8.0.20/24")  // host 2
	e3 := testLocalEndpoint("g3g3g3g3g3g3g3", "02:43:00:00:00:13", "10.43.0.13/24") // vxlan network, host 1
	vxNet := Network{VNI: 43, Subnet: netip.MustParsePrefix("10.43.0.0/24"), Gateway: netip.MustParseAddr("10.43.0.1"),
		Locals: []LocalEndpoint{e3}}
	open := func(ns netns.NsHandle) *Kernel {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(testLogger(t), Options{NetNS: ns, WireGuard: WireGuardOptions{PrivateKey: k}, BridgeBypass: BypassOn})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	d1, d2 := open(h1ns), open(h2ns)
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	states := func(locals1 ...LocalEndpoint) (st1, st2 State) {
		st1 = State{Underlay: UnderlayInfo{Addr: members[0]}, Members: members,
			WireGuard: WireGuardState{Peers: []WireGuardPeer{testWGPeer(d2, "198.18.0.2:51820", "10.8.0.16/28")}},
			Networks:  []Network{wgNetwork(8, "10.8.0.0/24", "10.8.0.1", locals1...), vxNet}}
		st2 = State{Underlay: UnderlayInfo{Addr: members[1]}, Members: members,
			WireGuard: WireGuardState{Peers: []WireGuardPeer{testWGPeer(d1, "198.18.0.1:51820", "10.8.0.0/28")}},
			Networks:  []Network{wgNetwork(8, "10.8.0.0/24", "10.8.0.1", e2)}}
		return st1, st2
	}
	st1, st2 := states(e1, e4)
	applyWG(t, d1, st1)
	applyWG(t, d2, st2)
	c1 := moveIntoContainer(t, h1, e1, "10.8.0.1")
	c4 := moveIntoContainer(t, h1, e4, "10.8.0.1")
	c2 := moveIntoContainer(t, h2, e2, "10.8.0.1")
	c3 := moveIntoContainer(t, h1, e3, "10.43.0.1")
	applyWG(t, d1, st1)
	applyWG(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}
	onTunnel := func(ns netns.NsHandle) bool {
		return strings.Contains(mustRunIn(t, ns, "tc", "filter", "show", "dev", WireGuardDevice, "ingress"), "mn_bypass")
	}
	if !onTunnel(h1ns) || !onTunnel(h2ns) {
		t.Fatalf("no bypass program on %s: host 1 %v, host 2 %v", WireGuardDevice, onTunnel(h1ns), onTunnel(h2ns))
	}
	srvC1 := serveIn(t, c1, "10.8.0.5:0")
	srvC2 := serveIn(t, c2, "10.8.0.20:0")
	srvC4 := serveIn(t, c4, "10.8.0.6:0")
	srvGw := serveIn(t, h1ns, "10.8.0.1:0")
	srvH1 := serveIn(t, h1ns, "198.18.0.1:0")
	ttl := func(from netns.NsHandle, to string) string {
		out, err := runIn(from, "ping", "-c", "1", "-W", "2", to)
		if m := regexp.MustCompile(`ttl=(\d+)`).FindStringSubmatch(out); err == nil && m != nil {
			return m[1]
		}
		return fmt.Sprintf("no reply (%v): %s", err, out)
	}
	reach := func(t *testing.T) {
		t.Helper()
		expectReach(t, c1, srvC2, "10.8.0.5") // across hosts
		expectReach(t, c2, srvC1, "10.8.0.20")
		expectReach(t, c1, srvC4, "10.8.0.5") // on one host
		if got := ttl(c1, "10.8.0.20"); got != "62" {
			t.Errorf("ping across hosts: TTL %s, want 62 (two routed hops)", got)
		}
	}
	reach(t)
	for _, c := range []struct {
		d   *Kernel
		why string
	}{{d1, "host 1"}, {d2, "host 2"}} {
		if toHosts, toC := bypassCounts(t, c.d); toHosts == 0 || toC == 0 {
			t.Errorf("%s: %d frames to WireGuard, %d into containers; want both", c.why, toHosts, toC)
		}
	}
	expectReach(t, c1, srvGw, "10.8.0.5")   // the gateway
	expectReach(t, c2, srvH1, "198.18.0.2") // egress, masqueraded
	expectBlocked(t, c3, srvC1)             // another network reaches neither local...
	expectBlocked(t, c3, srvC2)             // ...nor remote wireguard addresses
	expectBlocked(t, c1, "10.43.0.13:1")    // nor the other way
	if t.Failed() {
		t.FailNow()
	}

	// Without meshnet's FORWARD accepts routed traffic is dropped; the
	// bypassed traffic never meets FORWARD.
	deleteForwardAccepts(t, h1ns, h2ns)
	reach(t)
	expectBlocked(t, c2, srvH1) // egress is routed: FORWARD's drop applies
	applyWG(t, d1, st1)
	applyWG(t, d2, st2)

	// c1 kept on the bridge: its traffic is routed by host 1 both ways,
	// c4's still bypassed.
	bridged := e1
	bridged.Bridged = true
	stB, _ := states(bridged, e4)
	applyWG(t, d1, stB)
	if out := mustRunIn(t, h1ns, "tc", "filter", "show", "dev", e1.HostIf, "ingress"); strings.Contains(out, "mn_bypass") || !onTunnel(h1ns) {
		t.Errorf("c1 bridged: its veth holds %q, the program on %s: %v", out, WireGuardDevice, onTunnel(h1ns))
	}
	toHosts0, toC0 := bypassCounts(t, d1)
	expectReach(t, c1, srvC2, "10.8.0.5")
	expectReach(t, c2, srvC1, "10.8.0.20")
	if toHosts, toC := bypassCounts(t, d1); toHosts != toHosts0 || toC != toC0 {
		t.Errorf("c1 bridged: host 1 bypassed %d frames to WireGuard and %d into containers", toHosts-toHosts0, toC-toC0)
	}
	expectReach(t, c4, srvC2, "10.8.0.6")
	// Every container kept there: nothing to bypass, the filter goes.
	bridged4 := e4
	bridged4.Bridged = true
	stB, _ = states(bridged, bridged4)
	applyWG(t, d1, stB)
	if onTunnel(h1ns) {
		t.Errorf("every container bridged: the program is still on %s", WireGuardDevice)
	}
	expectReach(t, c4, srvC2, "10.8.0.6")
	applyWG(t, d1, st1)
	reach(t)
}

// deleteForwardAccepts deletes meshnet's accept rules from FORWARD in each
// namespace (the next Apply writes them again): what still arrives then
// never met FORWARD, whose policy is DROP.
func deleteForwardAccepts(t *testing.T, namespaces ...netns.NsHandle) {
	t.Helper()
	for _, ns := range namespaces {
		for _, l := range strings.Split(mustRunIn(t, ns, "iptables", "-S", "FORWARD"), "\n") {
			if strings.Contains(l, "meshnet: accept") {
				mustRunIn(t, ns, "sh", "-c", "iptables "+strings.Replace(l, "-A ", "-D ", 1))
			}
		}
	}
}
