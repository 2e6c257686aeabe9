// Command vxlansend sends hand-made VXLAN packets: an inner Ethernet frame
// carrying one IPv4 UDP datagram, wrapped in a VXLAN header for a chosen VNI.
// TestInjection (e2e/firewall_test.go) runs it in containers and as
// unprivileged and root processes on simulated hosts, to show which of them
// can get a frame into an overlay. It is static (CGO_ENABLED=0), so it runs in
// the suite's busybox image too.
//
// With -spoof the outer packet is written whole on a raw socket (root or
// CAP_NET_RAW, as a container has by default), with the given source address.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
)

func main() {
	to := flag.String("to", "", "outer destination ADDR:PORT (a host's VXLAN port)")
	vni := flag.Uint("vni", 0, "VXLAN network identifier")
	dstMAC := flag.String("dst-mac", "", "inner destination MAC (the target container's)")
	dstIP := flag.String("dst-ip", "", "inner destination IPv4 (the target container's)")
	srcMAC := flag.String("src-mac", "02:00:00:e2:e2:01", "inner source MAC")
	srcIP := flag.String("src-ip", "10.255.255.250", "inner source IPv4")
	sport := flag.Uint("sport", 40000, "inner UDP source port (tells test cases apart)")
	dport := flag.Uint("dport", 9999, "inner UDP destination port")
	count := flag.Int("count", 10, "packets to send")
	mark := flag.Uint("mark", 0, "SO_MARK of the socket (needs CAP_NET_ADMIN)")
	spoof := flag.String("spoof", "", "outer source IPv4, sent on a raw socket")
	flag.Parse()
	if err := run(*to, uint32(*vni), *srcMAC, *dstMAC, *dstIP, *srcIP, uint16(*sport), uint16(*dport), *count, int(*mark), *spoof); err != nil {
		fmt.Fprintln(os.Stderr, "vxlansend:", err)
		os.Exit(1)
	}
}

func run(to string, vni uint32, srcMAC, dstMAC, dstIP, srcIP string, sport, dport uint16, count, mark int, spoof string) error {
	dst, err := netip.ParseAddrPort(to)
	if err != nil {
		return fmt.Errorf("-to: %w", err)
	}
	mac, err := net.ParseMAC(dstMAC)
	if err != nil {
		return fmt.Errorf("-dst-mac: %w", err)
	}
	smac, err := net.ParseMAC(srcMAC)
	if err != nil {
		return fmt.Errorf("-src-mac: %w", err)
	}
	innerDst, err := netip.ParseAddr(dstIP)
	if err != nil {
		return fmt.Errorf("-dst-ip: %w", err)
	}
	innerSrc, err := netip.ParseAddr(srcIP)
	if err != nil {
		return fmt.Errorf("-src-ip: %w", err)
	}
	payload := vxlanFrame(vni, smac, mac, innerSrc, innerDst, sport, dport, []byte("meshnet e2e injection"))
	if spoof != "" {
		src, err := netip.ParseAddr(spoof)
		if err != nil {
			return fmt.Errorf("-spoof: %w", err)
		}
		return sendRaw(src, dst, payload, count, mark)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("udp socket: %w", err)
	}
	defer syscall.Close(fd)
	if mark != 0 {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, mark); err != nil {
			return fmt.Errorf("set SO_MARK: %w", err)
		}
	}
	sa := &syscall.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	return sendAll(count, func() error { return syscall.Sendto(fd, payload, 0, sa) })
}

// sendAll sends count times and reports how many went out; a send refused
// by the local firewall (EPERM) is counted, not fatal: that is what the test
// looks at.
func sendAll(count int, send func() error) error {
	sent, refused := 0, 0
	var last error
	for range count {
		if err := send(); err != nil {
			refused++
			last = err
			continue
		}
		sent++
	}
	fmt.Printf("sent %d refused %d", sent, refused)
	if last != nil {
		fmt.Printf(" (%v)", last)
	}
	fmt.Println()
	return nil
}

func sendRaw(src netip.Addr, dst netip.AddrPort, payload []byte, count, mark int) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(fd)
	if mark != 0 {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, mark); err != nil {
			return fmt.Errorf("set SO_MARK: %w", err)
		}
	}
	pkt := ipv4UDP(src, dst.Addr(), 47890, dst.Port(), payload)
	sa := &syscall.SockaddrInet4{Addr: dst.Addr().As4()}
	return sendAll(count, func() error { return syscall.Sendto(fd, pkt, 0, sa) })
}

// vxlanFrame: VXLAN header (flags I, VNI), Ethernet, IPv4, UDP, payload.
func vxlanFrame(vni uint32, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 64+len(payload))
	b[0] = 0x08
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	b = append(b, 0x08, 0x00)
	return append(b, ipv4UDP(src, dst, sport, dport, payload)...)
}

// ipv4UDP builds an IPv4 header with its checksum and a UDP header without
// one (0: none, allowed over IPv4).
func ipv4UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 28, 28+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(28+len(payload)))
	h[8] = 64 // TTL
	h[9] = syscall.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(h[20:], sport)
	binary.BigEndian.PutUint16(h[22:], dport)
	binary.BigEndian.PutUint16(h[24:], uint16(8+len(payload)))
	return append(h, payload...)
}
