package dataplane

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// TestClientVIP balances a VIP in the client container's own namespace
// (WriteClientVIPs) on two Docker-like hosts whose tables know no VIP,
// with br_netfilter switched off in both hosts' namespaces: nothing on the
// path between client and replicas sees the connection as a VIP's, which is
// what a network bridged outside the host's namespace will need
// (docs/netns-dataplane.md). New connections alternate, the replica sees
// the client's address, a VIP without replicas refuses at once, an
// unchanged table is written again without harm, and an empty list removes
// the table.
func TestClientVIP(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)
	for _, ns := range []netns.NsHandle{h1ns, h2ns} {
		mustRunIn(t, ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
	}
	endpoint, remote := testLocalEndpoint, testRemoteEndpoint
	c1 := endpoint("w1w1w1w1w1w1w1", "02:42:00:00:00:31", "10.42.0.31/24") // client, host 1
	r1 := endpoint("w2w2w2w2w2w2w2", "02:42:00:00:00:32", "10.42.0.32/24") // replica, host 1
	r2 := endpoint("w3w3w3w3w3w3w3", "02:42:00:00:00:33", "10.42.0.33/24") // replica, host 2
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, VXLANPort: 4790, Members: members,
		Networks: []Network{testNet42([]LocalEndpoint{c1, r1}, remote(r2, "198.18.0.2"))}}
	st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, VXLANPort: 4790, Members: members,
		Networks: []Network{testNet42([]LocalEndpoint{r2}, remote(c1, "198.18.0.1"), remote(r1, "198.18.0.1"))}}
	d1, d2 := newTestDataplane(t, h1ns), newTestDataplane(t, h2ns)
	apply(t, d1, st1)
	apply(t, d2, st2)
	cns := moveIntoContainer(t, h1, c1, "10.42.0.1")
	r1ns := moveIntoContainer(t, h1, r1, "10.42.0.1")
	r2ns := moveIntoContainer(t, h2, r2, "10.42.0.1")
	apply(t, d1, st1)
	apply(t, d2, st2)
	serveWho(t, r1ns, "r1")
	serveWho(t, r2ns, "r2")

	conn, err := nftables.New(nftables.WithNetNSFd(int(cns)), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseLasting() })
	vip := netip.MustParseAddr("10.42.0.250")
	write := func(vs ...VIP) {
		t.Helper()
		if err := WriteClientVIPs(conn, vs); err != nil {
			t.Fatalf("WriteClientVIPs(%v): %v", vs, err)
		}
	}
	both := VIP{Addr: vip, Service: "api", Backends: []netip.Addr{r2.Addr.Addr(), r1.Addr.Addr()}}
	write(both)
	write(both) // replaces the table whole: no error, no duplicate rules
	if out := mustRunIn(t, cns, "nft", "list", "table", "ip", vipTableName); strings.Count(out, "dnat to") != 1 || strings.Contains(out, "hook output priority filter") {
		t.Errorf("the container's table after two writes (one DNAT, and no filter chain while every VIP has replicas):\n%s", out)
	}
	target := net.JoinHostPort(vip.String(), "8080")
	waitVIP(t, cns, target)
	expectEvenSpread(t, cns, target, "10.42.0.31")
	if out := mustRunIn(t, h1ns, "nft", "list", "tables"); strings.Contains(out, vipTableName) {
		t.Errorf("the client's host has a VIP table; the test would not show the container's alone:\n%s", out)
	}

	write(VIP{Addr: vip, Service: "api"})
	if _, _, err := askWho(cns, target); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("VIP without replicas: %v, want connection refused", err)
	}
	write()
	if out := mustRunIn(t, cns, "nft", "list", "tables"); strings.Contains(out, vipTableName) {
		t.Errorf("table left after the last VIP went:\n%s", out)
	}
	write() // no table: still no error
	_ = h2
}
