package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel tests: each runs in fresh network namespaces (see helpers_test.go)
// and checks the kernel with tools and calls independent of the code under test
// (netlink reads, `bridge -j fdb`, `ip -j neigh`, `iptables -S`, `nft list`).

// hostNS is a simulated host: a namespace with an underlay device holding addr.
type hostNS struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

// newHost makes a namespace with an underlay veth "ul0" (MTU 1500) holding
// underlay/15, its peer "ul1" up beside it, so the underlay address is local.
func newHost(t *testing.T, underlay string) hostNS {
	t.Helper()
	ns := newNetNS(t)
	h := nlHandle(t, ns)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ul0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "ul1"}); err != nil {
		t.Fatalf("underlay veth: %v", err)
	}
	for _, name := range []string{"ul0", "ul1"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	addUnderlayAddr(t, h, "ul0", underlay)
	return hostNS{ns, h}
}

func addUnderlayAddr(t *testing.T, h *netlink.Handle, dev, addr string) {
	t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr + "/15")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", addr, dev, err)
	}
}

// dockerLikeFirewall sets what a Docker host has: FORWARD policy DROP and a
// DOCKER-USER chain that FORWARD jumps to first.
func dockerLikeFirewall(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	mustRunIn(t, ns, "iptables", "-P", "FORWARD", "DROP")
	mustRunIn(t, ns, "iptables", "-N", "DOCKER-USER")
	mustRunIn(t, ns, "iptables", "-A", "DOCKER-USER", "-j", "RETURN")
	mustRunIn(t, ns, "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
}

// checkKernel fails t unless the namespace holds exactly what st implies.
// acceptChain is the iptables chain meshnet's accepts belong in ("" = no
// iptables filter table exists).
func checkKernel(t *testing.T, host hostNS, st State, underlayMTU int, acceptChain string) {
	t.Helper()
	h := host.h
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]netlink.Link{}
	byIndex := map[int]string{}
	for _, l := range links {
		byName[l.Attrs().Name] = l
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	port := st.VXLANPort
	if port == 0 {
		port = 4789
	}
	expected := map[string]bool{}
	var wantRules []string
	for _, n := range st.Networks {
		mtu := n.MTU
		if mtu == 0 {
			mtu = underlayMTU - 50
		}
		brName, vxName := fmt.Sprintf("mnbr%d", n.VNI), fmt.Sprintf("mnvx%d", n.VNI)
		expected[brName], expected[vxName] = true, true

		br, ok := byName[brName].(*netlink.Bridge)
		if !ok {
			t.Errorf("%s: bridge missing (have %T)", brName, byName[brName])
			continue
		}
		if br.Attrs().MTU != mtu || br.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s: mtu %d up %v, want mtu %d up", brName, br.Attrs().MTU, br.Attrs().Flags&net.FlagUp != 0, mtu)
		}
		addrs, err := h.AddrList(br, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.IPNet.String())
		}
		if want := netip.PrefixFrom(n.Gateway, n.Subnet.Bits()).String(); !slices.Equal(got, []string{want}) {
			t.Errorf("%s: addresses %v, want [%s]", brName, got, want)
		}
		var ra []byte
		if err := inNS(host.ns, func() (err error) {
			ra, err = os.ReadFile("/proc/sys/net/ipv6/conf/" + brName + "/accept_ra")
			return err
		}); err != nil || strings.TrimSpace(string(ra)) != "0" {
			t.Errorf("%s: accept_ra %q (%v), want 0", brName, ra, err)
		}

		vx, ok := byName[vxName].(*netlink.Vxlan)
		if !ok {
			t.Errorf("%s: vxlan missing (have %T)", vxName, byName[vxName])
			continue
		}
		if vx.VxlanId != int(n.VNI) || vx.Port != port || !vx.SrcAddr.Equal(net.IP(st.Underlay.Addr.AsSlice())) ||
			vx.Learning || !vx.Proxy || byIndex[vx.MasterIndex] != brName || vx.MTU != mtu || vx.Flags&net.FlagUp == 0 {
			t.Errorf("%s: id %d port %d local %v learning %v proxy %v master %s mtu %d flags %v",
				vxName, vx.VxlanId, vx.Port, vx.SrcAddr, vx.Learning, vx.Proxy, byIndex[vx.MasterIndex], vx.MTU, vx.Flags)
		}
		// The bridge port must not learn MACs from the overlay.
		var ports []struct {
			Ifname   string `json:"ifname"`
			Learning *bool  `json:"learning"`
		}
		mustJSON(t, mustRunIn(t, host.ns, "bridge", "-d", "-j", "link", "show", "dev", vxName), &ports)
		if len(ports) != 1 || ports[0].Learning == nil || *ports[0].Learning {
			t.Errorf("%s bridge port: %+v, want learning off", vxName, ports)
		}

		for _, l := range n.Locals {
			expected[l.HostIf] = true
			v, ok := byName[l.HostIf].(*netlink.Veth)
			if !ok {
				t.Errorf("%s: veth missing (have %T)", l.HostIf, byName[l.HostIf])
				continue
			}
			if byIndex[v.MasterIndex] != brName || v.MTU != mtu || v.Flags&net.FlagUp == 0 {
				t.Errorf("%s: master %s mtu %d flags %v; want %s, %d, up", l.HostIf, byIndex[v.MasterIndex], v.MTU, v.Flags, brName, mtu)
			}
			var port []struct {
				Hairpin  *bool `json:"hairpin"`
				Learning *bool `json:"learning"`
				Flood    *bool `json:"flood"`
			}
			mustJSON(t, mustRunIn(t, host.ns, "bridge", "-d", "-j", "link", "show", "dev", l.HostIf), &port)
			if len(port) != 1 || port[0].Hairpin == nil || *port[0].Hairpin == n.Internal {
				t.Errorf("%s bridge port: hairpin %+v on a network with internal=%v; want hairpin unless internal", l.HostIf, port, n.Internal)
			}
			if len(port) != 1 || port[0].Learning == nil || *port[0].Learning || port[0].Flood == nil || *port[0].Flood {
				t.Errorf("%s bridge port: %+v, want learning and flood off", l.HostIf, port)
			}
			if c, ok := byName[l.ContainerIf]; ok {
				expected[l.ContainerIf] = true
				if c.Attrs().HardwareAddr.String() != l.MAC.String() || c.Attrs().MTU != mtu {
					t.Errorf("%s: mac %v mtu %d, want %v %d", l.ContainerIf, c.Attrs().HardwareAddr, c.Attrs().MTU, l.MAC, mtu)
				}
			}
		}

		var wantFDB, wantNeigh []string
		for _, r := range n.Remotes {
			wantFDB = append(wantFDB, fmt.Sprintf("%s %s self permanent", r.MAC, r.VTEP))
			wantNeigh = append(wantNeigh, fmt.Sprintf("%s %s PERMANENT", r.Addr, r.MAC))
		}
		var fdb []struct {
			MAC   string   `json:"mac"`
			Dst   string   `json:"dst"`
			Flags []string `json:"flags"`
			State string   `json:"state"`
		}
		mustJSON(t, mustRunIn(t, host.ns, "bridge", "-j", "fdb", "show", "dev", vxName), &fdb)
		var gotFDB []string
		for _, e := range fdb {
			if slices.Contains(e.Flags, "self") {
				gotFDB = append(gotFDB, fmt.Sprintf("%s %s self %s", e.MAC, e.Dst, e.State))
			}
		}
		// The bridge's own table: a static entry per container, on its veth
		// or on the vxlan port, and nothing learned.
		var wantBr, gotBr []string
		for _, l := range n.Locals {
			wantBr = append(wantBr, fmt.Sprintf("%s %s static", l.MAC, l.HostIf))
		}
		for _, r := range n.Remotes {
			wantBr = append(wantBr, fmt.Sprintf("%s %s static", r.MAC, vxName))
		}
		var brFDB []struct {
			MAC    string `json:"mac"`
			Ifname string `json:"ifname"`
			State  string `json:"state"`
			Master string `json:"master"`
		}
		mustJSON(t, mustRunIn(t, host.ns, "bridge", "-j", "fdb", "show", "br", brName), &brFDB)
		for _, e := range brFDB {
			if e.Master == brName && e.State != "permanent" && e.Ifname != brName {
				gotBr = append(gotBr, fmt.Sprintf("%s %s %s", e.MAC, e.Ifname, e.State))
			}
		}
		slices.Sort(wantBr)
		slices.Sort(gotBr)
		if !slices.Equal(gotBr, wantBr) {
			t.Errorf("%s bridge FDB:\n got %q\nwant %q", brName, gotBr, wantBr)
		}

		var neigh []struct {
			Dst    string   `json:"dst"`
			LLAddr string   `json:"lladdr"`
			State  []string `json:"state"`
		}
		mustJSON(t, mustRunIn(t, host.ns, "ip", "-j", "neigh", "show", "dev", vxName), &neigh)
		var gotNeigh []string
		for _, e := range neigh {
			gotNeigh = append(gotNeigh, fmt.Sprintf("%s %s %s", e.Dst, e.LLAddr, strings.Join(e.State, ",")))
		}
		for _, s := range [][]string{wantFDB, gotFDB, wantNeigh, gotNeigh} {
			slices.Sort(s)
		}
		if !slices.Equal(gotFDB, wantFDB) {
			t.Errorf("%s FDB:\n got %q\nwant %q", vxName, gotFDB, wantFDB)
		}
		if !slices.Equal(gotNeigh, wantNeigh) {
			t.Errorf("%s neighbours:\n got %q\nwant %q", vxName, gotNeigh, wantNeigh)
		}

		if acceptChain != "" {
			wantRules = append(wantRules,
				fmt.Sprintf(`-A %s -i %s -o %s -m comment --comment "meshnet: accept %s bridged" -j ACCEPT`, acceptChain, brName, brName, brName),
				fmt.Sprintf(`-A %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "meshnet: accept %s return" -j ACCEPT`, acceptChain, brName, brName),
			)
			if !n.Internal {
				wantRules = append(wantRules,
					fmt.Sprintf(`-A %s -i %s ! -o mnbr+ -m comment --comment "meshnet: accept %s egress" -j ACCEPT`, acceptChain, brName, brName))
				for _, l := range n.Locals {
					for _, m := range l.Ports {
						a := l.Addr.Addr()
						wantRules = append(wantRules, fmt.Sprintf(`-A %s -d %v/32 -o %s -p %s -m %s --dport %d -m comment --comment "meshnet: accept %s published %s %v:%d" -j ACCEPT`,
							acceptChain, a, brName, m.Proto, m.Proto, m.ContainerPort, brName, m.Proto, a, m.ContainerPort))
					}
				}
			}
		}
		var localnet []byte
		if err := inNS(host.ns, func() (err error) {
			localnet, err = os.ReadFile("/proc/sys/net/ipv4/conf/" + brName + "/route_localnet")
			return err
		}); err != nil || (strings.TrimSpace(string(localnet)) == "1") == n.Internal {
			t.Errorf("%s: route_localnet %q (%v) on a network with internal=%v", brName, localnet, err, n.Internal)
		}
	}
	for _, l := range links {
		name := l.Attrs().Name
		if (strings.HasPrefix(name, "mnbr") || strings.HasPrefix(name, "mnvx") || strings.HasPrefix(name, "mnh") ||
			strings.HasPrefix(name, "mnc")) && !expected[name] {
			t.Errorf("unexpected device %s (%s)", name, l.Type())
		}
	}

	// nftables: table inet meshnet exactly when networks exist.
	out, err := runIn(host.ns, "nft", "list", "table", "inet", "meshnet")
	if len(st.Networks) == 0 {
		if err == nil {
			t.Errorf("table inet meshnet exists without networks:\n%s", out)
		}
	} else {
		if err != nil {
			t.Errorf("table inet meshnet: %v", err)
		}
		// Per network: isolation, and masquerade for egress, hairpin and
		// localhost (internal: two drops instead); per published port: DNAT
		// in prerouting and output; the input drop to 127.0.0.0/8; per
		// tunnel port: accept from members (ip, ip6), drop others, drop
		// forwarded (ip, ip6), drop from host sockets (ip, ip6) and the
		// overlay mark; Docker's bridges apart, both ways.
		want := 1 + 8
		if !st.AllowDockerBridges {
			want += 2 * len(dockerBridges)
		}
		for _, n := range st.Networks {
			want += 4
			if n.Internal {
				want--
				continue
			}
			for _, l := range n.Locals {
				want += 2 * len(l.Ports)
			}
		}
		if got := strings.Count(out, `comment "meshnet:`); got != want {
			t.Errorf("table inet meshnet has %d meshnet rules, want %d:\n%s", got, want, out)
		}
		for _, want := range []string{
			fmt.Sprintf(`udp dport %d ip saddr @members4 fib saddr . iif oif != 0 counter`, port),
			fmt.Sprintf(`udp dport %d counter packets 0 bytes 0 drop comment "meshnet: tunnel udp %d drop others"`, port, port),
			fmt.Sprintf(`udp dport %d ip daddr @members4 counter packets 0 bytes 0 drop comment "meshnet: tunnel udp %d drop forwarded`, port, port),
			fmt.Sprintf(`meta skuid >= 0 meta mark & 0x01000000 == 0x00000000 udp dport %d ip daddr @members4 counter`, port),
			`oifname "mnbr*" meta mark set meta mark | 0x01000000 counter`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("table inet meshnet lacks %q:\n%s", want, out)
			}
		}
		for _, n := range st.Networks {
			br := fmt.Sprintf("mnbr%d", n.VNI)
			wants := []string{fmt.Sprintf(`iifname "%s" oifname "mnbr*" oifname != "%s" ct status ! dnat counter`, br, br)}
			if n.Internal {
				wants = append(wants,
					fmt.Sprintf(`iifname "%s" ip daddr != %v counter packets 0 bytes 0 drop`, br, n.Subnet.Masked()),
					fmt.Sprintf(`oifname "%s" ip saddr != %v counter packets 0 bytes 0 drop`, br, n.Subnet.Masked()))
			} else {
				wants = append(wants, fmt.Sprintf(`ip saddr %v oifname != "%s" counter`, n.Subnet.Masked(), br))
				for _, l := range n.Locals {
					for _, m := range l.Ports {
						match := "fib daddr type local"
						if m.HostIP.IsValid() {
							match = "ip daddr " + m.HostIP.String()
						}
						wants = append(wants, fmt.Sprintf(`%s %s dport %d counter packets 0 bytes 0 dnat ip to %v:%d`,
							match, m.Proto, m.HostPort, l.Addr.Addr(), m.ContainerPort))
					}
				}
			}
			for _, want := range wants {
				if !strings.Contains(out, want) {
					t.Errorf("table inet meshnet lacks %q:\n%s", want, out)
				}
			}
		}
	}

	checkL2Table(t, host, st)

	// iptables: still parseable, and holding exactly meshnet's expected accepts.
	if acceptChain == "" {
		out, _ := runIn(host.ns, "nft", "list", "tables")
		if strings.Contains(out, "table ip filter") {
			t.Errorf("meshnet created an ip filter table:\n%s", out)
		}
		return
	}
	out = mustRunIn(t, host.ns, "iptables", "-S")
	var gotRules []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `--comment "meshnet:`) {
			gotRules = append(gotRules, line)
		}
	}
	// Every accept after Docker's jump to DOCKER-USER, where the operator's
	// drops are.
	fwd := mustRunIn(t, host.ns, "iptables", "-S", "FORWARD")
	if j := strings.Index(fwd, "-A FORWARD -j DOCKER-USER"); j >= 0 && strings.Contains(fwd[:j], "meshnet:") {
		t.Errorf("meshnet rules ahead of the jump to DOCKER-USER:\n%s", fwd)
	}
	slices.Sort(gotRules)
	slices.Sort(wantRules)
	if !slices.Equal(gotRules, wantRules) {
		t.Errorf("iptables -S meshnet rules:\n got %q\nwant %q\nfull:\n%s", gotRules, wantRules, out)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
}

func apply(t *testing.T, d *Kernel, st State) {
	t.Helper()
	if err := d.Apply(context.Background(), st); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// TestApplyTransitions replays the test states in several random orders (fixed
// seeds) on a Docker-like host: after each Apply the kernel is exactly what
// that state implies, and applying it again changes nothing.
func TestApplyTransitions(t *testing.T) {
	requireRoot(t)
	states := transitionStates()
	for seed := int64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			host := newHost(t, "198.18.0.1")
			dockerLikeFirewall(t, host.ns)
			d := newTestDataplane(t, host.ns)
			rng := rand.New(rand.NewSource(seed))
			order := append(rng.Perm(len(states)), rng.Perm(len(states))...)
			for _, i := range order {
				s := states[i]
				apply(t, d, s.st)
				checkKernel(t, host, s.st, 1500, "FORWARD")
				if t.Failed() {
					t.Fatalf("after applying %q", s.name)
				}
				apply(t, d, s.st)
				if len(d.changes) != 0 {
					t.Fatalf("re-applying %q changed %q", s.name, d.changes)
				}
			}
			if err := d.Teardown(); err != nil {
				t.Fatalf("Teardown: %v", err)
			}
			checkKernel(t, host, State{}, 1500, "FORWARD")
		})
	}
}

// oneNetwork is a state with one network, one local endpoint and one remote.
func oneNetwork(underlay string) State {
	h, c := VethNames("0123456789abcdef")
	return State{
		Underlay: UnderlayInfo{Addr: netip.MustParseAddr(underlay)},
		Networks: []Network{{
			VNI: 100, Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1"),
			Locals: []LocalEndpoint{{ID: "0123456789abcdef", HostIf: h, ContainerIf: c,
				MAC: mustMAC("02:00:00:01:00:11"), Addr: netip.MustParsePrefix("10.1.0.11/24")}},
			Remotes: []RemoteEndpoint{{Addr: netip.MustParseAddr("10.1.0.21"), MAC: mustMAC("02:00:00:01:00:21"),
				VTEP: netip.MustParseAddr("198.18.0.2")}},
		}},
	}
}

// linkIndexes maps meshnet's device names to their ifindex.
func linkIndexes(t *testing.T, h *netlink.Handle) map[string]int {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, l := range links {
		if isOurName(l.Attrs().Name) {
			m[l.Attrs().Name] = l.Attrs().Index
		}
	}
	return m
}

// TestApplyIdempotentAndReplaces: a second Apply writes nothing (no netlink
// notification at all), and entries the kernel holds with other values (a
// learned FDB entry behind another VTEP, a stale entry, a reachable neighbour
// with another MAC) are replaced, not reported as conflicts.
func TestApplyIdempotentAndReplaces(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	dockerLikeFirewall(t, host.ns)
	d := newTestDataplane(t, host.ns)
	st := oneNetwork("198.18.0.1")
	apply(t, d, st)
	checkKernel(t, host, st, 1500, "FORWARD")
	before := linkIndexes(t, host.h)
	// Stateless (-s): no counters. The kernel's own packets (the bridge's
	// IPv6 router solicitations and MLD reports) move them at any time.
	rulesBefore := mustRunIn(t, host.ns, "nft", "-s", "-a", "list", "ruleset")

	// Watch for any link, address or neighbour notification during the second Apply.
	done := make(chan struct{})
	defer close(done)
	linkCh := make(chan netlink.LinkUpdate, 64)
	addrCh := make(chan netlink.AddrUpdate, 64)
	neighCh := make(chan netlink.NeighUpdate, 64)
	if err := netlink.LinkSubscribeAt(host.ns, linkCh, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrSubscribeAt(host.ns, addrCh, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.NeighSubscribeAt(host.ns, neighCh, done); err != nil {
		t.Fatal(err)
	}
	apply(t, d, st)
	// A marker change after the Apply: once its notification arrives, every
	// notification the Apply caused would have arrived before it.
	lo, _ := host.h.LinkByName("ul1")
	if err := host.h.LinkSetMTU(lo, 1400); err != nil {
		t.Fatal(err)
	}
	for marker := false; !marker; {
		select {
		case u := <-linkCh:
			if u.Attrs().Name == "ul1" {
				marker = true
				continue
			}
			t.Errorf("second Apply touched link %s", u.Attrs().Name)
		case u := <-addrCh:
			t.Errorf("second Apply touched address %v", u.LinkAddress)
		case u := <-neighCh:
			t.Errorf("second Apply touched neighbour %v %v", u.IP, u.HardwareAddr)
		}
	}
	if len(d.changes) != 0 {
		t.Errorf("second Apply changed %q", d.changes)
	}
	if after := linkIndexes(t, host.h); !mapsEqual(before, after) {
		t.Errorf("ifindexes changed: %v -> %v", before, after)
	}
	if after := mustRunIn(t, host.ns, "nft", "-s", "-a", "list", "ruleset"); after != rulesBefore {
		t.Errorf("ruleset changed:\n%s\n->\n%s", rulesBefore, after)
	}

	// Kernel entries that disagree with the state.
	mustRunIn(t, host.ns, "bridge", "fdb", "replace", "02:00:00:01:00:21", "dev", "mnvx100", "dst", "198.18.0.99", "self", "dynamic")
	mustRunIn(t, host.ns, "bridge", "fdb", "add", "02:00:00:01:00:77", "dev", "mnvx100", "dst", "198.18.0.77", "self", "permanent")
	mustRunIn(t, host.ns, "ip", "neigh", "replace", "10.1.0.21", "lladdr", "02:00:00:01:00:77", "dev", "mnvx100", "nud", "reachable")
	mustRunIn(t, host.ns, "ip", "neigh", "add", "10.1.0.77", "lladdr", "02:00:00:01:00:77", "dev", "mnvx100", "nud", "permanent")
	// Drift on the devices, fixed in place.
	br, _ := host.h.LinkByName("mnbr100")
	if err := host.h.LinkSetMTU(br, 1300); err != nil {
		t.Fatal(err)
	}
	mustRunIn(t, host.ns, "ip", "addr", "add", "10.9.0.1/24", "dev", "mnbr100")
	mustRunIn(t, host.ns, "iptables", "-D", "FORWARD", "-i", "mnbr100", "-o", "mnbr100",
		"-m", "comment", "--comment", "meshnet: accept mnbr100 bridged", "-j", "ACCEPT")
	apply(t, d, st)
	checkKernel(t, host, st, 1500, "FORWARD")
	if after := linkIndexes(t, host.h); !mapsEqual(before, after) {
		t.Errorf("repairing drift recreated links: %v -> %v", before, after)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestAdoption: a new dataplane instance (a restarted daemon) applying the same
// state keeps every device (same ifindex), adopts a veth whose container end
// has moved into a container, and removes what the new state no longer has.
func TestAdoption(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	dockerLikeFirewall(t, host.ns)
	st := oneNetwork("198.18.0.1")
	st.Networks = append(st.Networks, Network{VNI: 300, Subnet: netip.MustParsePrefix("10.3.0.0/24"), Gateway: netip.MustParseAddr("10.3.0.1")})

	d1 := newTestDataplane(t, host.ns)
	apply(t, d1, st)
	// Docker moves the container end into the container.
	container := newNetNS(t)
	ce, err := host.h.LinkByName(st.Networks[0].Locals[0].ContainerIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := host.h.LinkSetNsFd(ce, int(container)); err != nil {
		t.Fatal(err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := d1.Apply(context.Background(), st); err == nil {
		t.Error("Apply after Close succeeded")
	}
	checkKernel(t, host, st, 1500, "FORWARD") // Close removed nothing
	before := linkIndexes(t, host.h)

	d2 := newTestDataplane(t, host.ns)
	apply(t, d2, st)
	if len(d2.changes) != 0 {
		t.Errorf("restart with the same state changed %q", d2.changes)
	}
	if after := linkIndexes(t, host.h); !mapsEqual(before, after) {
		t.Errorf("restart recreated links: %v -> %v", before, after)
	}

	// The new state drops network 300: it goes, network 100 stays untouched.
	st.Networks = st.Networks[:1]
	apply(t, d2, st)
	checkKernel(t, host, st, 1500, "FORWARD")
	after := linkIndexes(t, host.h)
	for _, name := range []string{"mnbr100", "mnvx100", st.Networks[0].Locals[0].HostIf} {
		if after[name] != before[name] {
			t.Errorf("%s recreated (ifindex %d -> %d)", name, before[name], after[name])
		}
	}

	// A changed VXLAN port cannot be changed in place: only the vxlan device is
	// recreated.
	st.VXLANPort = 4790
	apply(t, d2, st)
	checkKernel(t, host, st, 1500, "FORWARD")
	again := linkIndexes(t, host.h)
	if again["mnvx100"] == after["mnvx100"] {
		t.Error("vxlan device not recreated for a new port")
	}
	if again["mnbr100"] != after["mnbr100"] || again[st.Networks[0].Locals[0].HostIf] != after[st.Networks[0].Locals[0].HostIf] {
		t.Error("bridge or veth recreated for a new VXLAN port")
	}
}

// TestFirewallPlacement: no iptables table → meshnet creates none; FORWARD only
// → accepts are appended there; Docker starts later and inserts its jump to
// DOCKER-USER → the accepts stay after it; a jump that lands after them (or
// accepts an older meshnet left in DOCKER-USER) → they are moved behind it.
// Rules other than meshnet's are kept, and Teardown leaves a table iptables
// still parses.
func TestFirewallPlacement(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	d := newTestDataplane(t, host.ns)
	st := oneNetwork("198.18.0.1")

	apply(t, d, st)
	checkKernel(t, host, st, 1500, "")

	mustRunIn(t, host.ns, "iptables", "-P", "FORWARD", "DROP")
	mustRunIn(t, host.ns, "iptables", "-A", "FORWARD", "-i", "eth9", "-j", "ACCEPT")
	apply(t, d, st)
	checkKernel(t, host, st, 1500, "FORWARD")

	mustRunIn(t, host.ns, "iptables", "-N", "DOCKER-USER")
	mustRunIn(t, host.ns, "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
	apply(t, d, st)
	checkKernel(t, host, st, 1500, "FORWARD")

	// The jump moved behind meshnet's accepts, and an old-style accept in
	// DOCKER-USER: the next Apply puts the accepts after the jump again and
	// removes the old one.
	mustRunIn(t, host.ns, "iptables", "-D", "FORWARD", "-j", "DOCKER-USER")
	mustRunIn(t, host.ns, "iptables", "-A", "FORWARD", "-j", "DOCKER-USER")
	// (nft, not iptables: meshnet's comments are nftables userdata.)
	mustRunIn(t, host.ns, "nft", "insert", "rule", "ip", "filter", "DOCKER-USER", "iifname", "mnbr100", "oifname", "mnbr100",
		"counter", "accept", "comment", `"meshnet: accept mnbr100 bridged"`)
	apply(t, d, st)
	checkKernel(t, host, st, 1500, "FORWARD")
	if out := mustRunIn(t, host.ns, "iptables", "-S", "DOCKER-USER"); strings.Contains(out, "meshnet:") {
		t.Errorf("old accept left in DOCKER-USER:\n%s", out)
	}
	apply(t, d, st)
	if len(d.changes) != 0 {
		t.Errorf("re-apply after the move changed %q", d.changes)
	}

	if err := d.Teardown(); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	checkKernel(t, host, State{}, 1500, "FORWARD")
	out := mustRunIn(t, host.ns, "iptables", "-S", "FORWARD")
	if !strings.Contains(out, "-A FORWARD -i eth9 -j ACCEPT") || !strings.Contains(out, "-A FORWARD -j DOCKER-USER") {
		t.Errorf("Teardown removed rules that are not meshnet's:\n%s", out)
	}
}

// TestIptablesEncoding checks meshnet's accept rules against what iptables-nft
// itself writes for the same options, expression by expression (nft's netlink
// debug view), leaving out only the comment.
func TestIptablesEncoding(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	mustRunIn(t, host.ns, "iptables", "-N", "REF")
	for _, args := range [][]string{
		{"-i", "mnbr100", "-o", "mnbr100"},
		{"-i", "mnbr100", "!", "-o", "mnbr+"},
		{"-o", "mnbr100", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"},
	} {
		mustRunIn(t, host.ns, "iptables", append(append([]string{"-A", "REF"}, args...), "-j", "ACCEPT")...)
	}
	mustRunIn(t, host.ns, "iptables", "-P", "FORWARD", "DROP")
	d := newTestDataplane(t, host.ns)
	apply(t, d, oneNetwork("198.18.0.1"))

	exprs := func(chain string) []string {
		out := mustRunIn(t, host.ns, "nft", "--debug=netlink", "list", "chain", "ip", "filter", chain)
		var rules []string
		cur := ""
		for _, line := range strings.Split(out, "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "ip filter "):
				if cur != "" {
					rules = append(rules, cur)
				}
				cur = "|"
			case strings.HasPrefix(line, "[ counter"):
				cur += "[ counter ]|"
			case strings.HasPrefix(line, "["):
				cur += line + "|"
			}
		}
		if cur != "" {
			rules = append(rules, cur)
		}
		slices.Sort(rules)
		return rules
	}
	ref, ours := exprs("REF"), exprs("FORWARD")
	if len(ref) != 3 || !slices.Equal(ref, ours) {
		t.Errorf("encodings differ:\niptables: %q\nmeshnet:  %q", ref, ours)
	}
	// And iptables reads meshnet's conntrack match back as the same options.
	out := mustRunIn(t, host.ns, "iptables", "-S", "FORWARD")
	if !strings.Contains(out, "-A FORWARD -o mnbr100 -m conntrack --ctstate RELATED,ESTABLISHED -m comment") {
		t.Errorf("iptables -S FORWARD:\n%s", out)
	}
}

// TestUnderlayMTU: network MTU follows the named interface, else the device
// holding the underlay address, else the explicit MTU.
func TestUnderlayMTU(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	ul, _ := host.h.LinkByName("ul0")
	if err := host.h.LinkSetMTU(ul, 9000); err != nil {
		t.Fatal(err)
	}
	d := newTestDataplane(t, host.ns)
	st := oneNetwork("198.18.0.1")

	apply(t, d, st) // by address
	checkKernel(t, host, st, 9000, "")

	st.Underlay.Interface = "ul1" // by name (MTU 1500)
	apply(t, d, st)
	checkKernel(t, host, st, 1500, "")

	st.Underlay.MTU = 2000 // explicit
	apply(t, d, st)
	checkKernel(t, host, st, 2000, "")
}

// TestInvalidNetworkIsLeftAlone: a network that fails validation is reported,
// and its devices (from an earlier valid state) are neither changed nor deleted,
// while the valid networks are applied.
func TestInvalidNetworkIsLeftAlone(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	d := newTestDataplane(t, host.ns)
	st := transitionStates()[7].st // two networks
	apply(t, d, st)
	before := linkIndexes(t, host.h)

	bad := st
	bad.Networks = slices.Clone(st.Networks)
	bad.Networks[1].Gateway = netip.MustParseAddr("192.0.2.1")
	bad.Networks[0].Remotes = nil
	if err := d.Apply(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "gateway") {
		t.Fatalf("Apply of an invalid network: %v", err)
	}
	if after := linkIndexes(t, host.h); !mapsEqual(before, after) {
		t.Errorf("devices changed: %v -> %v", before, after)
	}
	good := st
	good.Networks = []Network{bad.Networks[0], st.Networks[1]}
	checkKernel(t, host, good, 1500, "")

	// Networks without an underlay address: refused, nothing touched.
	noUnderlay := good
	noUnderlay.Underlay.Addr = netip.Addr{}
	if err := d.Apply(context.Background(), noUnderlay); err == nil {
		t.Error("Apply without underlay address succeeded")
	}
	checkKernel(t, host, good, 1500, "")
}

// TestConcurrentApply: Apply, Teardown and Close may be called from different
// goroutines (run with -race); the last Apply wins.
func TestConcurrentApply(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	d := newTestDataplane(t, host.ns)
	states := transitionStates()
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func() {
			var errs []error
			for i := 0; i < 5; i++ {
				errs = append(errs, d.Apply(context.Background(), states[(g+i)%len(states)].st))
			}
			done <- errors.Join(errs...)
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Errorf("concurrent Apply: %v", err)
		}
	}
	final := states[7].st
	apply(t, d, final)
	checkKernel(t, host, final, 1500, "")

	// A cancelled context stops Apply between phases and says so.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Apply(ctx, states[1].st); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a cancelled context: %v", err)
	}
}

// bigState is one network with many endpoints, for measuring Apply.
func bigState(locals, remotes int) State {
	st := State{Underlay: UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.1")}}
	n := Network{VNI: 100, Subnet: netip.MustParsePrefix("10.1.0.0/16"), Gateway: netip.MustParseAddr("10.1.0.1")}
	for i := 0; i < locals; i++ {
		id := fmt.Sprintf("%010xff", i+1)
		h, c := VethNames(id)
		n.Locals = append(n.Locals, LocalEndpoint{ID: id, HostIf: h, ContainerIf: c,
			MAC: net.HardwareAddr{2, 0, 0, 1, byte(i >> 8), byte(i)}, Addr: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 1, byte(i)}), 16)})
	}
	for i := 0; i < remotes; i++ {
		n.Remotes = append(n.Remotes, RemoteEndpoint{Addr: netip.AddrFrom4([4]byte{10, 1, 2 + byte(i>>8), byte(i)}),
			MAC: net.HardwareAddr{2, 0, 0, 2, byte(i >> 8), byte(i)}, VTEP: netip.AddrFrom4([4]byte{198, 18, 1, byte(i % 50)})})
	}
	st.Networks = []Network{n}
	return st
}

// BenchmarkApply measures a first Apply (everything created) and a no-op
// re-Apply of a network with 20 local and 500 remote endpoints.
func BenchmarkApply(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("kernel benchmark: needs root")
	}
	ns := func() netns.NsHandle {
		ch := make(chan netns.NsHandle, 1)
		go func() {
			runtime.LockOSThread()
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				ch <- -1
				return
			}
			h, _ := netns.Get()
			ch <- h
		}()
		return <-ch
	}
	st := bigState(20, 500)
	b.Run("create", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			h := ns()
			d, err := New(nil, Options{NetNS: h})
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Apply(context.Background(), st); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			d.Close()
			h.Close()
			b.StartTimer()
		}
	})
	b.Run("noop", func(b *testing.B) {
		h := ns()
		defer h.Close()
		d, err := New(nil, Options{NetNS: h})
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		if err := d.Apply(context.Background(), st); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := d.Apply(context.Background(), st); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// checkL2Table checks table bridge meshnet: present exactly when networks
// exist, its ten drops, and one element per local container in each set.
func checkL2Table(t *testing.T, host hostNS, st State) {
	t.Helper()
	out, err := runIn(host.ns, "nft", "list", "table", "bridge", "meshnet")
	if len(st.Networks) == 0 {
		if err == nil {
			t.Errorf("table bridge meshnet exists without networks:\n%s", out)
		}
		return
	}
	if err != nil {
		t.Errorf("table bridge meshnet: %v", err)
		return
	}
	if got := strings.Count(out, `drop comment "meshnet: `); got != len(l2Rules()) {
		t.Errorf("table bridge meshnet has %d meshnet drops, want %d:\n%s", got, len(l2Rules()), out)
	}
	for _, want := range []string{
		`iifname "mnh*" iifname . ether saddr != @port_mac counter`,
		`iifname "mnh*" iifname . ip saddr != @port_ip4 counter`,
		`iifname "mnh*" iifname . arp saddr ether != @port_mac counter`,
		`iifname "mnh*" iifname . arp saddr ip != @port_ip4 counter`,
		`oifname "mnh*" oifname . arp daddr ip != @port_ip4 counter`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table bridge meshnet lacks %q:\n%s", want, out)
		}
	}
	var wantMAC, wantIP []string
	for _, n := range st.Networks {
		for _, l := range n.Locals {
			wantMAC = append(wantMAC, fmt.Sprintf(`"%s" . %s`, l.HostIf, l.MAC))
			wantIP = append(wantIP, fmt.Sprintf(`"%s" . %v`, l.HostIf, l.Addr.Addr()))
		}
	}
	for set, want := range map[string][]string{"port_mac": wantMAC, "port_ip4": wantIP} {
		out := mustRunIn(t, host.ns, "nft", "list", "set", "bridge", "meshnet", set)
		got := regexp.MustCompile(`"mnh[^"]*" \. [0-9a-f:.]+`).FindAllString(out, -1)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("set bridge meshnet %s:\n got %q\nwant %q\n%s", set, got, want, out)
		}
	}
}

// TestHoldDeletes: a daemon that started with an empty state folder applies a
// state without its own network and endpoint while holding deletes: the
// container keeps its interface, bridge and entries (nothing deleted, nothing
// recreated); once deletes resume, what the state does not want goes.
func TestHoldDeletes(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	dockerLikeFirewall(t, host.ns)
	st := oneNetwork("198.18.0.1")
	d := newTestDataplane(t, host.ns)
	apply(t, d, st)
	before := linkIndexes(t, host.h)

	empty := State{Underlay: st.Underlay, HoldDeletes: true}
	apply(t, d, empty)
	checkKernel(t, host, st, 1500, "FORWARD") // everything of st is still there
	if after := linkIndexes(t, host.h); !mapsEqual(before, after) {
		t.Errorf("links changed while deletes were held: %v -> %v", before, after)
	}

	empty.HoldDeletes = false
	apply(t, d, empty)
	checkKernel(t, host, State{Underlay: st.Underlay}, 1500, "FORWARD")
}
