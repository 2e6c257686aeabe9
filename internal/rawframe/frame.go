package rawframe

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Ether types.
const (
	EtherIPv4 = 0x0800
	EtherARP  = 0x0806
	EtherIPv6 = 0x86dd
)

// ARP operations.
const (
	ARPRequest = 1
	ARPReply   = 2
)

// Broadcast is the Ethernet broadcast address.
var Broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func ethernet(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := make([]byte, 14)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherType)
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ICMPEcho is an Ethernet frame carrying an IPv4 ICMP echo request from
// src to dst with the given identifier; the payload pads it to 64 bytes.
func ICMPEcho(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, id, seq uint16) []byte {
	icmp := make([]byte, 8+32)
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[6:8], seq)
	copy(icmp[8:], "meshnet rawframe forged echo....")
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))

	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(icmp)))
	binary.BigEndian.PutUint16(ip[4:6], id^seq)
	ip[8] = 64 // TTL
	ip[9] = 1  // ICMP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))

	f := ethernet(dstMAC, srcMAC, EtherIPv4)
	f = append(f, ip...)
	return append(f, icmp...)
}

// ARP is an Ethernet frame from srcMAC to dstMAC carrying an ARP message:
// sender sha/spa, target tha/tpa.
func ARP(srcMAC, dstMAC net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], EtherIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha)
	s := spa.As4()
	copy(a[14:18], s[:])
	copy(a[18:24], tha)
	t := tpa.As4()
	copy(a[24:28], t[:])
	return append(ethernet(dstMAC, srcMAC, EtherARP), a...)
}

// Frame is what a captured frame says about who talks to whom.
type Frame struct {
	Dst, Src  net.HardwareAddr
	EtherType uint16
	// IPv4: the packet's addresses; ARP: sender and target addresses.
	SrcIP, DstIP netip.Addr
	// ARP only.
	ARPOp    uint16
	ARPSrcHW net.HardwareAddr
	// ICMP echo request (8) or reply (0) only, with ICMPEcho set.
	ICMPEcho bool
	ICMPType uint8
	ICMPID   uint16
	// Outgoing is set for frames the capturing interface sent itself.
	Outgoing bool
}

// Parse reads the addresses of an Ethernet frame; what it cannot read it
// leaves zero.
func Parse(b []byte) Frame {
	var f Frame
	if len(b) < 14 {
		return f
	}
	f.Dst, f.Src = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	f.EtherType = binary.BigEndian.Uint16(b[12:14])
	p := b[14:]
	switch f.EtherType {
	case EtherIPv4:
		if len(p) < 20 {
			return f
		}
		f.SrcIP, _ = netip.AddrFromSlice(p[12:16])
		f.DstIP, _ = netip.AddrFromSlice(p[16:20])
		ihl := int(p[0]&0x0f) * 4
		if p[9] == 1 && len(p) >= ihl+8 {
			if t := p[ihl]; t == 0 || t == 8 {
				f.ICMPEcho, f.ICMPType = true, t
				f.ICMPID = binary.BigEndian.Uint16(p[ihl+4 : ihl+6])
			}
		}
	case EtherARP:
		if len(p) < 28 {
			return f
		}
		f.ARPOp = binary.BigEndian.Uint16(p[6:8])
		f.ARPSrcHW = net.HardwareAddr(p[8:14])
		f.SrcIP, _ = netip.AddrFromSlice(p[14:18])
		f.DstIP, _ = netip.AddrFromSlice(p[24:28])
	}
	return f
}

func (f Frame) String() string {
	dir := "in"
	if f.Outgoing {
		dir = "out"
	}
	switch f.EtherType {
	case EtherIPv4:
		s := fmt.Sprintf("%s %s > %s IPv4 %v > %v", dir, f.Src, f.Dst, f.SrcIP, f.DstIP)
		if f.ICMPEcho {
			s += fmt.Sprintf(" icmp type %d id %#x", f.ICMPType, f.ICMPID)
		}
		return s
	case EtherARP:
		return fmt.Sprintf("%s %s > %s ARP op %d sender %s %v target %v", dir, f.Src, f.Dst, f.ARPOp, f.ARPSrcHW, f.SrcIP, f.DstIP)
	}
	return fmt.Sprintf("%s %s > %s ether type %#04x", dir, f.Src, f.Dst, f.EtherType)
}

// Involves reports whether the frame is addressed from or to mac or ip, at
// either layer; a nil mac or an invalid ip matches nothing.
func (f Frame) Involves(mac net.HardwareAddr, ip netip.Addr) bool {
	if mac != nil && (f.Src.String() == mac.String() || f.Dst.String() == mac.String() ||
		f.ARPSrcHW.String() == mac.String()) {
		return true
	}
	return ip.IsValid() && (f.SrcIP == ip || f.DstIP == ip)
}
