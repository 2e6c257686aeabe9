package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// serviceLabel tags the addresses Apply keeps on lo. A label must start with
// the device's name; it lets Apply remove its own stale addresses and never
// anyone else's.
const serviceLabel = "lo:meshnet"

// syncServiceAddrs holds exactly want on lo (as /32 or /128), among the
// addresses labelled serviceLabel: adds first, then removes the stale ones.
func (d *Kernel) syncServiceAddrs(want []netip.Addr) error {
	lo, err := d.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo for service addresses: %w", err)
	}
	var errs []error
	wanted := map[netip.Addr]bool{}
	for _, a := range want {
		wanted[a] = true
		addr := &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(a, a.BitLen())), Label: serviceLabel}
		if a.Is6() {
			addr.Label = "" // IPv6 addresses carry no label
		}
		if err := d.nl.AddrReplace(lo, addr); err != nil {
			errs = append(errs, fmt.Errorf("hold service address %s on lo: %w", a, err))
		}
	}
	have, err := d.nl.AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list addresses of lo: %w", err))...)
	}
	for _, ad := range have {
		a := ipToAddr(ad.IP)
		if ad.Label != serviceLabel || wanted[a] {
			continue
		}
		if err := d.nl.AddrDel(lo, &ad); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("remove stale service address %s from lo: %w", a, err))
		} else {
			d.changed(fmt.Sprintf("remove service address %s from lo", a))
		}
	}
	return errors.Join(errs...)
}
