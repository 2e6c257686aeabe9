package dns

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Where a query came in. A UDP source address is whatever the sender wrote
// into the packet: a host on the underlay can send a query "from" a
// container's address. The interface the kernel received it on is not the
// sender's to choose, so the UDP listeners ask for it with every datagram
// (IP_PKTINFO, IPV6_RECVPKTINFO) and recursion may depend on it
// (Config.RecursionInterface).

// pktinfoSpace holds one IPv4 or IPv6 packet-info control message.
var pktinfoSpace = max(unix.CmsgSpace(unix.SizeofInet4Pktinfo), unix.CmsgSpace(unix.SizeofInet6Pktinfo))

// arrivalConn wraps c, whose datagrams carry their arrival interface
// (udpSocketOptions asked for it at bind), for batch reads.
func arrivalConn(c *net.UDPConn) batchConn {
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		return ipv6.NewPacketConn(c)
	}
	return ipv4.NewPacketConn(c)
}

// arrivalIfindex reads the interface index from a datagram's control
// messages (in_pktinfo or in6_pktinfo); 0 when there is none. It runs for
// every query, so it must not allocate.
func arrivalIfindex(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ipi_ifindex; ... }
			return int(int32(binary.NativeEndian.Uint32(data[0:4])))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { struct in6_addr ipi6_addr; unsigned int ipi6_ifindex; }
			return int(binary.NativeEndian.Uint32(data[16:20]))
		}
		oob = rest
	}
	return 0
}

// arrival is a ResponseWriter that knows the interface its query came in
// on: the UDP listeners' writers.
type arrival interface{ arrivalIfindex() int }

// mayRecurse decides whether the query answered through w, from src, may
// have names outside the zone forwarded (and sees RA set). AllowRecursion
// judges the source. With RecursionInterface set, a UDP query must also
// have arrived on an interface it accepts: a forged source does not move
// a packet to another interface. TCP needs no such check, as its source
// answered the handshake; a UDP query whose interface is unknown (not from
// the listeners) is refused.
func (s *Server) mayRecurse(w dns.ResponseWriter, src netip.Addr) bool {
	if !s.cfg.AllowRecursion(src) {
		return false
	}
	if s.cfg.RecursionInterface == nil {
		return true
	}
	if a, ok := w.(arrival); ok {
		idx := a.arrivalIfindex()
		return idx > 0 && s.cfg.RecursionInterface(idx)
	}
	_, udp := remote(w)
	return !udp
}
