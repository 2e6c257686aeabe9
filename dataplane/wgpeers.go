package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// planPeers returns the peer changes that take a device from the peers it has
// to the wanted ones, and nothing when they match, so that a re-Apply writes
// nothing and never resets a session. Peers are keyed by public key: a peer
// whose endpoint or AllowedIPs changed is updated in place (its session and
// counters survive), a peer no longer wanted is removed.
//
// An endpoint is written when the peer is new, has none, or its published
// endpoint differs from the one this dataplane last wrote (lastEndpoint):
// WireGuard follows a peer that roams (its packets authenticate from a new
// address) and Apply must not undo that on every pass.
//
// Writing a peer with its allowed prefixes replaced clears them and sets
// them again, and a packet for that peer in between finds no route through
// the device (the kernel reads the table without the lock the write holds):
// so a peer whose prefixes only grow, or stay, is written with the new ones
// added and the rest untouched. Only a peer that loses a prefix has them
// replaced (Linux before 6.16 cannot remove one alone).
//
// A prefix wanted for two peers would silently move to whichever WireGuard
// saw last; it is reported and given to the first peer only.
//
// hold is State.HoldDeletes: a restarted daemon's first states lack the
// other hosts' records, and the kernel device kept their peers and sessions
// while it was down. Holding, no peer is removed and no peer loses an
// allowed prefix it has (wanted ones are added to them): removing a peer and
// setting it again a moment later costs a handshake and the packets queued
// meanwhile.
func planPeers(want WireGuardState, have []wgtypes.Peer, lastEndpoint map[wgtypes.Key]netip.AddrPort, hold bool) ([]wgtypes.PeerConfig, error) {
	var errs []error
	haveBy := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range have {
		haveBy[p.PublicKey] = p
	}
	wanted := map[wgtypes.Key]bool{}
	claimed := map[netip.Prefix]string{}
	var out []wgtypes.PeerConfig
	for _, p := range want.normalized().Peers {
		key, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer key %q: %w", p.PublicKey, err))
			continue
		}
		if wanted[key] {
			errs = append(errs, fmt.Errorf("peer %s listed twice", shortKey(p.PublicKey)))
			continue
		}
		wanted[key] = true
		var allowed []netip.Prefix
		for _, a := range p.AllowedIPs {
			a = a.Masked()
			if other, dup := claimed[a]; dup {
				errs = append(errs, fmt.Errorf("prefix %v wanted for peers %s and %s: kept on the first", a, shortKey(other), shortKey(p.PublicKey)))
				continue
			}
			claimed[a] = p.PublicKey
			allowed = append(allowed, a)
		}
		h, exists := haveBy[key]
		has := peerPrefixes(h.AllowedIPs) // none when it does not exist
		if hold && exists {
			allowed = unionPrefixes(allowed, has)
		}
		needEndpoint := p.Endpoint.IsValid() && (!exists || h.Endpoint == nil || lastEndpoint[key] != p.Endpoint)
		if exists && !needEndpoint && h.PersistentKeepaliveInterval == p.Keepalive && slices.Equal(has, allowed) {
			continue
		}
		ka := p.Keepalive
		pc := wgtypes.PeerConfig{
			PublicKey:                   key,
			PersistentKeepaliveInterval: &ka,
			ReplaceAllowedIPs:           true,
			AllowedIPs:                  ipNets(allowed),
		}
		if exists {
			if added, only := addedPrefixes(has, allowed); only {
				pc.ReplaceAllowedIPs, pc.AllowedIPs = false, ipNets(added)
			}
		}
		if needEndpoint {
			pc.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
		}
		out = append(out, pc)
	}
	for _, h := range have {
		if !wanted[h.PublicKey] && !hold {
			out = append(out, wgtypes.PeerConfig{PublicKey: h.PublicKey, Remove: true})
		}
	}
	return out, errors.Join(errs...)
}

// addedPrefixes is what want has that have lacks, and whether want keeps all
// of have (so that adding those is the whole change).
func addedPrefixes(have, want []netip.Prefix) (added []netip.Prefix, only bool) {
	for _, p := range have {
		if !slices.Contains(want, p) {
			return nil, false
		}
	}
	for _, p := range want {
		if !slices.Contains(have, p) {
			added = append(added, p)
		}
	}
	return added, true
}

// unionPrefixes is a and b without duplicates, sorted as peerPrefixes sorts.
func unionPrefixes(a, b []netip.Prefix) []netip.Prefix {
	out := slices.Clone(a)
	for _, p := range b {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return sortedPrefixes(out)
}

// adoptEndpoints marks as written by this dataplane the published endpoint
// of each wanted peer the device already has with an endpoint, where it has
// written none yet. A restarted daemon finds the kernel device its previous
// run configured: without this its first Apply would write every peer again
// (what it last wrote is unknown), and writing a peer replaces its allowed
// prefixes, leaving an instant in which a packet to that peer finds no route
// through the device; a peer that roamed while the daemon was down would be
// sent back to its published address. The cost: an endpoint published anew
// while the daemon was down is not written (WireGuard follows the peer when
// it next sends, which its keepalives do).
func adoptEndpoints(want WireGuardState, have []wgtypes.Peer, last map[wgtypes.Key]netip.AddrPort) {
	has := map[wgtypes.Key]bool{}
	for _, h := range have {
		has[h.PublicKey] = h.Endpoint != nil
	}
	for _, p := range want.Peers {
		key, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil || !has[key] || !p.Endpoint.IsValid() {
			continue
		}
		if _, known := last[key]; !known {
			last[key] = p.Endpoint
		}
	}
}

// peerPrefixes converts a device's AllowedIPs, sorted.
func peerPrefixes(ns []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ns))
	for _, n := range ns {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), ones).Masked())
	}
	return sortedPrefixes(out)
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, *prefixIPNet(p))
	}
	return out
}

// describePeerChange says what one change does, for the change log.
func describePeerChange(pc wgtypes.PeerConfig) string {
	k := shortKey(pc.PublicKey.String())
	if pc.Remove {
		return "remove WireGuard peer " + k
	}
	s := fmt.Sprintf("set WireGuard peer %s allowed-ips %v", k, peerPrefixes(pc.AllowedIPs))
	if pc.Endpoint != nil {
		s += " endpoint " + pc.Endpoint.String()
	}
	if pc.PersistentKeepaliveInterval != nil && *pc.PersistentKeepaliveInterval > 0 {
		s += " keepalive " + pc.PersistentKeepaliveInterval.Round(time.Second).String()
	}
	return s
}
