// Command l2probe is a test-only helper for the e2e suite (TestSniffSpoof):
// what a hostile container with CAP_NET_RAW can do on its own interface,
// run on a simulated host inside a container's network namespace
// (nsenter -t PID -n l2probe ...). It is never built into meshnet's binaries.
//
//	l2probe sniff -i eth0 -for 10s
//	    prints every frame the interface receives, one line each
//	    (rawframe.Frame.String), then "l2probe: captured N frames".
//	l2probe forge -i eth0 -mac OWN -ip OWN -victim-mac MAC -victim-ip IP -to-mac MAC -to-ip IP -rounds N -every 100ms -id 0x5a00
//	    sends, N times: an ICMP echo to TO with the victim's MAC and address
//	    (id), one with its own MAC and the victim's address (id+1), an ARP
//	    reply to TO saying the victim's address is at its own MAC, and an
//	    ARP request to all with the victim's address as sender; then
//	    "l2probe: sent N rounds".
//	l2probe ra -i eth0 -prefix fd00:bad::/64 -rounds 3
//	    sends N router advertisements to all nodes from the interface's
//	    link-local address, offering the prefix (on-link, autonomous) and
//	    itself as default router; then "l2probe: sent N router advertisements".
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/meshnet/meshnet/internal/rawframe"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: l2probe sniff|forge|ra [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "sniff":
		err = sniff(os.Args[2:])
	case "forge":
		err = forge(os.Args[2:])
	case "ra":
		err = routerAdvert(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "l2probe: %v\n", err)
		os.Exit(1)
	}
}

func sniff(args []string) error {
	fs := flag.NewFlagSet("sniff", flag.ExitOnError)
	ifname := fs.String("i", "eth0", "interface")
	dur := fs.Duration("for", 10*time.Second, "how long to capture")
	_ = fs.Parse(args)
	c, err := rawframe.Open(*ifname)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("l2probe: capturing")
	end := time.Now().Add(*dur)
	n := 0
	for time.Now().Before(end) {
		f, _, err := c.Recv(time.Until(end))
		if errors.Is(err, rawframe.ErrTimeout) {
			break
		}
		if err != nil {
			return err
		}
		fmt.Println(f)
		n++
	}
	fmt.Printf("l2probe: captured %d frames\n", n)
	return nil
}

func forge(args []string) error {
	fs := flag.NewFlagSet("forge", flag.ExitOnError)
	ifname := fs.String("i", "eth0", "interface")
	ownMAC := fs.String("mac", "", "own MAC")
	ownIP := fs.String("ip", "", "own address")
	vMAC := fs.String("victim-mac", "", "MAC to impersonate")
	vIP := fs.String("victim-ip", "", "address to impersonate")
	toMAC := fs.String("to-mac", "", "destination MAC")
	toIP := fs.String("to-ip", "", "destination address")
	rounds := fs.Int("rounds", 50, "how many times to send each frame")
	every := fs.Duration("every", 100*time.Millisecond, "pause between rounds")
	idText := fs.String("id", "0x5a00", "ICMP identifier of the forged echoes")
	_ = fs.Parse(args)
	id, err := strconv.ParseUint(*idText, 0, 16)
	if err != nil {
		return fmt.Errorf("-id: %w", err)
	}
	var macs [3]net.HardwareAddr
	for i, s := range []string{*ownMAC, *vMAC, *toMAC} {
		if macs[i], err = net.ParseMAC(s); err != nil {
			return err
		}
	}
	var ips [3]netip.Addr
	for i, s := range []string{*ownIP, *vIP, *toIP} {
		if ips[i], err = netip.ParseAddr(s); err != nil {
			return err
		}
	}
	own, victim, to := macs[0], macs[1], macs[2]
	ownA, victimA, toA := ips[0], ips[1], ips[2]
	c, err := rawframe.Open(*ifname)
	if err != nil {
		return err
	}
	defer c.Close()
	for r := range *rounds {
		seq := uint16(r + 1)
		for _, f := range [][]byte{
			rawframe.ICMPEcho(victim, to, victimA, toA, uint16(id), seq),
			rawframe.ICMPEcho(own, to, victimA, toA, uint16(id+1), seq),
			rawframe.ARP(own, to, rawframe.ARPReply, own, victimA, to, toA),
			rawframe.ARP(own, rawframe.Broadcast, rawframe.ARPRequest, own, victimA, make(net.HardwareAddr, 6), ownA),
		} {
			if err := c.Send(f); err != nil {
				return err
			}
		}
		time.Sleep(*every)
	}
	fmt.Printf("l2probe: sent %d rounds\n", *rounds)
	return nil
}

func routerAdvert(args []string) error {
	fs := flag.NewFlagSet("ra", flag.ExitOnError)
	ifname := fs.String("i", "eth0", "interface")
	prefix := fs.String("prefix", "fd00:bad::/64", "the prefix to offer")
	rounds := fs.Int("rounds", 3, "how many advertisements")
	_ = fs.Parse(args)
	p, err := netip.ParsePrefix(*prefix)
	if err != nil || !p.Addr().Is6() || p.Bits() != 64 {
		return fmt.Errorf("-prefix %q: want an IPv6 /64", *prefix)
	}
	ifi, err := net.InterfaceByName(*ifname)
	if err != nil {
		return err
	}
	// Receivers ignore advertisements from anything but a link-local
	// address.
	var src netip.Addr
	addrs, err := ifi.Addrs()
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Is6() && ip.IsLinkLocalUnicast() {
				src = ip
			}
		}
	}
	if !src.IsValid() {
		return fmt.Errorf("%s has no link-local IPv6 address", *ifname)
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, o := range [][2]int{{unix.IPV6_MULTICAST_HOPS, 255}, {unix.IPV6_MULTICAST_IF, ifi.Index}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o[0], o[1]); err != nil {
			return err
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: src.As16(), ZoneId: uint32(ifi.Index)}); err != nil {
		return fmt.Errorf("bind to %s: %w", src, err)
	}
	ra := []byte{
		134, 0, 0, 0, // type, code, checksum (the kernel fills it in)
		64, 0, 0x07, 0x08, // hop limit, flags, router lifetime 1800 s
		0, 0, 0, 0, 0, 0, 0, 0, // reachable time, retransmit timer
		3, 4, 64, 0xc0, // prefix information, /64, on-link and autonomous
		0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0, // valid and preferred lifetimes, reserved
	}
	a := p.Addr().As16()
	ra = append(ra, a[:]...)
	to := &unix.SockaddrInet6{Addr: [16]byte{0xff, 0x02, 15: 1}, ZoneId: uint32(ifi.Index)}
	for i := 0; i < *rounds; i++ {
		if err := unix.Sendto(fd, ra, 0, to); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("l2probe: sent %d router advertisements\n", *rounds)
	return nil
}
