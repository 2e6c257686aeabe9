package daemon

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/meshnet/meshnet/plugin"
)

// Input at the plugin boundary that Docker accepts but that would break
// the host or the network: checked before anything is recorded, with an
// error that says what to do instead.

// checkEndpointMAC refuses a --mac-address a container cannot use on a
// meshnet network: a multicast, broadcast or all-zero address (the bridge
// would flood or drop its frames), or one another endpoint of the same
// network already has on any host (the static FDB and neighbour entries of
// every host would point one MAC at two places). No MAC given is fine:
// meshnet derives one from the address.
func (d *Daemon) checkEndpointMAC(n network, endpointID string, mac net.HardwareAddr) error {
	if len(mac) == 0 {
		return nil
	}
	const what = "choose a unicast MAC such as 02:42:0a:00:00:05 (locally administered), or leave --mac-address out and meshnet derives one from the address"
	switch {
	case len(mac) != 6:
		return plugin.BadRequest("--mac-address %s is not a 48-bit Ethernet address: %s", mac, what)
	case bytes.Equal(mac, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}):
		return plugin.BadRequest("--mac-address %s is the broadcast address: %s", mac, what)
	case mac[0]&1 == 1:
		return plugin.BadRequest("--mac-address %s is a multicast address (the lowest bit of its first byte is set): %s", mac, what)
	case bytes.Equal(mac, make(net.HardwareAddr, 6)):
		return plugin.BadRequest("--mac-address %s is all zeros: %s", mac, what)
	}
	for _, e := range endpoints(d.store.Snapshot(), false) {
		if e.subnet != n.subnet || e.id == endpointID || !bytes.Equal(e.mac, mac) {
			continue
		}
		who := e.info.Container
		if who == "" {
			who = "endpoint " + short(e.id)
		}
		return plugin.BadRequest("--mac-address %s is already used on network %s (%s) by %s on host %s: %s",
			mac, n.info.Name, n.subnet, who, e.owner, what)
	}
	return nil
}

// checkSubnetForHost refuses a network subnet that covers the host's
// underlay address, overlaps the underlay's network, or holds meshnet's
// DNS service address: the bridge's connected route would take the host's
// own traffic (gossip, tunnels, SSH) off the underlay and cut the host off.
func (d *Daemon) checkSubnetForHost(subnet netip.Prefix) error {
	if msg := subnetClash(subnet, d.advertise, underlayPrefix(d.advertise), d.dnsAddr); msg != "" {
		return plugin.BadRequest("%s", msg)
	}
	return nil
}

// subnetClash says why subnet must not be a meshnet network on a host
// whose underlay address is adv on network underlay (zero if unknown),
// with the DNS service at dnsAddr; "" when it may.
func subnetClash(subnet netip.Prefix, adv netip.Addr, underlay netip.Prefix, dnsAddr netip.Addr) string {
	const what = "choose a subnet outside it, e.g. 10.42.0.0/16"
	switch {
	case adv.IsValid() && subnet.Contains(adv):
		return fmt.Sprintf("subnet %s holds this host's underlay address %s: the network's route would cut the host off; %s", subnet, adv, what)
	case underlay.IsValid() && subnet.Overlaps(underlay):
		return fmt.Sprintf("subnet %s overlaps this host's underlay network %s (address %s): the network's route would take the underlay's traffic; %s", subnet, underlay, adv, what)
	case dnsAddr.IsValid() && subnet.Contains(dnsAddr):
		return fmt.Sprintf("subnet %s holds meshnet's DNS service address %s: containers could not reach the DNS server; %s (or move the DNS with --dns-addr)", subnet, dnsAddr, what)
	}
	return ""
}

// underlayPrefix is the network of the interface that holds addr, or the
// zero prefix when no interface does (the host's address may be NATed).
func underlayPrefix(addr netip.Addr) netip.Prefix {
	ifs, err := net.Interfaces()
	if err != nil || !addr.IsValid() {
		return netip.Prefix{}
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || ip.Unmap() != addr {
				continue
			}
			ones, _ := ipn.Mask.Size()
			return netip.PrefixFrom(ip.Unmap(), ones).Masked()
		}
	}
	return netip.Prefix{}
}
