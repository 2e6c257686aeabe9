package dataplane

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// newTestWireGuard opens a WireGuard dataplane on ns with a fresh key,
// closed at Cleanup.
func newTestWireGuard(t *testing.T, ns netns.NsHandle, wg WireGuardOptions) *Kernel {
	t.Helper()
	if wg.PrivateKey == (wgtypes.Key{}) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		wg.PrivateKey = k
	}
	d, err := New(testLogger(t), Options{NetNS: ns, WireGuard: wg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func applyWG(t *testing.T, d *Kernel, st State) {
	t.Helper()
	if err := d.Apply(context.Background(), st); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// dockerHost gives ns what a Docker host has: FORWARD policy DROP, a
// DOCKER-USER chain, and bridged frames through iptables (br_netfilter).
func dockerHost(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	const brnf = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	if _, err := os.Stat(brnf); errors.Is(err, os.ErrNotExist) {
		_ = exec.Command("modprobe", "br_netfilter").Run()
	}
	rootOld, err := os.ReadFile(brnf)
	if err != nil {
		t.Fatalf("br_netfilter unavailable (%v): cannot test Docker's FORWARD trap", err)
	}
	if err := inNS(ns, func() error { return os.WriteFile(brnf, []byte("1"), 0o644) }); err != nil {
		t.Fatalf("set bridge-nf-call-iptables: %v", err)
	}
	if now, _ := os.ReadFile(brnf); string(now) != string(rootOld) {
		t.Cleanup(func() { _ = os.WriteFile(brnf, rootOld, 0o644) })
	}
	dockerLikeFirewall(t, ns)
}

// TestWireGuardTwoHosts is the end-to-end check of the WireGuard dataplane on
// two simulated Docker hosts (FORWARD DROP, br_netfilter): a wireguard
// network whose blocks are split between the hosts, and a vxlan network
// beside it on host 1. Containers reach each other across hosts with their
// own addresses and leave through NAT; the vxlan network cannot reach the
// wireguard one, neither its local nor its remote addresses; the underlay
// carries only WireGuard UDP; a host that is no member is dropped.
func TestWireGuardTwoHosts(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHost(t, h1ns)
	dockerHost(t, h2ns)

	endpoint := testLocalEndpoint
	e1 := endpoint("w1w1w1w1w1w1w1", "02:42:00:00:08:05", "10.8.0.5/24")   // wireguard network, host 1's block
	e2 := endpoint("w2w2w2w2w2w2w2", "02:42:00:00:08:20", "10.8.0.20/24")  // wireguard network, host 2's block
	e3 := endpoint("v3v3v3v3v3v3v3", "02:43:00:00:00:13", "10.43.0.13/24") // vxlan network, host 1
	wgNet := func(l LocalEndpoint) Network {
		n := wgNetwork(8, "10.8.0.0/24", "10.8.0.1", l)
		return n
	}
	vxNet := Network{VNI: 43, Subnet: netip.MustParsePrefix("10.43.0.0/24"), Gateway: netip.MustParseAddr("10.43.0.1"),
		Locals: []LocalEndpoint{e3}}

	d1 := newTestWireGuard(t, h1ns, WireGuardOptions{})
	d2 := newTestWireGuard(t, h2ns, WireGuardOptions{})
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	peer := testWGPeer
	st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, Members: members,
		WireGuard: WireGuardState{Peers: []WireGuardPeer{peer(d2, "198.18.0.2:51820", "10.8.0.16/28")}},
		Networks:  []Network{wgNet(e1), vxNet}}
	st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, Members: members,
		WireGuard: WireGuardState{Peers: []WireGuardPeer{peer(d1, "198.18.0.1:51820", "10.8.0.0/28")}},
		Networks:  []Network{wgNet(e2)}}
	applyWG(t, d1, st1)
	applyWG(t, d2, st2)
	if s := status(d1); s.Device != WireGuardDevice || s.Mode == "" || len(s.Peers) != 1 || s.Port != DefaultWireGuardPort {
		t.Fatalf("status after Apply: %+v", s)
	} else {
		t.Logf("mode %s (%s); %s", s.Mode, s.Reason, s.Offloads)
		if s.Mode == ModeUserspace && !strings.Contains(s.Offloads, "TUN offloads on") {
			t.Errorf("embedded WireGuard without TUN offloads: %s", s.Offloads)
		}
	}

	c1 := moveIntoContainer(t, h1, e1, "10.8.0.1")
	c2 := moveIntoContainer(t, h2, e2, "10.8.0.1")
	c3 := moveIntoContainer(t, h1, e3, "10.43.0.1")
	applyWG(t, d1, st1)
	applyWG(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}

	srvC1 := serveIn(t, c1, "10.8.0.5:0")
	srvC2 := serveIn(t, c2, "10.8.0.20:0")
	srvGw := serveIn(t, h1ns, "10.8.0.1:0")
	srvH1 := serveIn(t, h1ns, "198.18.0.1:0")

	// Overlay traffic only while the underlay is captured: egress to an
	// underlay address is plain traffic, and meant to be.
	capture := startCapture(t, h1ns, "ulA")
	expectReach(t, c1, srvC2, "10.8.0.5") // across hosts, own address
	expectReach(t, c2, srvC1, "10.8.0.20")
	expectPing(t, c1, "10.8.0.20") // ICMP too
	checkOnlyWireGuard(t, capture(), 51820)

	expectReach(t, c1, srvGw, "10.8.0.5")   // the local gateway
	expectReach(t, c2, srvH1, "198.18.0.2") // egress, masqueraded
	expectBlocked(t, c3, srvC1)             // the vxlan network reaches neither local...
	expectBlocked(t, c3, srvC2)             // ...nor remote wireguard addresses
	expectBlocked(t, c1, "10.43.0.13:1")    // nor the other way

	// Peers see each other's handshakes.
	if s := status(d1); len(s.Peers) != 1 || s.Peers[0].LastHandshake.IsZero() || s.Peers[0].RxBytes == 0 {
		t.Errorf("peer status after traffic: %+v", s.Peers)
	}

	// A host that is no member: its WireGuard packets are dropped at input.
	addUnderlayAddr(t, h2, "ulB", "198.18.0.9")
	before := ruleCounter(t, h1ns, "inet meshnet", "meshnet: tunnel udp 51820 drop others")
	if err := inNS(h2ns, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("198.18.0.9")}, &net.UDPAddr{IP: net.ParseIP("198.18.0.1"), Port: 51820})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("not a member"))
		return err
	}); err != nil {
		t.Fatalf("stranger's send: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if after := ruleCounter(t, h1ns, "inet meshnet", "meshnet: tunnel udp 51820 drop others"); after <= before {
		t.Errorf("a non-member's packet to the WireGuard port was not dropped (counter %d -> %d)", before, after)
	}
	// Host 2 stops being a member: its tunnel is cut.
	notMember := st1
	notMember.Members = members[:1]
	applyWG(t, d1, notMember)
	expectBlocked(t, c1, srvC2)
	applyWG(t, d1, st1)
	expectReach(t, c1, srvC2, "10.8.0.5")

	// Drift: the device deleted by hand is recreated by the next Apply, with
	// the same key, and traffic flows again.
	mustRunIn(t, h1ns, "ip", "link", "del", WireGuardDevice)
	applyWG(t, d1, st1)
	expectReach(t, c1, srvC2, "10.8.0.5")

	// Host 2 goes (dead): its peer and routes go; what is left is host 1 alone.
	alone := st1
	alone.WireGuard.Peers = nil
	applyWG(t, d1, alone)
	if s := status(d1); len(s.Peers) != 0 {
		t.Errorf("peers after the host went: %+v", s.Peers)
	}
	if out := mustRunIn(t, h1ns, "ip", "route", "show", "proto", "109"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left after the host went:\n%s", out)
	}
	// No wireguard network left: the device goes.
	vxOnly := st1
	vxOnly.Networks = []Network{vxNet}
	applyWG(t, d1, vxOnly)
	if _, err := h1.LinkByName(WireGuardDevice); err == nil {
		t.Error("WireGuard device left without wireguard networks")
	}
	if err := d1.Teardown(); err != nil {
		t.Errorf("Teardown: %v", err)
	}
}

// startCapture runs tcpdump on dev inside ns; the returned function stops it
// and returns one line per packet.
func startCapture(t *testing.T, ns netns.NsHandle, dev string) func() []string {
	t.Helper()
	fd, err := unix.Dup(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "netns")
	out, err := os.CreateTemp(t.TempDir(), "capture")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/proc/self/fd/3", "tcpdump", "-i", dev, "-nn", "-l", "-U", "-q", "-p")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	f.Close()
	time.Sleep(500 * time.Millisecond) // tcpdump attaches
	stopped := false
	stop := func() []string {
		if !stopped {
			stopped = true
			time.Sleep(300 * time.Millisecond)
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		}
		b, _ := os.ReadFile(out.Name())
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if regexp.MustCompile(`^\d\d:\d\d:\d\d`).MatchString(l) {
				lines = append(lines, l)
			}
		}
		return lines
	}
	t.Cleanup(func() { stop() })
	return stop
}

// underlayControl matches the underlay's own IPv6 neighbour discovery and
// multicast listener reports (link-local or unspecified source, link-local
// multicast destination).
var underlayControl = regexp.MustCompile(`IP6 (::|fe80:[0-9a-f:]*) > ff02::[0-9a-f:]*: (HBH )?ICMP6`)

// checkOnlyWireGuard fails unless every IP packet on the underlay capture is
// UDP between WireGuard ports, and no overlay address shows in clear.
func checkOnlyWireGuard(t *testing.T, lines []string, port int) {
	t.Helper()
	wg := regexp.MustCompile(`IP 198\.18\.\d+\.\d+\.` + strconv.Itoa(port) + ` > 198\.18\.\d+\.\d+\.` + strconv.Itoa(port) + `: UDP`)
	n := 0
	for _, l := range lines {
		if strings.Contains(l, " ARP") || underlayControl.MatchString(l) {
			continue // the underlay's own neighbour discovery
		}
		if strings.Contains(l, "10.8.") || !wg.MatchString(l) {
			t.Errorf("underlay packet that is not WireGuard: %s", l)
			continue
		}
		n++
	}
	if n == 0 {
		t.Errorf("no WireGuard packet captured on the underlay (%d lines)", len(lines))
	}
	t.Logf("underlay capture: %d WireGuard packets, %d lines", n, len(lines))
}

// ruleCounter reads the packet counter of the rule of table ("FAMILY
// NAME") whose comment starts with comment.
func ruleCounter(t *testing.T, ns netns.NsHandle, table, comment string) int {
	t.Helper()
	out := mustRunIn(t, ns, "nft", append([]string{"list", "table"}, strings.Fields(table)...)...)
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ .*comment "` + regexp.QuoteMeta(comment))
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rule %q:\n%s", comment, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestWireGuardNoTUN: without a TUN device the dataplane says why it cannot
// start, leaves the wireguard network alone and still applies the vxlan one.
func TestWireGuardNoTUN(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	d := newTestWireGuard(t, host.ns, WireGuardOptions{Mode: ModeUserspace, TUNPath: filepath.Join(t.TempDir(), "no-tun")})
	st := oneNetwork("198.18.0.1")
	st.Networks = append(st.Networks, wgNetwork(8, "10.8.0.0/24", "10.8.0.1"))
	err := d.Apply(context.Background(), st)
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "TUN") {
		t.Fatalf("Apply without a TUN device: %v", err)
	}
	t.Logf("error: %v", err)
	if _, err := host.h.LinkByName("mnbr100"); err != nil {
		t.Errorf("the vxlan network was not applied: %v", err)
	}
	if _, err := host.h.LinkByName("mnbr8"); err == nil {
		t.Error("the wireguard network got a bridge without a WireGuard device")
	}
	if s := status(d); s.Mode != "" || !strings.Contains(s.Reason, "does not exist") {
		t.Errorf("status: %+v", s)
	}
}

// TestTUNWithoutRoot runs the TUN check as an unprivileged user (setpriv):
// the error says that root is needed.
func TestTUNWithoutRoot(t *testing.T) {
	if os.Getenv("MESHNET_TUN_CHECK") == "1" {
		fmt.Println(checkTUN("/dev/net/tun"))
		return
	}
	requireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed: cannot drop root for this test")
	}
	st, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
	if st.Mode().Perm()&0o006 != 0 {
		t.Skipf("/dev/net/tun is open to everyone (%v): an unprivileged open succeeds and TUNSETIFF is what fails", st.Mode())
	}
	dir, err := os.MkdirTemp("", "meshnet-tun")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	exe, _ := os.Executable()
	bin := filepath.Join(dir, "test")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^TestTUNWithoutRoot$")
	cmd.Env = append(os.Environ(), "MESHNET_TUN_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "needs root") {
		t.Errorf("unprivileged TUN check said:\n%s", out)
	}
}

func TestTUNError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&os.PathError{Op: "open", Path: "/dev/net/tun", Err: unix.ENOENT}, "does not exist"},
		{&os.PathError{Op: "open", Path: "/dev/net/tun", Err: unix.EACCES}, "needs root"},
		{unix.EPERM, "needs root"},
		{unix.EBUSY, "create TUN device"},
	} {
		if got := tunError("/dev/net/tun", tc.err).Error(); !strings.Contains(got, tc.want) {
			t.Errorf("tunError(%v) = %q, want it to say %q", tc.err, got, tc.want)
		}
	}
}

// TestWireGuardTransitions replays wireguard states in random orders (fixed
// seeds) on a Docker-like host: after each Apply the routes, the device and
// its peers are exactly what the state implies, and a second Apply changes
// nothing.
func TestWireGuardTransitions(t *testing.T) {
	requireRoot(t)
	keyA, keyB := testKey(t).String(), testKey(t).String()
	h, c := VethNames("t1t1t1t1t1t1t1")
	local := LocalEndpoint{ID: "t1t1t1t1t1t1t1", HostIf: h, ContainerIf: c, MAC: mustMAC("02:00:00:00:08:05"),
		Addr: netip.MustParsePrefix("10.8.0.5/24")}
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	base := State{Underlay: UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.1")},
		Members: []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}}
	with := func(nets []Network, peers ...WireGuardPeer) State {
		s := base
		s.Networks, s.WireGuard = nets, WireGuardState{Peers: peers}
		return s
	}
	wg := wgNetwork(8, "10.8.0.0/24", "10.8.0.1", local)
	vx := Network{VNI: 9, Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1")}
	a := WireGuardPeer{PublicKey: keyA, Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"), AllowedIPs: pfx("10.8.0.16/28")}
	aMoved := a
	aMoved.Endpoint = netip.MustParseAddrPort("198.18.0.3:51820")
	aMoved.AllowedIPs = pfx("10.8.0.16/28", "10.8.0.48/28")
	b := WireGuardPeer{PublicKey: keyB, Endpoint: netip.MustParseAddrPort("198.18.0.4:51820"), Keepalive: 25 * time.Second,
		AllowedIPs: pfx("10.8.0.32/28", "10.8.0.0/28")} // b's block holds the local container
	states := []struct {
		name   string
		st     State
		routes []string
	}{
		{"empty", with(nil), nil},
		{"vxlan only", with([]Network{vx}, a), nil},
		{"one peer", with([]Network{wg}, a), []string{"10.8.0.16/28 dev mnwg0"}},
		{"peer moved", with([]Network{wg, vx}, aMoved), []string{"10.8.0.16/28 dev mnwg0", "10.8.0.48/28 dev mnwg0"}},
		{"two peers", with([]Network{wg}, a, b), []string{"10.8.0.0/28 dev mnwg0", "10.8.0.16/28 dev mnwg0",
			"10.8.0.32/28 dev mnwg0", "10.8.0.5 dev mnbr8"}},
		{"no peers", with([]Network{wg}), nil},
	}
	for seed := int64(1); seed <= 2; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			host := newHost(t, "198.18.0.1")
			dockerLikeFirewall(t, host.ns)
			d := newTestWireGuard(t, host.ns, WireGuardOptions{})
			rng := rand.New(rand.NewSource(seed))
			for _, i := range append(rng.Perm(len(states)), rng.Perm(len(states))...) {
				s := states[i]
				applyWG(t, d, s.st)
				checkWireGuard(t, host, d, s.st, s.routes)
				if t.Failed() {
					t.Fatalf("after applying %q", s.name)
				}
				applyWG(t, d, s.st)
				if len(d.changes) != 0 {
					t.Fatalf("re-applying %q changed %q", s.name, d.changes)
				}
			}
			if err := d.Teardown(); err != nil {
				t.Fatalf("Teardown: %v", err)
			}
			checkWireGuard(t, host, d, with(nil), nil)
		})
	}
}

// checkWireGuard checks the device, its peers and meshnet's routes against st.
func checkWireGuard(t *testing.T, host hostNS, d *Kernel, st State, routes []string) {
	t.Helper()
	wantDev := false
	for _, n := range st.Networks {
		wantDev = wantDev || n.wireguard()
	}
	_, err := host.h.LinkByName(WireGuardDevice)
	if (err == nil) != wantDev {
		t.Errorf("device %s exists: %v, want %v", WireGuardDevice, err == nil, wantDev)
	}
	var got []string
	var rs []struct {
		Dst string `json:"dst"`
		Dev string `json:"dev"`
	}
	mustJSON(t, mustRunIn(t, host.ns, "ip", "-j", "route", "show", "proto", "109"), &rs)
	for _, r := range rs {
		got = append(got, r.Dst+" dev "+r.Dev)
	}
	slices.Sort(got)
	want := slices.Clone(routes)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("routes\n got %q\nwant %q", got, want)
	}
	if !wantDev {
		return
	}
	var gotPeers, wantPeers []string
	for _, p := range status(d).Peers {
		gotPeers = append(gotPeers, p.PublicKey+" "+p.Endpoint+" "+strings.Join(p.AllowedIPs, ","))
	}
	for _, p := range st.WireGuard.normalized().Peers {
		var as []string
		for _, a := range p.AllowedIPs {
			as = append(as, a.String())
		}
		wantPeers = append(wantPeers, p.PublicKey+" "+p.Endpoint.String()+" "+strings.Join(as, ","))
	}
	slices.Sort(gotPeers)
	slices.Sort(wantPeers)
	if !slices.Equal(gotPeers, wantPeers) {
		t.Errorf("peers\n got %q\nwant %q", gotPeers, wantPeers)
	}
}

// TestWireGuardKernelMode drives the kernel's WireGuard through wgctrl. It
// needs the wireguard module, which this machine lacks (HOSTS.md): there it
// checks that kernel mode says so, and skips the rest.
func TestWireGuardKernelMode(t *testing.T) {
	requireRoot(t)
	host := newHost(t, "198.18.0.1")
	d := newTestWireGuard(t, host.ns, WireGuardOptions{Mode: ModeKernel})
	peer := WireGuardPeer{PublicKey: testKey(t).String(), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"),
		Keepalive: 25 * time.Second, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.16/28")}}
	st := State{Underlay: UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.1")},
		Networks: []Network{wgNetwork(8, "10.8.0.0/24", "10.8.0.1")}, WireGuard: WireGuardState{Peers: []WireGuardPeer{peer}}}
	err := d.Apply(context.Background(), st)
	if errors.Is(err, errNoKernelWG) {
		if s := status(d); s.Mode != "" || !strings.Contains(s.Reason, "no WireGuard module") {
			t.Errorf("status without the module: %+v", s)
		}
		t.Skipf("no kernel WireGuard module here: %v", err)
	}
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	l, err := host.h.LinkByName(WireGuardDevice)
	if err != nil || l.Type() != "wireguard" {
		t.Fatalf("kernel device: %v %v", l, err)
	}
	checkWireGuard(t, host, d, st, []string{"10.8.0.16/28 dev mnwg0"})
	applyWG(t, d, st)
	if len(d.changes) != 0 {
		t.Errorf("re-apply changed %q", d.changes)
	}
	// Close leaves a kernel device running; a new dataplane adopts it.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := host.h.LinkByName(WireGuardDevice); err != nil {
		t.Errorf("Close removed the kernel device: %v", err)
	}
	d2 := newTestWireGuard(t, host.ns, WireGuardOptions{Mode: ModeKernel, PrivateKey: d.wg.opts.PrivateKey})
	applyWG(t, d2, st)
	checkWireGuard(t, host, d2, st, []string{"10.8.0.16/28 dev mnwg0"})
}

// status is the device's status of a dataplane that runs WireGuard.
func status(d *Kernel) WireGuardStatus {
	s, _ := d.WireGuardStatus()
	return s
}
