package daemon

import (
	"maps"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/ipam"
)

// This file holds the pure translation from a store snapshot and IPAM's
// block owners to the WireGuard half of the dataplane state: which hosts are
// peers and which prefixes each carries. Peers are hosts, and AllowedIPs
// their address blocks, so the configuration grows with hosts and blocks,
// not with containers.

// block is a prefix of a pool and the node that owns it (ipam.Owners:
// each node's blocks merged into the fewest prefixes).
type block = ipam.Owned

// wireGuardNode is a node's WireGuard facts from its KindNode record.
type wireGuardNode struct {
	addr netip.Addr
	key  string
	port int
}

func wireGuardNodes(snap *gossip.Snapshot) map[string]wireGuardNode {
	out := map[string]wireGuardNode{}
	for name, n := range snap.View().Nodes {
		if n.Info.WireGuardKey == "" || n.Info.WireGuardPort <= 0 {
			continue
		}
		out[name] = wireGuardNode{addr: n.Addr, key: n.Info.WireGuardKey, port: n.Info.WireGuardPort}
	}
	return out
}

// desiredWireGuard computes the WireGuard device's peers for this node: every
// up node that publishes a WireGuard key and has a wireguard network this
// node has too. A peer's AllowedIPs are its blocks in those networks, plus
// each address its containers hold outside its own blocks (kept after a
// handoff, or in a conflict), so that every remote container is routed to
// the host that holds it, plus its data-path probe address (the probe
// through WireGuard, dataplane/probe.go). A dead node is no peer: its routes
// go with it, and come back if it does.
func desiredWireGuard(snap *gossip.Snapshot, blocks map[netip.Prefix][]block, port int, keepalive time.Duration) dataplane.WireGuardState {
	st := dataplane.WireGuardState{Port: port}
	self := snap.Self
	mine := map[netip.Prefix]bool{}
	members := map[netip.Prefix][]string{} // wireguard subnet -> nodes that have it
	for _, n := range networks(snap) {
		if n.info.Dataplane != dataplane.KindWireGuard {
			continue
		}
		// A dual-stack network's IPv6 pool is routed like its IPv4 one.
		for _, s := range []netip.Prefix{n.subnet.Masked(), n.subnet6.Masked()} {
			switch {
			case !s.IsValid():
			case n.owner == self:
				mine[s] = true
			default:
				members[s] = append(members[s], n.owner)
			}
		}
	}
	nodes := wireGuardNodes(snap)
	peers := map[string]bool{}
	allowed := map[string][]netip.Prefix{}
	// sharing[subnet][node]: node is a peer through this subnet.
	sharing := map[netip.Prefix]map[string]bool{}
	// In subnet order, so a peer's AllowedIPs come out the same every time.
	for _, subnet := range slices.SortedFunc(maps.Keys(mine), netip.Prefix.Compare) {
		sharing[subnet] = map[string]bool{}
		for _, owner := range members[subnet] {
			if _, ok := nodes[owner]; ok && owner != self && snap.Up(owner) {
				peers[owner] = true // a peer, blocks or not
				sharing[subnet][owner] = true
			}
		}
		for _, b := range blocks[subnet] {
			if sharing[subnet][b.Node] {
				allowed[b.Node] = append(allowed[b.Node], b.Prefix)
			}
		}
	}
	// Containers outside their host's blocks; the first holder (by node
	// name) wins an address two hosts hold, as WireGuard can route it to
	// one peer only.
	eps := endpoints(snap, true)
	sort.Slice(eps, func(i, j int) bool { return eps[i].owner < eps[j].owner })
	taken := map[netip.Addr]bool{}
	for _, e := range eps {
		if e.owner == self {
			taken[e.addr], taken[e.addr6] = true, true
		}
	}
	for _, e := range eps {
		for _, held := range []struct {
			subnet netip.Prefix
			addr   netip.Addr
		}{{e.subnet.Masked(), e.addr}, {e.subnet6.Masked(), e.addr6}} {
			s, a := held.subnet, held.addr
			if !a.IsValid() || !sharing[s][e.owner] || taken[a] {
				continue
			}
			taken[a] = true
			if !slices.ContainsFunc(allowed[e.owner], func(p netip.Prefix) bool { return p.Contains(a) }) {
				allowed[e.owner] = append(allowed[e.owner], netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	names := make([]string, 0, len(peers))
	for n := range peers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		wn := nodes[n]
		st.Peers = append(st.Peers, dataplane.WireGuardPeer{
			PublicKey:  wn.key,
			Endpoint:   netip.AddrPortFrom(wn.addr, uint16(wn.port)),
			Keepalive:  keepalive,
			AllowedIPs: append(allowed[n], dataplane.ProbePrefix(wn.addr)),
		})
	}
	return st
}

// memberAddrs are the underlay addresses of the nodes that are up (this one
// included): only they may reach the tunnel ports. Both the address a node
// publishes in its record and the one memberlist sees it at count: a node
// that has just come back is let in as soon as memberlist has it alive,
// before its record arrives by push/pull.
func memberAddrs(snap *gossip.Snapshot) []netip.Addr {
	var out []netip.Addr
	for node, a := range nodeAddrs(snap) {
		if snap.Up(node) {
			out = append(out, a)
		}
	}
	for node, m := range snap.Members {
		if a, err := netip.ParseAddr(m.Addr); err == nil && snap.Up(node) {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
