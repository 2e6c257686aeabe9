package dataplane

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestDualStack: a dual-stack network on two Docker-like hosts. Containers
// reach each other across hosts over IPv4 and IPv6 (the vxlan device answers
// neighbour solicitations from its static entries: nothing is flooded), reach
// their gateway's IPv6 address, leave the overlay over IPv6 masqueraded
// (NAT66), cannot send from an IPv6 address that is not theirs, and their
// router advertisements never leave their veth.
func TestDualStack(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)
	addUnderlay6(t, h1, h2)

	e1 := dualStackEndpoint("d1d1d1d1d1d1d1", "02:42:00:00:00:11", "10.42.0.11/24", "fd42::11/64")
	e2 := dualStackEndpoint("d2d2d2d2d2d2d2", "02:42:00:00:00:12", "10.42.0.12/24", "fd42::12/64")
	e3 := dualStackEndpoint("d3d3d3d3d3d3d3", "02:42:00:00:00:13", "10.42.0.13/24", "fd42::13/64")
	net42 := func(locals []LocalEndpoint, remotes ...RemoteEndpoint) Network {
		n := testNet42(locals, remotes...)
		n.Subnet6, n.Gateway6 = netip.MustParsePrefix("fd42::/64"), netip.MustParseAddr("fd42::1")
		return n
	}
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, VXLANPort: 4790, Members: members,
		Networks: []Network{net42([]LocalEndpoint{e1, e3}, dualStackRemotes(e2, "198.18.0.2")...)}}
	st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, VXLANPort: 4790, Members: members,
		Networks: []Network{net42([]LocalEndpoint{e2}, append(dualStackRemotes(e1, "198.18.0.1"), dualStackRemotes(e3, "198.18.0.1")...)...)}}
	d1, d2 := newTestDataplane(t, h1ns), newTestDataplane(t, h2ns)
	apply(t, d1, st1)
	apply(t, d2, st2)
	c1 := moveIntoDualStackContainer(t, h1, e1)
	c2 := moveIntoDualStackContainer(t, h2, e2)
	c3 := moveIntoDualStackContainer(t, h1, e3)
	apply(t, d1, st1)
	apply(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}
	for _, ns := range []netns.NsHandle{h1ns, h2ns} {
		if out := mustRunIn(t, ns, "ip", "-6", "addr", "show", "dev", "mnbr42", "scope", "global"); !strings.Contains(out, "fd42::1/64") || strings.Contains(out, "tentative") {
			t.Errorf("bridge's IPv6 gateway:\n%s", out)
		}
		if out := mustRunIn(t, ns, "sysctl", "-n", "net.ipv6.conf.mnbr42.accept_ra"); strings.TrimSpace(out) != "0" {
			t.Errorf("bridge accept_ra = %s", out)
		}
	}

	srvC2v6 := serveIn(t, c2, "[fd42::12]:0")
	srvC1v6 := serveIn(t, c1, "[fd42::11]:0")
	srvC2v4 := serveIn(t, c2, "10.42.0.12:0")
	srvGw := serveIn(t, h1ns, "[fd42::1]:0")
	srvH1 := serveIn(t, h1ns, "[fd00:99::1]:0")
	expectReach(t, c1, srvC2v6, "fd42::11") // across hosts, over IPv6
	expectReach(t, c2, srvC1v6, "fd42::12")
	expectReach(t, c1, srvC2v4, "10.42.0.11") // and IPv4 still
	expectReach(t, c1, srvGw, "fd42::11")     // the local gateway
	expectReach(t, c2, srvH1, "fd00:99::2")   // egress, masqueraded to host 2's address
	if out := mustRunIn(t, h2ns, "ip", "-6", "neigh", "show", "dev", "mnvx42"); !strings.Contains(out, "fd42::11 lladdr 02:42:00:00:00:11 PERMANENT") {
		t.Errorf("host 2's IPv6 neighbours on mnvx42:\n%s", out)
	}

	t.Run("spoofed IPv6 source", func(t *testing.T) {
		// c1 takes c3's address as a second one: what it sends from it
		// is dropped at its veth, on either host's side.
		l := mustLinkIn(t, c1, "eth0")
		a, _ := netlink.ParseAddr("fd42::13/128")
		a.Flags = unix.IFA_F_NODAD
		if err := nlHandle(t, c1).AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		defer nlHandle(t, c1).AddrDel(l, a)
		const rule = "from container: IPv6 source not link-local, unspecified or its own"
		before := l2Counters(t, h1ns)[rule]
		if _, err := dialFromSource(c1, "fd42::13", srvC2v6); err == nil {
			t.Error("a connection from a neighbour's IPv6 address got through")
		}
		if got := l2Counters(t, h1ns)[rule]; got <= before {
			t.Errorf("nothing dropped by %q (counter %d -> %d)", rule, before, got)
		}
		// Its own address still works.
		if got, err := dialFromSource(c1, "fd42::11", srvC2v6); err != nil || got != "fd42::11" {
			t.Errorf("from its own address: %q, %v", got, err)
		}
	})

	t.Run("router advertisement", func(t *testing.T) {
		before := l2Counters(t, h1ns)["from container: IPv6 router advertisement"]
		sendRouterAdvert(t, c1)
		if got := l2Counters(t, h1ns)["from container: IPv6 router advertisement"]; got <= before {
			t.Errorf("the router advertisement was not dropped at the veth (counter %d -> %d)", before, got)
		}
		if out := mustRunIn(t, c3, "ip", "-6", "route"); strings.Contains(out, "fd00:bad") {
			t.Errorf("the neighbour took the advertised prefix:\n%s", out)
		}
	})
}

func dualStackEndpoint(id, mac, addr, addr6 string) LocalEndpoint {
	l := testLocalEndpoint(id, mac, addr)
	l.Addr6 = netip.MustParsePrefix(addr6)
	return l
}

// dualStackRemotes is l as another host sees it: one remote per address.
func dualStackRemotes(l LocalEndpoint, vtep string) []RemoteEndpoint {
	r := testRemoteEndpoint(l, vtep)
	r6 := r
	r6.Addr = l.Addr6.Addr()
	return []RemoteEndpoint{r, r6}
}

// moveIntoDualStackContainer moves ep into a container on network 42,
// which accepts router advertisements as a container's namespace does by
// default.
func moveIntoDualStackContainer(t *testing.T, host *netlink.Handle, ep LocalEndpoint) netns.NsHandle {
	t.Helper()
	c := moveIntoDualStackContainerVia(t, host, ep, "10.42.0.1", "fd42::1")
	mustRunIn(t, c, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=2")
	return c
}

func mustLinkIn(t *testing.T, ns netns.NsHandle, name string) netlink.Link {
	t.Helper()
	l, err := nlHandle(t, ns).LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// dialFromSource connects from inside ns with the given source address.
func dialFromSource(ns netns.NsHandle, src, addr string) (string, error) {
	var got string
	err := inNS(ns, func() error {
		d := net.Dialer{Timeout: 1500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		b := make([]byte, 64)
		n, _ := c.Read(b)
		got = string(b[:n])
		return nil
	})
	return got, err
}

// sendRouterAdvert sends one router advertisement for fd00:bad::/64 to all
// nodes from inside ns, as a hostile container would: from a link-local
// address (receivers ignore any other), fe80::bad added for it, as the
// kernel's own may still be tentative.
func sendRouterAdvert(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	l := mustLinkIn(t, ns, "eth0")
	a, _ := netlink.ParseAddr("fe80::bad/64")
	a.Flags = unix.IFA_F_NODAD
	if err := nlHandle(t, ns).AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	err := inNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index); err != nil {
			return err
		}
		src := &unix.SockaddrInet6{Addr: netip.MustParseAddr("fe80::bad").As16(), ZoneId: uint32(ifi.Index)}
		if err := unix.Bind(fd, src); err != nil {
			return err
		}
		ra := []byte{
			134, 0, 0, 0, // type, code, checksum (the kernel fills it)
			64, 0, 0x07, 0x08, // hop limit, flags, router lifetime 1800 s
			0, 0, 0, 0, 0, 0, 0, 0, // reachable, retransmit
			3, 4, 64, 0xc0, // prefix information: /64, on-link and autonomous
			0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0, // valid, preferred lifetimes, reserved
			0xfd, 0, 0x0b, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		}
		sa := &unix.SockaddrInet6{Addr: [16]byte{0xff, 0x02, 15: 1}, ZoneId: uint32(ifi.Index)}
		return unix.Sendto(fd, ra, 0, sa)
	})
	if err != nil {
		t.Fatalf("send a router advertisement: %v", err)
	}
}

// TestDualStackWireGuard: a dual-stack wireguard network on two Docker-like
// hosts, its blocks of both families split between them. Containers reach
// each other across hosts over IPv4 and IPv6 with their own addresses: the
// bridge answers neighbour solicitations for the remote IPv6 address (a
// proxy entry, with proxy_ndp on) and the IPv6 block is routed through the
// WireGuard device, as the IPv4 one is.
func TestDualStackWireGuard(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHost(t, h1ns)
	dockerHost(t, h2ns)
	e1 := dualStackEndpoint("x1x1x1x1x1x1x1", "02:42:00:00:09:05", "10.9.0.5/24", "fd09::5/64")
	e2 := dualStackEndpoint("x2x2x2x2x2x2x2", "02:42:00:00:09:20", "10.9.0.20/24", "fd09::8000:0:0:20/64")
	wgNet := func(l LocalEndpoint, remotes ...RemoteEndpoint) Network {
		n := wgNetwork(9, "10.9.0.0/24", "10.9.0.1", l)
		n.Subnet6, n.Gateway6 = netip.MustParsePrefix("fd09::/64"), netip.MustParseAddr("fd09::1")
		n.Remotes = remotes
		return n
	}
	d1 := newTestWireGuard(t, h1ns, WireGuardOptions{})
	d2 := newTestWireGuard(t, h2ns, WireGuardOptions{})
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	peer := testWGPeer
	remote6 := func(l LocalEndpoint, vtep string) RemoteEndpoint {
		return RemoteEndpoint{Addr: l.Addr6.Addr(), MAC: l.MAC, VTEP: netip.MustParseAddr(vtep)}
	}
	st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, Members: members,
		WireGuard: WireGuardState{Peers: []WireGuardPeer{peer(d2, "198.18.0.2:51820", "10.9.0.16/28", "fd09:0:0:0:8000::/65")}},
		Networks:  []Network{wgNet(e1, remote6(e2, "198.18.0.2"))}}
	st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, Members: members,
		WireGuard: WireGuardState{Peers: []WireGuardPeer{peer(d1, "198.18.0.1:51820", "10.9.0.0/28", "fd09::/65")}},
		Networks:  []Network{wgNet(e2, remote6(e1, "198.18.0.1"))}}
	applyWG(t, d1, st1)
	applyWG(t, d2, st2)
	c1 := moveIntoDualStackContainerVia(t, h1, e1, "10.9.0.1", "fd09::1")
	c2 := moveIntoDualStackContainerVia(t, h2, e2, "10.9.0.1", "fd09::1")
	applyWG(t, d1, st1)
	applyWG(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}
	if out := mustRunIn(t, h1ns, "ip", "-6", "neigh", "show", "proxy", "dev", "mnbr9"); !strings.Contains(out, "fd09::8000:0:0:20") {
		t.Errorf("host 1's neighbour proxies on mnbr9:\n%s", out)
	}
	srv2v6 := serveIn(t, c2, "[fd09::8000:0:0:20]:0")
	srv1v6 := serveIn(t, c1, "[fd09::5]:0")
	srv2v4 := serveIn(t, c2, "10.9.0.20:0")
	expectReach(t, c1, srv2v6, "fd09::5")
	expectReach(t, c2, srv1v6, "fd09::8000:0:0:20")
	expectReach(t, c1, srv2v4, "10.9.0.5")

	// The remote container goes: its proxy entry goes with it.
	st1.Networks = []Network{wgNet(e1)}
	applyWG(t, d1, st1)
	if out := mustRunIn(t, h1ns, "ip", "-6", "neigh", "show", "proxy", "dev", "mnbr9"); strings.Contains(out, "fd09::8000:0:0:20") {
		t.Errorf("a gone remote's proxy entry stayed:\n%s", out)
	}
}

// moveIntoDualStackContainerVia is moveIntoContainer with Docker's IPv6
// part: the IPv6 address (no duplicate detection, as Docker sets it) and
// the default route through the IPv6 gateway.
func moveIntoDualStackContainerVia(t *testing.T, host *netlink.Handle, ep LocalEndpoint, gw, gw6 string) netns.NsHandle {
	t.Helper()
	c := moveIntoContainer(t, host, ep, gw)
	h := nlHandle(t, c)
	l := mustLinkIn(t, c, "eth0")
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefixIPNet(ep.Addr6), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw6)}); err != nil {
		t.Fatalf("IPv6 default route: %v", err)
	}
	return c
}

// TestIPv6OnlyNetwork: a network whose only subnet is IPv6 (engine 27's
// --ipv4=false): its containers reach each other across hosts, from their
// own addresses only, and leave it masqueraded.
func TestIPv6OnlyNetwork(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)
	addUnderlay6(t, h1, h2)
	e1 := testLocalEndpoint("o1o1o1o1o1o1o1", "0a:00:00:00:00:01", "fd43::11/64")
	e2 := testLocalEndpoint("o2o2o2o2o2o2o2", "0a:00:00:00:00:02", "fd43::12/64")
	net43 := func(locals []LocalEndpoint, remotes ...RemoteEndpoint) Network {
		return Network{VNI: 43, Subnet: netip.MustParsePrefix("fd43::/64"), Gateway: netip.MustParseAddr("fd43::1"), Locals: locals, Remotes: remotes}
	}
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, Members: members, Networks: []Network{net43([]LocalEndpoint{e1}, testRemoteEndpoint(e2, "198.18.0.2"))}}
	st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, Members: members, Networks: []Network{net43([]LocalEndpoint{e2}, testRemoteEndpoint(e1, "198.18.0.1"))}}
	d1, d2 := newTestDataplane(t, h1ns), newTestDataplane(t, h2ns)
	apply(t, d1, st1)
	apply(t, d2, st2)
	c1 := moveIntoContainer(t, h1, e1, "fd43::1")
	c2 := moveIntoContainer(t, h2, e2, "fd43::1")
	apply(t, d1, st1)
	apply(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}
	srv2 := serveIn(t, c2, "[fd43::12]:0")
	srvH1 := serveIn(t, h1ns, "[fd00:99::1]:0")
	expectReach(t, c1, srv2, "fd43::11")
	expectReach(t, c2, srvH1, "fd00:99::2") // egress, masqueraded
}
