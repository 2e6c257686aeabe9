package dataplane

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// TestPublishedPortsAndInternal checks published ports and an internal
// network with traffic, on two simulated Docker hosts (FORWARD DROP,
// br_netfilter): a published TCP port answers another host (which the
// server sees with its own address), the host itself by its address and by
// 127.0.0.1, and the container itself through the host (hairpin); a UDP
// port published on one host address answers another host; both go when
// the mapping does. An internal network's containers reach each other
// across hosts and nothing else, even with a default route, and publish
// nothing.
func TestPublishedPortsAndInternal(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)

	endpoint, remote := testLocalEndpoint, testRemoteEndpoint
	web := endpoint("d1d1d1d1d1d1d1", "02:42:00:00:01:11", "10.42.0.11/24") // host 1, publishes 8081
	i1 := endpoint("d2d2d2d2d2d2d2", "02:44:00:00:01:14", "10.44.0.14/24")  // internal, host 1, "publishes" 8082
	i2 := endpoint("d3d3d3d3d3d3d3", "02:44:00:00:01:15", "10.44.0.15/24")  // internal, host 2
	web.Ports = []PortMapping{{Proto: "tcp", HostPort: 8081, ContainerPort: 8080},
		{Proto: "udp", HostIP: netip.MustParseAddr("198.18.0.1"), HostPort: 5353, ContainerPort: 53}}
	i1.Ports = []PortMapping{{Proto: "tcp", HostPort: 8082, ContainerPort: 8080}}
	netA := Network{VNI: 42, Subnet: netip.MustParsePrefix("10.42.0.0/24"), Gateway: netip.MustParseAddr("10.42.0.1"),
		Locals: []LocalEndpoint{web}}
	internal := func(locals []LocalEndpoint, remotes ...RemoteEndpoint) Network {
		return Network{VNI: 44, Subnet: netip.MustParsePrefix("10.44.0.0/24"), Gateway: netip.MustParseAddr("10.44.0.1"),
			Internal: true, Locals: locals, Remotes: remotes}
	}
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	st1 := State{Underlay: UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.1")}, VXLANPort: 4790, Members: members,
		Networks: []Network{netA, internal([]LocalEndpoint{i1}, remote(i2, "198.18.0.2"))}}
	st2 := State{Underlay: UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.2")}, VXLANPort: 4790, Members: members,
		Networks: []Network{internal([]LocalEndpoint{i2}, remote(i1, "198.18.0.1"))}}
	d1, d2 := newTestDataplane(t, h1ns), newTestDataplane(t, h2ns)
	apply(t, d1, st1)
	apply(t, d2, st2)
	cWeb := moveIntoContainer(t, h1, web, "10.42.0.1")
	// The internal containers get a default route anyway: one added by hand.
	cI1 := moveIntoContainer(t, h1, i1, "10.44.0.1")
	cI2 := moveIntoContainer(t, h2, i2, "10.44.0.1")
	apply(t, d1, st1)
	apply(t, d2, st2)

	serveIn(t, cWeb, "10.42.0.11:8080")
	serveUDPIn(t, cWeb, "10.42.0.11:53")
	srvI1 := serveIn(t, cI1, "10.44.0.14:8080")
	srvH2 := serveIn(t, h2ns, "198.18.0.2:0")
	srvH1 := serveIn(t, h1ns, "198.18.0.1:0")

	t.Run("published", func(t *testing.T) {
		expectReach(t, h2ns, "198.18.0.1:8081", "198.18.0.2") // the client's own address
		expectReach(t, h1ns, "198.18.0.1:8081", "198.18.0.1")
		expectReach(t, h1ns, "127.0.0.1:8081", "10.42.0.1")  // masqueraded to the bridge
		expectReach(t, cWeb, "198.18.0.1:8081", "10.42.0.1") // hairpin, to itself
		if got, err := askUDP(h2ns, "198.18.0.1:5353"); err != nil || got != "198.18.0.2" {
			t.Errorf("UDP 198.18.0.1:5353 from host 2: %q, %v; want an answer naming 198.18.0.2", got, err)
		}
	})
	t.Run("internal", func(t *testing.T) {
		expectReach(t, cI2, srvI1, "10.44.0.15") // across hosts
		expectBlocked(t, cI1, srvH2)             // not another host
		expectBlocked(t, cI2, srvH1)
		expectBlocked(t, cI1, "10.42.0.11:8080") // not another network
		if got, err := dialFrom(h2ns, "198.18.0.1:8082", time.Second); err == nil {
			t.Errorf("internal network published 8082 (server saw %s)", got)
		}
	})

	// Unpublished: the next connection is refused by host 1 itself.
	st1.Networks[0].Locals[0].Ports = nil
	apply(t, d1, st1)
	if got, err := dialFrom(h2ns, "198.18.0.1:8081", time.Second); err == nil {
		t.Errorf("8081 still published after the mapping went (server saw %s)", got)
	}
}

// serveUDPIn answers every datagram to addr inside ns with the source
// address it saw.
func serveUDPIn(t *testing.T, ns netns.NsHandle, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := inNS(ns, func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on udp %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(from.(*net.UDPAddr).IP.String()), from)
		}
	}()
}

// askUDP sends datagrams to addr from inside ns until one is answered.
func askUDP(ns netns.NsHandle, addr string) (string, error) {
	var got string
	err := inNS(ns, func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 64)
		deadline := time.Now().Add(reachDeadline)
		for {
			if _, err := c.Write([]byte("?")); err != nil && time.Now().After(deadline) {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.Read(buf)
			if err == nil {
				got = string(buf[:n])
				return nil
			}
			if time.Now().After(deadline) {
				return err
			}
		}
	})
	return got, err
}
