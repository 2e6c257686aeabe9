package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The bridge bypass (doc.go, "The bridge bypass"): a vxlan network's IPv4
// unicast between containers does not cross the host's bridge, where
// br_netfilter would walk every frame through the host's IPv4 hooks. tc
// filters (u32, mirred) on the ingress of each container's host-side veth
// hand a frame straight to the vxlan device (another host's container) or
// to the other container's veth (one on this host), and on the vxlan
// device's ingress straight to the container's veth. A frame that is not
// plainly the container's own IPv4 to a container of its subnet (ARP,
// IPv6, broadcast, routed through the gateway, a forged source) matches
// nothing and goes to the bridge as before, where anti-spoofing and the
// firewall judge it.

// bypassFilter is one u32 filter on a device's ingress.
type bypassFilter struct {
	Dev  string
	Prio uint16
	Keys []nl.TcU32Key
	To   string // the device a match is redirected to; "" = left to the bridge
}

// Priorities on a container veth's ingress: frames to the bridge's own MAC
// first (routed, left to the bridge), then one per container of the
// network on this host, then everything else in the subnet to the vxlan
// device.
const (
	bypassPrioGateway = 1
	bypassPrioLocal   = 10
	bypassPrioBridged = 0x8000 // to a container kept on the bridge (LocalEndpoint.Bridged)
	bypassPrioRemote  = 0xff00
)

// u32 keys are 32-bit words at offsets from the network header, 4-aligned;
// the Ethernet header sits at -14 at ingress.
func macKeys(off int32, mac net.HardwareAddr) []nl.TcU32Key {
	// off is the MAC's first byte: -14 (destination) or -8 (source).
	switch off {
	case -14: // bytes -16,-15 are not the frame's: masked out
		return []nl.TcU32Key{
			{Off: -16, Mask: 0x0000ffff, Val: uint32(binary.BigEndian.Uint16(mac[0:2]))},
			{Off: -12, Mask: 0xffffffff, Val: binary.BigEndian.Uint32(mac[2:6])},
		}
	default: // -8: the last word's low half is the EtherType
		return []nl.TcU32Key{
			{Off: -8, Mask: 0xffffffff, Val: binary.BigEndian.Uint32(mac[0:4])},
			{Off: -4, Mask: 0xffff0000, Val: uint32(binary.BigEndian.Uint16(mac[4:6])) << 16},
		}
	}
}

// ipKey matches the IPv4 source (off 12) or destination (off 16) in p.
func ipKey(off int32, p netip.Prefix) nl.TcU32Key {
	mask := uint32(0)
	if p.Bits() > 0 {
		mask = ^uint32(0) << (32 - p.Bits())
	}
	a := p.Masked().Addr().As4()
	return nl.TcU32Key{Off: off, Mask: mask, Val: binary.BigEndian.Uint32(a[:]) & mask}
}

// unicastDstKey: the destination MAC's group bit is clear.
var unicastDstKey = nl.TcU32Key{Off: -16, Mask: 0x00000100, Val: 0}

// bypassMaxLocals bounds the containers of one network on one host that
// the bypass takes: each of their veths holds a filter per other one, so a
// network's filters grow with the square of its local containers, every
// change rewrites them all, and a frame to another host walks them first
// (measured 2026-12-06 in a namespace: 10 containers, 120 filters, 9 ms
// to write; 50, 2,600, 95 ms; 100, 10,200 filters, 0.6 s per container
// started and 0.1 s per re-sync). A network with more stays on the bridge
// on that host, as with the bypass off; a hashed, incrementally written
// table would lift the bound (doc.go, "The bridge bypass").
const bypassMaxLocals = 32

// planBypass lists the filters of every vxlan network with local
// containers; bridgeMACOf gives each network's bridge MAC. overLimit
// names the networks left on the bridge for having more than
// bypassMaxLocals local containers.
func planBypass(nets []Network, bridgeMACOf func(Network) net.HardwareAddr) (out []bypassFilter, overLimit []string) {
	for _, n := range nets {
		if n.wireguard() || !n.Subnet.Addr().Is4() {
			continue
		}
		var locals, bridged []LocalEndpoint
		for _, l := range n.Locals {
			if l.Addr.Addr().Is4() && len(l.MAC) == 6 && l.HostIf != "" {
				if l.Bridged {
					bridged = append(bridged, l)
				} else {
					locals = append(locals, l)
				}
			}
		}
		if len(locals) == 0 {
			continue
		}
		if k := len(locals) + len(bridged); k > bypassMaxLocals {
			overLimit = append(overLimit, fmt.Sprintf("%s on %s: %d containers here, over %d", n.Subnet, BridgeName(n.VNI), k, bypassMaxLocals))
			continue
		}
		// Priorities follow the veths' names: the daemon builds Locals from
		// maps, and another order would rewrite every filter.
		byHostIf := func(a, b LocalEndpoint) int { return strings.Compare(a.HostIf, b.HostIf) }
		slices.SortFunc(locals, byHostIf)
		slices.SortFunc(bridged, byHostIf)
		vx := VXLANName(n.VNI)
		for _, l := range locals {
			own := append(macKeys(-8, l.MAC), ipKey(12, netip.PrefixFrom(l.Addr.Addr(), 32)))
			out = append(out, bypassFilter{Dev: l.HostIf, Prio: bypassPrioGateway, Keys: macKeys(-14, bridgeMACOf(n))})
			for i, o := range locals {
				if o.HostIf == l.HostIf {
					continue
				}
				out = append(out, bypassFilter{Dev: l.HostIf, Prio: bypassPrioLocal + uint16(i),
					Keys: append(slices.Clone(own), macKeys(-14, o.MAC)...), To: o.HostIf})
			}
			// A container kept on the bridge has all of its traffic cross
			// it, both ways: left to the bridge before the catch-all below
			// sends it to the vxlan device (which does not know its MAC).
			for i, o := range bridged {
				out = append(out, bypassFilter{Dev: l.HostIf, Prio: bypassPrioBridged + uint16(i), Keys: macKeys(-14, o.MAC)})
			}
			out = append(out, bypassFilter{Dev: l.HostIf, Prio: bypassPrioRemote,
				Keys: append(slices.Clone(own), ipKey(16, n.Subnet.Masked()), unicastDstKey), To: vx})
		}
		// From the overlay, only a container of the subnet: anything else
		// (a remote host's own address, a routing-mesh connection bridged
		// by an older meshnetd) needs the bridge, where conntrack sees it
		// and the replies' way back is decided.
		for i, l := range locals {
			out = append(out, bypassFilter{Dev: vx, Prio: bypassPrioLocal + uint16(i),
				Keys: append(macKeys(-14, l.MAC), ipKey(12, n.Subnet.Masked())), To: l.HostIf})
		}
	}
	return out, overLimit
}

// syncBypass makes each device of plan hold exactly its filters (with a
// clsact qdisc), and removes them from meshnet's other veths and vxlan
// devices in links (the kernel's reading) that have some, unless hold is
// set. A device whose filters differ has them replaced in place, one
// priority at a time (syncDeviceBypass), under a clsact qdisc that stays. Which
// devices to look at for removal: all of meshnet's at the first Apply (a
// previous run may have left filters), then those this run wrote.
func (d *Kernel) syncBypass(plan []bypassFilter, links map[string]link, hold bool) error {
	byDev := map[string][]bypassFilter{}
	var devs []string
	for _, f := range plan {
		if _, ok := byDev[f.Dev]; !ok {
			devs = append(devs, f.Dev)
		}
		byDev[f.Dev] = append(byDev[f.Dev], f)
	}
	ifindex := func(name string) (int, error) {
		if l, ok := links[name]; ok && l.Index > 0 {
			return l.Index, nil
		}
		return 0, fmt.Errorf("no device %s", name)
	}
	var errs []error
	for _, dev := range devs {
		if err := d.syncDeviceBypass(dev, byDev[dev], ifindex); err != nil {
			errs = append(errs, fmt.Errorf("bridge bypass on %s: %w", dev, err))
		}
	}
	if hold {
		return errors.Join(errs...)
	}
	if d.bypassed == nil {
		d.bypassed = map[string]bool{}
	}
	for _, dev := range devs {
		d.bypassed[dev] = true
	}
	swept := d.bypassSwept
	d.bypassSwept = true
	for name, l := range links {
		if _, ok := byDev[name]; ok || l.Index <= 0 || !(strings.HasPrefix(name, HostVethPrefix) || strings.HasPrefix(name, VXLANPrefix)) {
			continue
		}
		if swept && !d.bypassed[name] {
			continue
		}
		have, err := d.nl.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}, netlink.HANDLE_MIN_INGRESS)
		if err == nil && len(have) > 0 {
			if err := d.delFilters(l.Index, have, nil); err != nil {
				errs = append(errs, fmt.Errorf("remove the bridge bypass of %s: %w", name, err))
				continue // tried again next time
			}
			d.changed("remove the bridge bypass filters of " + name)
		}
		delete(d.bypassed, name)
	}
	for name := range d.bypassed {
		if _, ok := links[name]; !ok {
			delete(d.bypassed, name) // gone, its filters with it
		}
	}
	return errors.Join(errs...)
}

func (d *Kernel) syncDeviceBypass(dev string, want []bypassFilter, ifindex func(string) (int, error)) error {
	idx, err := ifindex(dev)
	if err != nil {
		return err
	}
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}}
	wantU32 := make([]*netlink.U32, 0, len(want))
	for _, f := range want {
		u := &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS, Priority: f.Prio, Protocol: unix.ETH_P_IP},
			// Clipped: netlink serialises the keys up to their slice's
			// capacity, zero keys included (which match everything).
			Sel: &nl.TcU32Sel{Flags: nl.TC_U32_TERMINAL, Keys: slices.Clip(slices.Clone(f.Keys))},
		}
		// No action: a match ends the classification and the frame goes
		// on to the bridge (act_gact, which "action ok" needs, is not in
		// every kernel).
		if f.To != "" {
			to, err := ifindex(f.To)
			if err != nil {
				return fmt.Errorf("redirect target %s: %w", f.To, err)
			}
			u.Actions = []netlink.Action{netlink.NewMirredAction(to)}
		}
		wantU32 = append(wantU32, u)
	}
	have, err := d.nl.FilterList(link, netlink.HANDLE_MIN_INGRESS)
	if err == nil && sameBypass(have, wantU32) {
		return nil
	}
	if err := d.ensureClsact(idx); err != nil {
		return err
	}
	// Under the qdisc, which stays (its replacement would drop frames),
	// each wanted filter is kept, has its action replaced in place (the
	// kernel keeps a u32 filter's keys on replace), or is added beside the
	// old one of its priority, which then goes; priorities no longer
	// wanted go last. A frame meets the old filter or the new one.
	byPrio := u32ByPrio(have)
	for _, u := range wantU32 {
		var same *netlink.U32
		for _, h := range byPrio[u.Priority] {
			if same == nil && slices.Equal(h.Sel.Keys, u.Sel.Keys) {
				same = h
			}
		}
		switch {
		case same != nil && sameActions(same, u):
		case same != nil:
			u.Handle = same.Handle
			err = d.nl.FilterReplace(u)
		default:
			err = d.nl.FilterAdd(u)
		}
		if err != nil {
			return fmt.Errorf("write u32 filter priority %d: %w", u.Priority, err)
		}
		for _, h := range byPrio[u.Priority] {
			if h == same {
				continue
			}
			del := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS, Priority: h.Priority, Protocol: h.Protocol, Handle: h.Handle}}
			if err := d.nl.FilterDel(del); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete the old u32 filter of priority %d: %w", h.Priority, err)
			}
		}
	}
	keep := map[uint16]bool{}
	for _, u := range wantU32 {
		keep[u.Priority] = true
	}
	if err := d.delFilters(idx, have, keep); err != nil {
		return err
	}
	d.changed(fmt.Sprintf("write %d bridge bypass filters on %s", len(wantU32), dev))
	return nil
}

// ensureClsact adds the device's clsact qdisc unless it has one. Adding or
// removing a qdisc deactivates the device for a moment (qdisc_graft), and a
// frame sent through it then is dropped; so the qdisc is added once and
// never removed, and the filters change under it.
func (d *Kernel) ensureClsact(idx int) error {
	qds, err := d.nl.QdiscList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}})
	if err != nil {
		return fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qds {
		if q.Type() == "clsact" {
			return nil
		}
	}
	qd := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Parent: netlink.HANDLE_CLSACT,
		Handle: netlink.MakeHandle(0xffff, 0)}, QdiscType: "clsact"}
	if err := d.nl.QdiscAdd(qd); err != nil {
		return fmt.Errorf("add the clsact qdisc: %w", err)
	}
	return nil
}

// delFilters deletes the ingress filters of have whose priority keep
// lacks, a priority at a time; the clsact qdisc stays (ensureClsact).
func (d *Kernel) delFilters(idx int, have []netlink.Filter, keep map[uint16]bool) error {
	done := map[uint16]bool{}
	for _, f := range have {
		a := f.Attrs()
		if keep[a.Priority] || done[a.Priority] {
			continue
		}
		done[a.Priority] = true
		del := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS, Priority: a.Priority, Protocol: a.Protocol}}
		if err := d.nl.FilterDel(del); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete u32 filters of priority %d: %w", a.Priority, err)
		}
	}
	return nil
}

// sameBypass reports whether the filters read back are the wanted ones:
// one u32 filter per priority with the same keys and action.
func sameBypass(have []netlink.Filter, want []*netlink.U32) bool {
	byPrio := u32ByPrio(have)
	if len(byPrio) != len(want) {
		return false
	}
	for _, w := range want {
		h := byPrio[w.Priority]
		if len(h) != 1 || !slices.Equal(h[0].Sel.Keys, w.Sel.Keys) || !sameActions(h[0], w) {
			return false
		}
	}
	return true
}

// u32ByPrio groups the u32 filters read back by priority, leaving out the
// hash table entries u32 lists besides them.
func u32ByPrio(have []netlink.Filter) map[uint16][]*netlink.U32 {
	out := map[uint16][]*netlink.U32{}
	for _, f := range have {
		if u, ok := f.(*netlink.U32); ok && u.Sel != nil && len(u.Sel.Keys) > 0 {
			out[u.Priority] = append(out[u.Priority], u)
		}
	}
	return out
}

// sameActions: both filters redirect to the same device, or neither does.
func sameActions(h, w *netlink.U32) bool {
	if len(h.Actions) != len(w.Actions) {
		return false
	}
	if len(w.Actions) == 0 {
		return true
	}
	wa, _ := w.Actions[0].(*netlink.MirredAction)
	ha, ok := h.Actions[0].(*netlink.MirredAction)
	return ok && wa != nil && ha.Ifindex == wa.Ifindex && ha.MirredAction == wa.MirredAction
}
