package dataplane

import (
	"net/netip"
	"strings"
	"testing"
)

// TestIPv6Underlay: two Docker-like hosts joined only by IPv6 (their
// underlay veth holds no IPv4 address): a dual-stack vxlan network carries
// both families between them over VXLAN in IPv6, the container MTU leaves
// room for the larger outer header, and only members reach the VXLAN port.
func TestIPv6Underlay(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHostsLinked(t)
	addUnderlay6(t, h1, h2)
	dockerHosts(t, h1ns, h2ns)

	e1 := dualStackEndpoint("u1u1u1u1u1u1u1", "02:42:00:00:00:21", "10.42.0.21/24", "fd42::21/64")
	e2 := dualStackEndpoint("u2u2u2u2u2u2u2", "02:42:00:00:00:22", "10.42.0.22/24", "fd42::22/64")
	net42 := func(locals []LocalEndpoint, remotes ...RemoteEndpoint) Network {
		n := testNet42(locals, remotes...)
		n.Subnet6, n.Gateway6 = netip.MustParsePrefix("fd42::/64"), netip.MustParseAddr("fd42::1")
		return n
	}
	u1, u2 := netip.MustParseAddr("fd00:99::1"), netip.MustParseAddr("fd00:99::2")
	members := []netip.Addr{u1, u2}
	st1 := State{Underlay: UnderlayInfo{Addr: u1}, VXLANPort: 4790, Members: members,
		Networks: []Network{net42([]LocalEndpoint{e1}, dualStackRemotes(e2, "fd00:99::2")...)}}
	st2 := State{Underlay: UnderlayInfo{Addr: u2}, VXLANPort: 4790, Members: members,
		Networks: []Network{net42([]LocalEndpoint{e2}, dualStackRemotes(e1, "fd00:99::1")...)}}
	d1, d2 := newTestDataplane(t, h1ns), newTestDataplane(t, h2ns)
	apply(t, d1, st1)
	apply(t, d2, st2)
	c1 := moveIntoDualStackContainer(t, h1, e1)
	c2 := moveIntoDualStackContainer(t, h2, e2)
	apply(t, d1, st1)
	apply(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}
	if out := mustRunIn(t, h1ns, "ip", "-d", "link", "show", "mnvx42"); !strings.Contains(out, "local fd00:99::1") || !strings.Contains(out, "mtu 1430") {
		t.Errorf("vxlan device over IPv6:\n%s", out)
	}
	srv2v4 := serveIn(t, c2, "10.42.0.22:0")
	srv2v6 := serveIn(t, c2, "[fd42::22]:0")
	expectReach(t, c1, srv2v4, "10.42.0.21")
	expectReach(t, c1, srv2v6, "fd42::21")

	t.Run("non-member", func(t *testing.T) {
		notMember := st2
		notMember.Members = members[1:]
		apply(t, d2, notMember)
		expectBlocked(t, c1, srv2v4)
		apply(t, d2, st2)
		expectReach(t, c1, srv2v4, "10.42.0.21")
	})
}
