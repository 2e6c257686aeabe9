package rawframe

import (
	"net"
	"net/netip"
	"testing"
)

func TestBuildAndParse(t *testing.T) {
	a, _ := net.ParseMAC("02:00:00:00:00:0a")
	c, _ := net.ParseMAC("02:00:00:00:00:0c")
	ipA, ipC := netip.MustParseAddr("10.42.0.10"), netip.MustParseAddr("10.42.0.12")

	f := Parse(ICMPEcho(c, a, ipC, ipA, 0x5a5a, 1))
	if f.Src.String() != c.String() || f.Dst.String() != a.String() || f.EtherType != EtherIPv4 ||
		f.SrcIP != ipC || f.DstIP != ipA || !f.ICMPEcho || f.ICMPType != 8 || f.ICMPID != 0x5a5a {
		t.Errorf("echo parsed as %v", f)
	}
	if !f.Involves(c, netip.Addr{}) || !f.Involves(net.HardwareAddr{1, 2, 3, 4, 5, 6}, ipA) ||
		f.Involves(net.HardwareAddr{1, 2, 3, 4, 5, 6}, netip.MustParseAddr("10.42.0.99")) {
		t.Errorf("Involves wrong for %v", f)
	}
	// The IPv4 header checksum of a valid header sums to zero.
	if sum := checksum(ICMPEcho(c, a, ipC, ipA, 1, 1)[14:34]); sum != 0 {
		t.Errorf("IPv4 header checksum does not verify: %#x", sum)
	}

	f = Parse(ARP(a, Broadcast, ARPReply, a, ipC, c, ipA))
	if f.EtherType != EtherARP || f.ARPOp != ARPReply || f.ARPSrcHW.String() != a.String() || f.SrcIP != ipC || f.DstIP != ipA {
		t.Errorf("ARP parsed as %v", f)
	}
	if got := Parse([]byte{1, 2}); got.EtherType != 0 {
		t.Errorf("short frame parsed as %v", got)
	}
}
