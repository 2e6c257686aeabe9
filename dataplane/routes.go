package dataplane

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/meshnet/meshnet/internal/netaddr"
)

// Routes of wireguard networks. Every host's bridge holds the network's
// gateway and so the connected route of the whole subnet; the address blocks
// other hosts own are more specific routes through the WireGuard device, and
// proxy_arp on the bridge answers a container's ARP for such an address
// with the bridge's MAC (the kernel answers for addresses routed out of
// another device). A container's address that lies in another host's block
// (it kept it when it handed the block on) gets a /32 back to its bridge.
//
// The routes are tagged with routeProtocol, which is how Apply finds the ones
// it made and never touches anyone else's.

// routeProtocol marks meshnet's routes (ip route ... proto 109). 109 is not
// assigned in iproute2's rt_protos.
const routeProtocol = 109

// overhead is what a network's tunnel adds to each packet.
func overhead(n Network, underlay netip.Addr) int {
	if !n.wireguard() {
		if underlay.Is6() {
			return VXLANOverhead6
		}
		return VXLANOverhead
	}
	if underlay.Is6() {
		return WireGuardOverhead6
	}
	return WireGuardOverhead4
}

// tunnelRoutes returns the routes a wireguard network needs: every peer
// prefix inside its subnets through tunnel, and every local container inside
// such a prefix back through the bridge. A peer that owns a whole subnet
// (the creator, until others take blocks) is routed as the subnet's two
// halves: a route as wide as the subnet would replace the bridge's
// connected route.
func tunnelRoutes(n Network, wg WireGuardState, tunnel string) []routeEntry {
	var routes []routeEntry
	br := BridgeName(n.VNI)
	for _, subnet := range n.subnets() {
		var remote []netip.Prefix
		for _, p := range wg.Peers {
			for _, a := range p.AllowedIPs {
				a = a.Masked()
				if !subnet.Overlaps(a) {
					continue
				}
				if a.Bits() <= subnet.Bits() {
					if subnet.Bits() < subnet.Addr().BitLen() {
						lo := netip.PrefixFrom(subnet.Addr(), subnet.Bits()+1)
						hi := netip.PrefixFrom(netaddr.Last(subnet), subnet.Bits()+1).Masked()
						remote = append(remote, lo, hi)
					}
					continue
				}
				remote = append(remote, a)
			}
		}
		remote = sortedPrefixes(remote)
		for _, a := range remote {
			routes = append(routes, routeEntry{Dst: a, Dev: tunnel})
		}
		for _, l := range n.Locals {
			for _, ad := range []netip.Addr{l.Addr.Addr(), l.Addr6.Addr()} {
				if subnet.Contains(ad) && slices.ContainsFunc(remote, func(p netip.Prefix) bool { return p.Contains(ad) }) {
					routes = append(routes, routeEntry{Dst: netip.PrefixFrom(ad, ad.BitLen()), Dev: br})
				}
			}
		}
	}
	return routes
}

func shortKey(k string) string {
	if len(k) > 8 {
		return k[:8] + "…"
	}
	return k
}

// planRoutes returns the routes to set (add or replace) and to delete. One
// route per destination: a destination that moved to another device is
// replaced in place, never missing in between. Routes inside a reserved
// subnet are neither deleted nor changed.
func planRoutes(want, have kernelModel, reserved []netip.Prefix) (set, del []routeEntry) {
	haveBy := map[netip.Prefix]string{}
	for _, r := range have.Routes {
		haveBy[r.Dst] = r.Dev
	}
	wantBy := map[netip.Prefix]bool{}
	for _, r := range want.Routes {
		wantBy[r.Dst] = true
		if dev, ok := haveBy[r.Dst]; !ok || dev != r.Dev {
			set = append(set, r)
		}
	}
	for _, r := range have.Routes {
		if wantBy[r.Dst] || slices.ContainsFunc(reserved, func(p netip.Prefix) bool { return p.Overlaps(r.Dst) }) {
			continue
		}
		del = append(del, r)
	}
	return set, del
}

// observeRoutes reads meshnet's routes (those tagged routeProtocol) from the
// main table.
func (d *Kernel) observeRoutes(names map[int]string) ([]routeEntry, error) {
	filter := &netlink.Route{Protocol: routeProtocol, Table: unix.RT_TABLE_MAIN}
	rs, err := d.nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list meshnet routes: %w", err)
	}
	var out []routeEntry
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		ip := ipToAddr(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out = append(out, routeEntry{Dst: netip.PrefixFrom(ip, ones), Dev: names[r.LinkIndex]})
	}
	return out, nil
}

// routeOp replaces or deletes one meshnet route.
func (d *Kernel) routeOp(r routeEntry, del bool) error {
	rt := &netlink.Route{
		Dst:      prefixIPNet(r.Dst),
		Protocol: routeProtocol,
		Table:    unix.RT_TABLE_MAIN,
		Scope:    netlink.SCOPE_LINK,
	}
	if del {
		if err := d.nl.RouteDel(rt); err != nil && !isGone(err) {
			return fmt.Errorf("delete route %v: %w", r.Dst, err)
		}
		d.changed(fmt.Sprintf("delete route %v", r.Dst))
		return nil
	}
	l, err := d.linkByName(r.Dev)
	if err != nil {
		return fmt.Errorf("route %v: %w", r.Dst, err)
	}
	rt.LinkIndex = l.Attrs().Index
	if err := d.nl.RouteReplace(rt); err != nil {
		return fmt.Errorf("route %v dev %s: %w", r.Dst, r.Dev, err)
	}
	d.changed(fmt.Sprintf("route %v dev %s", r.Dst, r.Dev))
	return nil
}
