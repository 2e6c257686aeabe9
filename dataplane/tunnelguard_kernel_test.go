package dataplane

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestTunnelGuardsAndDockerBridges: on two Docker-like hosts, nothing but the
// tunnel itself gets a packet to a member's VXLAN port (a host process, a
// container of the overlay, a container on a docker0-like bridge, a container
// of host 2 forging host 1's address), while a host socket's own traffic into
// the overlay still flows; docker0 and the meshnet network cannot connect
// until AllowDockerBridges.
func TestTunnelGuardsAndDockerBridges(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)
	ep := func(id, mac, addr string) LocalEndpoint {
		h, c := VethNames(id)
		return LocalEndpoint{ID: id, HostIf: h, ContainerIf: c, MAC: mustMAC(mac), Addr: netip.MustParsePrefix(addr)}
	}
	e1 := ep("g1g1g1g1g1g1g1", "02:42:00:00:00:11", "10.42.0.11/24")
	e2 := ep("g2g2g2g2g2g2g2", "02:42:00:00:00:12", "10.42.0.12/24")
	net42 := func(l LocalEndpoint, r LocalEndpoint, vtep string) Network {
		return Network{VNI: 42, Subnet: netip.MustParsePrefix("10.42.0.0/24"), Gateway: netip.MustParseAddr("10.42.0.1"),
			Locals: []LocalEndpoint{l}, Remotes: []RemoteEndpoint{{Addr: r.Addr.Addr(), MAC: r.MAC, VTEP: netip.MustParseAddr(vtep)}}}
	}
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, VXLANPort: 4790, Members: members, Networks: []Network{net42(e1, e2, "198.18.0.2")}}
	st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, VXLANPort: 4790, Members: members, Networks: []Network{net42(e2, e1, "198.18.0.1")}}
	d1, d2 := newTestDataplane(t, h1ns), newTestDataplane(t, h2ns)
	apply(t, d1, st1)
	apply(t, d2, st2)
	c1 := moveIntoContainer(t, h1, e1, "10.42.0.1")
	c2 := moveIntoContainer(t, h2, e2, "10.42.0.1")
	dk := dockerBridge(t, h1ns, h1)

	srvC1 := serveIn(t, c1, "10.42.0.11:0")
	srvC2 := serveIn(t, c2, "10.42.0.12:0")
	srvDk := serveIn(t, dk, "172.17.0.2:0")
	expectReach(t, c1, srvC2, "10.42.0.11") // the overlay works

	// A host socket's traffic into the overlay: encapsulated with the
	// socket still attached, let through by the overlay mark.
	t.Run("host socket into the overlay", func(t *testing.T) {
		got, err := dialFromAddr(h1ns, "198.18.0.1", srvC2)
		if err != nil || got != "198.18.0.1" {
			t.Errorf("host 1 (from 198.18.0.1) to %s: %q, %v", srvC2, got, err)
		}
	})

	vx := "198.18.0.2:4790"
	t.Run("host process to a member's VXLAN port", func(t *testing.T) {
		before := meshnetCounter(t, h1ns, meshnetLocalOut, "tunnel udp 4790 drop host sockets to ip members")
		if err := sendUDP(h1ns, vx); !errors.Is(err, syscall.EPERM) {
			t.Errorf("send from host 1 to %s: %v, want EPERM (dropped at output)", vx, err)
		}
		if after := meshnetCounter(t, h1ns, meshnetLocalOut, "tunnel udp 4790 drop host sockets to ip members"); after <= before {
			t.Errorf("host-socket drop counter %d -> %d", before, after)
		}
	})
	t.Run("containers to a member's VXLAN port", func(t *testing.T) {
		before := meshnetCounter(t, h1ns, meshnetForward, "tunnel udp 4790 drop forwarded to ip members")
		for _, from := range []netns.NsHandle{c1, dk} {
			if err := sendUDP(from, vx); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		if after := meshnetCounter(t, h1ns, meshnetForward, "tunnel udp 4790 drop forwarded to ip members"); after < before+2 {
			t.Errorf("forward drop counter %d -> %d, want both containers' packets", before, after)
		}
	})
	t.Run("a container forging a member's address", func(t *testing.T) {
		// A meshnet container's forgery is dropped where it enters the
		// bridge (table bridge meshnet); one on a Docker bridge, which
		// meshnet does not police, reaches the input chain and fails its
		// reverse-path check there.
		before := l2Counters(t, h2ns)["from container: IPv4 source not its own"]
		if err := sendRawUDP(c2, "198.18.0.1", "198.18.0.2", 4790); err != nil {
			t.Fatalf("raw send: %v", err)
		}
		if n := l2Counters(t, h2ns)["from container: IPv4 source not its own"]; n != before+1 {
			t.Errorf("host 2's bridge dropped %d forged packets from a meshnet container, want 1", n-before)
		}
		accepted := meshnetCounter(t, h1ns, meshnetInput, "tunnel udp 4790 accept ip members on their route")
		dropped := meshnetCounter(t, h1ns, meshnetInput, "tunnel udp 4790 drop others")
		if err := sendRawUDP(dk, "198.18.0.2", "198.18.0.1", 4790); err != nil {
			t.Fatalf("raw send: %v", err)
		}
		if n := meshnetCounter(t, h1ns, meshnetInput, "tunnel udp 4790 drop others"); n != dropped+1 {
			t.Errorf("host 1 dropped %d forged packets from a docker0 container, want 1", n-dropped)
		}
		if n := meshnetCounter(t, h1ns, meshnetInput, "tunnel udp 4790 accept ip members on their route"); n != accepted {
			t.Errorf("host 1 accepted %d forged packets", n-accepted)
		}
	})

	t.Run("docker bridge apart", func(t *testing.T) {
		expectBlocked(t, dk, srvC1)
		expectBlocked(t, c1, srvDk)
	})
	allowed := st1
	allowed.AllowDockerBridges = true
	apply(t, d1, allowed)
	t.Run("docker bridge allowed", func(t *testing.T) {
		expectReach(t, dk, srvC1, "172.17.0.2")
		expectReach(t, c1, srvDk, "172.17.0.1") // masqueraded leaving the subnet
	})
	apply(t, d1, st1)
	t.Run("docker bridge apart again", func(t *testing.T) {
		expectBlocked(t, dk, srvC1)
	})
}

// dockerBridge makes a docker0 bridge (172.17.0.1/16) on the host with one
// container (172.17.0.2) and Docker's FORWARD accepts for it.
func dockerBridge(t *testing.T, hns netns.NsHandle, h *netlink.Handle) netns.NsHandle {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "docker0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr("172.17.0.1/16")
	if err := h.AddrAdd(br, a); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	ep := LocalEndpoint{HostIf: "dkh0", ContainerIf: "dkc0", Addr: netip.MustParsePrefix("172.17.0.2/16")}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.HostIf
	attrs.MasterIndex = br.Attrs().Index
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: ep.ContainerIf}); err != nil {
		t.Fatal(err)
	}
	l, _ := h.LinkByName(ep.HostIf)
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	for _, rule := range [][]string{
		{"-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT"},
	} {
		mustRunIn(t, hns, "iptables", append([]string{"-A", "FORWARD"}, rule...)...)
	}
	return moveIntoContainer(t, h, ep, "172.17.0.1")
}

var counterRE = regexp.MustCompile(`counter packets (\d+)`)

// meshnetCounter reads the packet counter of a table inet meshnet rule.
func meshnetCounter(t *testing.T, ns netns.NsHandle, chain, comment string) int {
	t.Helper()
	out := mustRunIn(t, ns, "nft", "list", "chain", "inet", "meshnet", chain)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `comment "`+commentPrefix+" "+comment+`"`) {
			if m := counterRE.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n
			}
		}
	}
	t.Fatalf("no rule %q in chain %s:\n%s", comment, chain, out)
	return 0
}

// dialFromAddr connects from local address src inside ns and returns what
// the server said.
func dialFromAddr(ns netns.NsHandle, src, addr string) (string, error) {
	var got string
	err := inNS(ns, func() error {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b := make([]byte, 64)
		n, _ := c.Read(b)
		got = string(b[:n])
		return nil
	})
	return got, err
}

// sendUDP sends one datagram to addr from inside ns.
func sendUDP(ns netns.NsHandle, addr string) error {
	return inNS(ns, func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(make([]byte, 64))
		return err
	})
}

// sendRawUDP sends one UDP datagram with a forged source address from inside
// ns (raw socket, IP header included).
func sendRawUDP(ns netns.NsHandle, src, dst string, port uint16) error {
	return inNS(ns, func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		p := make([]byte, 28+64)
		p[0], p[8], p[9] = 0x45, 64, syscall.IPPROTO_UDP
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		binary.BigEndian.PutUint16(p[20:], 47890)
		binary.BigEndian.PutUint16(p[22:], port)
		binary.BigEndian.PutUint16(p[24:], uint16(len(p)-20))
		return syscall.Sendto(fd, p, 0, &syscall.SockaddrInet4{Addr: d})
	})
}
