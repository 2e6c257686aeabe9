package daemon

import (
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
)

// This file holds the pure translations from one store Snapshot to what the
// kernel and the DNS server should hold. They are recomputed whole on every
// change (reconcile from full state), so nothing depends on having seen
// every event.

// network is a KindNetwork record of the snapshot's typed view
// (gossip.View: decoded and checked once per snapshot).
type network struct {
	owner   string
	info    gossip.NetworkInfo
	subnet  netip.Prefix
	gateway netip.Addr
	// subnet6 and gateway6: a dual-stack network's IPv6 half.
	subnet6  netip.Prefix
	gateway6 netip.Addr
}

// subnets returns the network's subnets: its own, and the IPv6 half of a dual-stack one.
func (n network) subnets() []netip.Prefix {
	if n.subnet6.IsValid() {
		return []netip.Prefix{n.subnet, n.subnet6}
	}
	return []netip.Prefix{n.subnet}
}

// endpoint is a KindEndpoint record of the snapshot's typed view.
type endpoint struct {
	id     string
	owner  string
	info   gossip.EndpointInfo
	subnet netip.Prefix
	addr   netip.Addr
	// subnet6 and addr6: its IPv6 half on a dual-stack network.
	subnet6 netip.Prefix
	addr6   netip.Addr
	mac     net.HardwareAddr
}

// networks lists the snapshot's networks.
func networks(snap *gossip.Snapshot) []network {
	v := snap.View()
	out := make([]network, 0, len(v.Networks))
	for _, n := range v.Networks {
		out = append(out, network{owner: n.Owner, info: n.Info, subnet: n.Subnet, gateway: n.Gateway,
			subnet6: n.Subnet6, gateway6: n.Gateway6})
	}
	return out
}

// endpoints lists the snapshot's endpoints that have a MAC (one without
// has nothing to forward to; ipam still counts its address), of every node
// or, with upOnly, of the nodes that are up.
func endpoints(snap *gossip.Snapshot, upOnly bool) []endpoint {
	v := snap.View()
	out := make([]endpoint, 0, len(v.Endpoints))
	for _, e := range v.Endpoints {
		if e.MAC == nil || upOnly && !e.Up {
			continue
		}
		out = append(out, endpointOf(e))
	}
	return out
}

func endpointOf(e gossip.Endpoint) endpoint {
	return endpoint{id: e.ID, owner: e.Owner, info: e.Info, subnet: e.Subnet, addr: e.Addr, subnet6: e.Subnet6, addr6: e.Addr6, mac: e.MAC}
}

// nodeAddrs maps node names to their underlay address from KindNode records.
func nodeAddrs(snap *gossip.Snapshot) map[string]netip.Addr {
	nodes := snap.View().Nodes
	out := make(map[string]netip.Addr, len(nodes))
	for name, n := range nodes {
		out[name] = n.Addr
	}
	return out
}

// desiredDataplane is the kernel state for this node: its own networks with
// its own endpoints as veths, and every endpoint of an up node on the same
// subnet as a remote (FDB + neighbour entry towards that node's underlay
// address).
func desiredDataplane(snap *gossip.Snapshot, underlay dataplane.UnderlayInfo, vxlanPort int) dataplane.State {
	st := dataplane.State{Underlay: underlay, VXLANPort: vxlanPort}
	self := snap.Self
	nodes := nodeAddrs(snap)
	var local []network
	for _, n := range networks(snap) {
		if n.owner == self && (n.info.Dataplane == dataplane.KindVXLAN || n.info.Dataplane == dataplane.KindWireGuard) {
			local = append(local, n)
		}
	}
	eps := endpoints(snap, true)
	for _, n := range local {
		dn := dataplane.Network{
			VNI:        n.info.VNI,
			Subnet:     n.subnet,
			Gateway:    n.gateway,
			Subnet6:    n.subnet6,
			Gateway6:   n.gateway6,
			IPv6Routed: n.info.IPv6Egress == gossip.IPv6EgressRouted,
			MTU:        n.info.MTU,
			Kind:       n.info.Dataplane,
			Internal:   n.info.Internal,
		}
		for _, e := range eps {
			if e.subnet != n.subnet {
				continue
			}
			// An IPv6 address outside this host's view of the IPv6
			// subnet (a record of a network recreated with another
			// one) is not forwarded to.
			addr6 := e.addr6
			if !n.subnet6.Contains(addr6) {
				addr6 = netip.Addr{}
			}
			if e.owner == self {
				host, cont := dataplane.VethNames(e.id)
				l := dataplane.LocalEndpoint{
					ID: e.id, HostIf: host, ContainerIf: cont, MAC: e.mac,
					Addr:  netip.PrefixFrom(e.addr, n.subnet.Bits()),
					Ports: portMappings(e.info.Published),
				}
				if addr6.IsValid() {
					l.Addr6 = netip.PrefixFrom(addr6, n.subnet6.Bits())
				}
				dn.Locals = append(dn.Locals, l)
				continue
			}
			vtep, ok := nodes[e.owner]
			if !ok || vtep == underlay.Addr {
				continue // not reachable yet: its node record has not arrived
			}
			if dn.Kind == dataplane.KindWireGuard {
				// Routed by address block (desiredWireGuard). Only its
				// IPv6 address is listed: the bridge answers neighbour
				// solicitations for it (proxy_ndp takes each address).
				for _, a := range []netip.Addr{e.addr, addr6} {
					if a.Is6() {
						dn.Remotes = append(dn.Remotes, dataplane.RemoteEndpoint{Addr: a, MAC: e.mac, VTEP: vtep})
					}
				}
				continue
			}
			if !sameFamily(vtep, underlay.Addr) {
				continue // out of a vxlan device's reach: see underlayFamilyProblems
			}
			dn.Remotes = append(dn.Remotes, dataplane.RemoteEndpoint{Addr: e.addr, MAC: e.mac, VTEP: vtep})
			if addr6.IsValid() {
				dn.Remotes = append(dn.Remotes, dataplane.RemoteEndpoint{Addr: addr6, MAC: e.mac, VTEP: vtep})
			}
		}
		st.Networks = append(st.Networks, dn)
	}
	sort.Slice(st.Networks, func(i, j int) bool { return st.Networks[i].VNI < st.Networks[j].VNI })
	return st
}

// sameFamily reports whether two underlay addresses are of one family: a
// vxlan device sends over IPv4 or over IPv6, never both.
func sameFamily(a, b netip.Addr) bool { return a.Unmap().Is4() == b.Unmap().Is4() }

// underlayFamilyProblems names the up peers whose underlay address is of
// the other family than this host's: VXLAN does not reach them (their
// containers on vxlan networks are skipped as remotes, and so is their
// VXLAN data-path probe).
func underlayFamilyProblems(snap *gossip.Snapshot) []string {
	nodes := nodeAddrs(snap)
	self, ok := nodes[snap.Self]
	if !ok {
		return nil
	}
	fam := func(a netip.Addr) string {
		if a.Unmap().Is4() {
			return "IPv4"
		}
		return "IPv6"
	}
	var names []string
	for name, a := range nodes {
		if name != snap.Self && snap.Up(name) && !sameFamily(a, self) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []string
	for _, name := range names {
		a := nodes[name]
		out = append(out, fmt.Sprintf("peer %s is at %s (%s), this host at %s (%s): VXLAN carries one family, so vxlan networks do not reach it; "+
			"give every host an underlay address of one family (--advertise-addr)", name, a, fam(a), self, fam(self)))
	}
	return out
}

// ownPublished lists the ports this node's endpoint records publish, on
// networks that are not internal.
func ownPublished(snap *gossip.Snapshot) []published {
	internal := map[string]bool{}
	for _, n := range networks(snap) {
		if n.owner == snap.Self && n.info.Internal {
			internal[n.info.Subnet] = true
		}
	}
	var out []published
	for _, e := range endpoints(snap, false) {
		if e.owner == snap.Self && !internal[e.info.Subnet] {
			out = append(out, parsePublishedList(e.info.Published)...)
		}
	}
	return out
}

// dnsEntries lists every healthy endpoint of an up node, for the DNS table.
func dnsEntries(snap *gossip.Snapshot) []dns.Entry {
	var out []dns.Entry
	for _, e := range endpoints(snap, true) {
		if !e.info.Healthy {
			continue
		}
		out = append(out, dns.Entry{
			Container: e.info.Container,
			Services:  e.info.Services,
			Network:   e.info.Network,
			Subnet:    e.subnet,
			Addr:      e.addr,
			Addr6:     e.addr6,
			Node:      e.owner,
			Ports:     dnsPorts(e.info.Ports),
		})
	}
	return out
}

// dnsPorts parses an endpoint record's "80/tcp" ports; others are skipped
// (records come from other nodes, possibly newer ones).
func dnsPorts(ports []string) []dns.Port {
	var out []dns.Port
	for _, p := range ports {
		num, proto, _ := strings.Cut(p, "/")
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 || proto == "" {
			continue
		}
		out = append(out, dns.Port{Proto: proto, Port: uint16(n)})
	}
	return out
}

// vniFor derives a network's VNI from its subnet, so that hosts creating the
// same network while partitioned still agree. 24 bits; 0 and 1 are avoided
// (some switches treat them specially).
func vniFor(subnet netip.Prefix) uint32 {
	h := fnv.New32a()
	h.Write([]byte(subnet.Masked().String()))
	v := h.Sum32() & 0xFFFFFF
	if v < 2 {
		v += 2
	}
	return v
}

// macFor derives an endpoint's MAC from its address: unique wherever the
// address is, locally administered, and stable across restarts. An IPv4
// address is spelled out (02:6d:a:b:c:d); an IPv6 one (IPv6-only networks)
// does not fit, so 40 bits of its hash follow 0a: (also locally
// administered, never an IPv4 one's). A collision is refused like any
// duplicate MAC (checkEndpointMAC); at 40 bits it needs about a million
// endpoints on one network to become likely.
func macFor(a netip.Addr) net.HardwareAddr {
	if a.Unmap().Is4() {
		b := a.Unmap().As4()
		return net.HardwareAddr{0x02, 0x6d, b[0], b[1], b[2], b[3]}
	}
	h := fnv.New64a()
	b := a.As16()
	h.Write(b[:])
	s := h.Sum(nil)
	return net.HardwareAddr{0x0a, s[0], s[1], s[2], s[3], s[4]}
}

// bridgedEndpoints marks the local endpoints whose container does not
// balance service VIPs in its own namespace (ready lacks them) to stay on
// the bridge when the bridge bypass is on: their connections to a VIP are
// balanced by the host's table, whose conntrack must see the replies, and
// the bypass would hand those straight to the container. A container is
// in that state from its start until its box has written its table (about
// a second), or for good when the write failed (meshctl status lists it).
func bridgedEndpoints(st *dataplane.State, ready map[string]bool) {
	for i := range st.Networks {
		for j := range st.Networks[i].Locals {
			l := &st.Networks[i].Locals[j]
			l.Bridged = !ready[l.ID]
		}
	}
}
