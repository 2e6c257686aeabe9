package dataplane

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// WireGuardDevice is the name of the host's one WireGuard device. Every
// wireguard network routes through it: peers are hosts, not networks, so the
// configuration grows with the number of hosts and their address blocks, and
// a host pair holds one session whatever the number of networks they share.
const WireGuardDevice = "mnwg0"

// DefaultWireGuardPort is WireGuard's usual port, used when
// WireGuardState.Port is 0.
const DefaultWireGuardPort = 51820

// WireGuard adds to each packet an outer IP header, UDP (8) and its own
// header and tag (32): 60 bytes over IPv4, 80 over IPv6.
const (
	WireGuardOverhead4 = 60
	WireGuardOverhead6 = 80
)

// WireGuardState is the desired configuration of the WireGuard device.
type WireGuardState struct {
	Port  int // UDP listen port; 0 = DefaultWireGuardPort
	Peers []WireGuardPeer
}

// WireGuardPeer is one other host.
type WireGuardPeer struct {
	// PublicKey is the peer's base64 public key; peers are identified by it,
	// so a changed endpoint updates the peer in place and keeps its session.
	PublicKey string
	// Endpoint is the peer's published underlay address and port. It is
	// written when it differs from what this dataplane last wrote for the
	// peer, not when WireGuard's own roaming moved it.
	Endpoint netip.AddrPort
	// Keepalive sends an empty packet this often, so a NAT keeps the
	// mapping open; 0 = off.
	Keepalive time.Duration
	// AllowedIPs are the prefixes the peer holds (its address blocks, and
	// single addresses it holds in blocks it does not own). WireGuard
	// accepts from the peer only packets with these sources, and Apply
	// routes them through the device.
	AllowedIPs []netip.Prefix
}

func (w WireGuardState) port() int {
	if w.Port == 0 {
		return DefaultWireGuardPort
	}
	return w.Port
}

// normalized sorts peers by key and their AllowedIPs, so that equal
// configurations compare equal.
func (w WireGuardState) normalized() WireGuardState {
	out := WireGuardState{Port: w.Port, Peers: make([]WireGuardPeer, len(w.Peers))}
	for i, p := range w.Peers {
		p.AllowedIPs = sortedPrefixes(p.AllowedIPs)
		out.Peers[i] = p
	}
	slices.SortFunc(out.Peers, func(a, b WireGuardPeer) int { return cmp.Compare(a.PublicKey, b.PublicKey) })
	return out
}

func (w WireGuardState) equal(o WireGuardState) bool {
	if w.port() != o.port() || len(w.Peers) != len(o.Peers) {
		return false
	}
	for i, p := range w.Peers {
		q := o.Peers[i]
		if p.PublicKey != q.PublicKey || p.Endpoint != q.Endpoint || p.Keepalive != q.Keepalive ||
			!slices.Equal(p.AllowedIPs, q.AllowedIPs) {
			return false
		}
	}
	return true
}

// sortedPrefixes returns a sorted, deduplicated copy of ps.
func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
