// Package netaddr holds address arithmetic that net/netip leaves out and
// that more than one meshnet package needs.
package netaddr

import "net/netip"

// Last is the highest address of p: its broadcast address for IPv4.
func Last(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
