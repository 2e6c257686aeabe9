package dataplane

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestRoutingMesh publishes a service's port on two Docker-like hosts
// (FORWARD policy DROP, br_netfilter on), one replica on each, and connects
// from a client outside the overlay to each host's own address: every host
// answers, connections alternate between the local and the remote replica,
// every replica sees the client's own address (no SNAT: the remote
// replica's replies go back through the host that took the connection, over
// the probe device), and nothing is left once the port and the return path
// are gone.
func TestRoutingMesh(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)
	cl := newNetNS(t)
	clh := nlHandle(t, cl)
	// The client reaches host 1 at 198.51.100.1 and host 2 at 198.51.100.5.
	for _, l := range []struct {
		host         *netlink.Handle
		hostDev      string
		hostAddr     string
		clDev, clAdr string
	}{{h1, "clA", "198.51.100.1/30", "cl1", "198.51.100.2/30"}, {h2, "clB", "198.51.100.5/30", "cl2", "198.51.100.6/30"}} {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = l.hostDev
		if err := l.host.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: l.clDev, PeerNamespace: netlink.NsFd(int(cl))}); err != nil {
			t.Fatalf("client veth: %v", err)
		}
		for _, side := range []struct {
			h        *netlink.Handle
			dev, adr string
		}{{l.host, l.hostDev, l.hostAddr}, {clh, l.clDev, l.clAdr}} {
			lk, err := side.h.LinkByName(side.dev)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := netlink.ParseAddr(side.adr)
			if err := side.h.AddrAdd(lk, a); err != nil {
				t.Fatal(err)
			}
			if err := side.h.LinkSetUp(lk); err != nil {
				t.Fatal(err)
			}
		}
	}

	endpoint, remote := testLocalEndpoint, testRemoteEndpoint
	r1 := endpoint("m1m1m1m1m1m1m1", "02:42:00:00:00:31", "10.42.0.31/24") // replica, host 1
	r2 := endpoint("m2m2m2m2m2m2m2", "02:42:00:00:00:32", "10.42.0.32/24") // replica, host 2
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	mesh := []MeshPort{{Service: "web", Proto: "tcp", HostPort: 80, TargetPort: 8080, VNI: 42,
		Backends: []netip.Addr{r1.Addr.Addr(), r2.Addr.Addr()}}}
	st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, VXLANPort: 4790, Members: members, MeshProbeHosts: members,
		Networks: []Network{testNet42([]LocalEndpoint{r1}, remote(r2, "198.18.0.2"))}, MeshPorts: mesh}
	st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, VXLANPort: 4790, Members: members, MeshProbeHosts: members,
		Networks: []Network{testNet42([]LocalEndpoint{r2}, remote(r1, "198.18.0.1"))}, MeshPorts: mesh}
	d1, d2 := newTestDataplane(t, h1ns), newTestDataplane(t, h2ns)
	apply(t, d1, st1)
	apply(t, d2, st2)
	r1ns := moveIntoContainer(t, h1, r1, "10.42.0.1")
	r2ns := moveIntoContainer(t, h2, r2, "10.42.0.1")
	apply(t, d1, st1)
	apply(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}
	// The return path lives with the probe device (the daemon's probe).
	probes := map[netns.NsHandle]*Probe{}
	for i, ns := range []netns.NsHandle{h1ns, h2ns} {
		p := NewProbe(ProbeConfig{Underlay: members[i], Port: 4790, Log: testLogger(t)})
		p.SetReturnPath(true)
		peer := ProbePeer{Name: fmt.Sprintf("host%d", 2-i), Underlay: members[1-i]}
		if err := inNS(ns, func() error { return p.Sync(true, []ProbePeer{peer}, false) }); err != nil {
			t.Fatalf("probe sync on host %d: %v", i+1, err)
		}
		probes[ns] = p
	}
	// The device carries mesh connections: a vxlan network's MTU.
	for i, h := range []*netlink.Handle{h1, h2} {
		l, err := h.LinkByName(ProbeDevice)
		if err != nil {
			t.Fatal(err)
		}
		if want := addrLinkMTU(h, members[i]) - VXLANOverhead; l.Attrs().MTU != want || want < minProbeMTU {
			t.Errorf("host %d: %s has MTU %d, want the underlay's less VXLAN's overhead, %d", i+1, ProbeDevice, l.Attrs().MTU, want)
		}
	}
	if out := mustRunIn(t, h2ns, "ip", "rule", "show"); !strings.Contains(out, "fwmark 0x1/0xffff lookup") {
		t.Errorf("host 2 has no return rule for host 1:\n%s", out)
	}
	serveWho(t, r1ns, "r1")
	serveWho(t, r2ns, "r2")

	for _, entry := range []struct {
		name, addr, client string
	}{{"host 1", "198.51.100.1:80", "198.51.100.2"}, {"host 2", "198.51.100.5:80", "198.51.100.6"}} {
		waitVIP(t, cl, entry.addr)
		counts := map[string]int{}
		for range 10 {
			who, src, err := askWho(cl, entry.addr)
			if err != nil {
				// Why: the rules with their counters, routes, drops (nstat:
				// TcpExtIPReversePathFilter, IpForwDatagrams).
				for i, ns := range []netns.NsHandle{h1ns, h2ns} {
					for _, cmd := range [][]string{{"nft", "list", "table", "ip", vipTableName}, {"iptables", "-vnL", "FORWARD"},
						{"ip", "rule"}, {"ip", "route", "show", "table", "all"}, {"ip", "neigh", "show", "dev", ProbeDevice},
						{"bridge", "fdb", "show", "dev", ProbeDevice}, {"sysctl", "net.ipv4.conf.mnprobe.rp_filter", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.mnprobe.forwarding"},
						{"ip", "-s", "link", "show", ProbeDevice},
						{"nstat", "-a"}, {"cat", "/proc/net/stat/nf_conntrack"},
						{"nft", "list", "table", "inet", "meshnet"}} {
						out, _ := runIn(ns, cmd[0], cmd[1:]...)
						t.Logf("host %d: %s\n%s", i+1, strings.Join(cmd, " "), out)
					}
				}
				t.Fatalf("connect to %s through %s: %v", entry.addr, entry.name, err)
			}
			if src != entry.client {
				t.Errorf("entering at %s, replica %s saw the client as %s, want its own address %s", entry.name, who, src, entry.client)
			}
			counts[who]++
		}
		if counts["r1"] != 5 || counts["r2"] != 5 {
			t.Errorf("10 connections entering at %s landed %v, want 5 on each replica", entry.name, counts)
		}
		t.Logf("entering at %s: %v, client address kept", entry.name, counts)
	}
	// Host to host, the connections went over the probe device, not the
	// overlay: each host routed its remote replica's share there
	// (meshroute) and marked the other's as it arrived (meshmark).
	for i, ns := range []netns.NsHandle{h1ns, h2ns} {
		for _, comment := range []string{commentPrefix + " mesh route", commentPrefix + " mesh mark from " + ProbeDevice} {
			if n := ruleCounter(t, ns, "ip "+vipTableName, comment); n < 5 {
				t.Errorf("host %d: the %q rule counted %d packets, want at least one per connection (5)", i+1, comment, n)
			}
		}
	}

	// Each host sees the other as an older meshnetd (no mesh over the
	// probe device): host 1 bridges its share into the overlay and host 2
	// marks it by host 1's bridge MAC, as older hosts do; still 5 and 5,
	// the client kept.
	st1.MeshProbeHosts, st2.MeshProbeHosts = members[:1], members[1:]
	apply(t, d1, st1)
	apply(t, d2, st2)
	bridgedBefore := ruleCounter(t, h2ns, "ip "+vipTableName, commentPrefix+" mesh mark mnbr42 from")
	counts := map[string]int{}
	for range 10 {
		who, src, err := askWho(cl, "198.51.100.1:80")
		if err != nil || src != "198.51.100.2" {
			t.Fatalf("entering at host 1, host 2 older: %s saw %s (%v)", who, src, err)
		}
		counts[who]++
	}
	if counts["r1"] != 5 || counts["r2"] != 5 {
		t.Errorf("10 connections entering at host 1 with host 2 older landed %v, want 5 on each replica", counts)
	}
	if n := ruleCounter(t, h2ns, "ip "+vipTableName, commentPrefix+" mesh mark mnbr42 from") - bridgedBefore; n < 5 {
		t.Errorf("host 2 marked %d packets arriving bridged from host 1, want at least one per connection (5)", n)
	}
	st1.MeshProbeHosts, st2.MeshProbeHosts = members, members
	apply(t, d1, st1)
	apply(t, d2, st2)

	// A client on a replica's own host (host 2's own address) entering at
	// host 1: the replica on its host sees host 1 (hairpin SNAT: its
	// replies would be delivered on host 2 itself otherwise), the other
	// the client's own address.
	counts = map[string]int{}
	for range 10 {
		who, src, err := askWho(h2ns, "198.18.0.1:80")
		if err != nil {
			t.Fatalf("from host 2 through host 1: %v", err)
		}
		if want := map[string]string{"r1": "198.18.0.2", "r2": "198.18.0.1"}[who]; src != want {
			t.Errorf("from host 2 through host 1, replica %s saw %s, want %s", who, src, want)
		}
		counts[who]++
	}
	if counts["r1"] != 5 || counts["r2"] != 5 {
		t.Errorf("10 connections from host 2 through host 1 landed %v, want 5 on each replica", counts)
	}

	// Local replicas preferred: entering at a host with one, every
	// connection stays there.
	for _, st := range []*State{&st1, &st2} {
		st.MeshPorts[0].PreferLocal = true
	}
	apply(t, d1, st1)
	apply(t, d2, st2)
	for _, entry := range []struct{ addr, want string }{{"198.51.100.1:80", "r1"}, {"198.51.100.5:80", "r2"}} {
		for range 4 {
			if who, _, err := askWho(cl, entry.addr); err != nil || who != entry.want {
				t.Errorf("prefer local, entering at %s: %s (%v), want %s", entry.addr, who, err, entry.want)
			}
		}
	}

	// Gone: the port, the marks and the return path.
	st1.MeshPorts, st2.MeshPorts = nil, nil
	apply(t, d1, st1)
	apply(t, d2, st2)
	for ns, p := range probes {
		// The device stays (the host keeps its vxlan network); the return
		// path goes.
		p.SetReturnPath(false)
		peers := []ProbePeer{}
		for name, pp := range p.peers {
			peers = append(peers, ProbePeer{Name: name, Underlay: pp.Underlay})
		}
		if err := inNS(ns, func() error { return p.Sync(true, peers, false) }); err != nil {
			t.Fatal(err)
		}
		for cmd, gone := range map[string]string{"nft list tables": vipTableName, "ip rule show": fmt.Sprint(meshTableBase)[:6],
			"iptables -S FORWARD": "meshnet: accept mnbr42 mesh", "ip -4 neigh show dev " + ProbeDevice: "198.18"} {
			args := strings.Fields(cmd)
			if out := mustRunIn(t, ns, args[0], args[1:]...); strings.Contains(out, gone) {
				t.Errorf("%s: %q left:\n%s", cmd, gone, out)
			}
		}
	}
	if _, _, err := askWho(cl, "198.51.100.1:80"); err == nil {
		t.Error("the port still answers after it was unpublished")
	}
}
