package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The bridge bypass (doc.go, "The bridge bypass"): a network's IPv4
// unicast between containers does not cross the host's bridge, where
// br_netfilter would walk every frame through the host's IPv4 hooks, nor,
// on a wireguard network, the host's routing and FORWARD. A tc program
// (bypassprog.go) on the ingress of each container's host-side veth hands
// a frame straight to the vxlan or WireGuard device (another host's
// container) or into the other container's namespace (one on this host),
// and on the vxlan and WireGuard devices' ingress straight into the
// container's. A frame that is not plainly the container's own IPv4 to a
// container of its subnet (ARP, IPv6, broadcast, for the gateway, a forged
// source) goes to the bridge as before, where anti-spoofing and the
// firewall judge it.

// bypassPrio is the program's filter's priority (and handle) on each
// device's ingress.
const bypassPrio = 1

// bypassPlan is what the program's maps hold and the devices it runs on
// (the ports).
type bypassPlan struct {
	Ports []bypassPort
	Dests []bypassDest
	Addrs []bypassAddr
}

// planBypass lists, for every network with containers here that are not
// kept on the bridge, the ports the program runs on (their veths, and the
// network's vxlan device or the WireGuard device tunnel) and the
// destinations it hands frames to (every local container with an IPv4
// address and a MAC, those kept on the bridge marked so). bridgeMACOf gives
// each network's bridge MAC; tunnel is "" when wireguard networks have no
// device (they are then left alone).
func planBypass(nets []Network, bridgeMACOf func(Network) net.HardwareAddr, tunnel string) bypassPlan {
	var p bypassPlan
	wg := false
	for _, n := range nets {
		if !n.Subnet.Addr().Is4() || n.wireguard() && tunnel == "" {
			continue
		}
		kind, netDev, out := bypassKindVeth, VXLANName(n.VNI), VXLANName(n.VNI)
		var gateway netip.Addr
		if n.wireguard() {
			kind, netDev, out, gateway = bypassKindVethWG, BridgeName(n.VNI), tunnel, n.Gateway
		}
		var ports []bypassPort
		var dests []bypassDest
		var addrs []bypassAddr
		for _, l := range n.Locals {
			if !l.Addr.Addr().Is4() || len(l.MAC) != 6 || l.HostIf == "" {
				continue
			}
			dests = append(dests, bypassDest{Net: netDev, MAC: l.MAC, Dev: l.HostIf, Bridged: l.Bridged})
			if n.wireguard() {
				addrs = append(addrs, bypassAddr{Addr: l.Addr.Addr(), Dev: l.HostIf, MAC: l.MAC, GatewayMAC: bridgeMACOf(n),
					Subnet: n.Subnet.Masked(), Bridged: l.Bridged})
			}
			if !l.Bridged {
				ports = append(ports, bypassPort{Kind: kind, Dev: l.HostIf, Net: netDev, Out: out, Subnet: n.Subnet.Masked(),
					Addr: l.Addr.Addr(), MAC: l.MAC, GatewayMAC: bridgeMACOf(n), Gateway: gateway})
			}
		}
		if len(ports) == 0 {
			continue // every container here on the bridge: nothing to bypass
		}
		if n.wireguard() {
			wg = true
		} else {
			ports = append(ports, bypassPort{Kind: bypassKindVXLAN, Dev: out, Net: netDev, Subnet: n.Subnet.Masked()})
		}
		p.Ports = append(p.Ports, ports...)
		p.Dests = append(p.Dests, dests...)
		p.Addrs = append(p.Addrs, addrs...)
	}
	if wg {
		p.Ports = append(p.Ports, bypassPort{Kind: bypassKindWireGuard, Dev: tunnel})
	}
	slices.SortFunc(p.Ports, func(a, b bypassPort) int { return strings.Compare(a.Dev, b.Dev) })
	slices.SortFunc(p.Dests, func(a, b bypassDest) int {
		return cmp.Or(strings.Compare(a.Net, b.Net), strings.Compare(a.Dev, b.Dev))
	})
	slices.SortFunc(p.Addrs, func(a, b bypassAddr) int { return a.Addr.Compare(b.Addr) })
	return p
}

// syncBypass writes the program's maps to hold exactly what plan says,
// attaches the program to each port's ingress (with a clsact qdisc), and
// removes filters from meshnet's other veths and vxlan devices in links
// (the kernel's reading) and from the WireGuard device, unless hold is set.
// Which devices to look at for removal: all of meshnet's at the first
// Apply (a previous run, or an older meshnetd's u32 filters, may be
// there), then those this run wrote. The maps are written before any
// filter, so a device the program is attached to finds its entries; they
// are this run's own (a fresh program), so they are written whole, hold or
// not.
func (d *Kernel) syncBypass(plan bypassPlan, links map[string]link, hold bool) error {
	// The WireGuard device is not among links (not a device Apply's
	// model owns): it is looked up, once, since every wireguard port
	// names it.
	wgIndex := -1
	index := func(name string) int {
		if l, ok := links[name]; ok && l.Index > 0 {
			return l.Index
		}
		if name != WireGuardDevice {
			return 0
		}
		if wgIndex < 0 {
			wgIndex = 0
			if l, err := d.nl.LinkByName(name); err == nil {
				wgIndex = l.Attrs().Index
			}
		}
		return wgIndex
	}
	ifindex := func(name string) (int, error) {
		if i := index(name); i > 0 {
			return i, nil
		}
		return 0, fmt.Errorf("no device %s", name)
	}
	var errs []error
	attach := map[string]int{}
	if len(plan.Ports) > 0 {
		prog := d.bypassProg.Load()
		want := map[*ebpf.Map]map[string]string{prog.ports: {}, prog.dests: {}, prog.addrs: {}}
		type entry interface {
			encode(func(string) (int, error)) ([]byte, []byte, error)
		}
		put := func(m *ebpf.Map, e entry, what string) bool {
			k, v, err := e.encode(ifindex)
			if err != nil {
				errs = append(errs, fmt.Errorf("bridge bypass %s: %w", what, err))
				return false
			}
			want[m][string(k)] = string(v)
			return true
		}
		for _, p := range plan.Ports {
			if put(prog.ports, p, "on "+p.Dev) {
				attach[p.Dev] = index(p.Dev)
			}
		}
		for _, dst := range plan.Dests {
			put(prog.dests, dst, "to "+dst.Dev)
		}
		for _, a := range plan.Addrs {
			put(prog.addrs, a, "to "+a.Dev)
		}
		n, err := prog.write(want)
		if err != nil {
			return errors.Join(append(errs, err)...) // no filter on maps half written
		}
		if n > 0 {
			d.changed(fmt.Sprintf("write %d bridge bypass map entries", n))
		}
		for _, p := range plan.Ports {
			idx, ok := attach[p.Dev]
			if !ok {
				continue
			}
			if err := d.attachBypass(prog, p.Dev, idx); err != nil {
				errs = append(errs, fmt.Errorf("bridge bypass on %s: %w", p.Dev, err))
			}
		}
	}
	if hold {
		return errors.Join(errs...)
	}
	if d.bypassed == nil {
		d.bypassed = map[string]bool{}
	}
	for dev := range attach {
		d.bypassed[dev] = true
	}
	swept := d.bypassSwept
	d.bypassSwept = true
	candidates := map[string]int{}
	for name, l := range links {
		if strings.HasPrefix(name, HostVethPrefix) || strings.HasPrefix(name, VXLANPrefix) {
			candidates[name] = l.Index
		}
	}
	if _, ok := attach[WireGuardDevice]; !ok && (!swept || d.bypassed[WireGuardDevice]) {
		candidates[WireGuardDevice] = index(WireGuardDevice)
	}
	for name, idx := range candidates {
		if _, ok := attach[name]; ok || idx <= 0 || swept && !d.bypassed[name] {
			continue
		}
		have, err := d.nl.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}}, netlink.HANDLE_MIN_INGRESS)
		if err == nil && len(have) > 0 {
			if err := d.delFilters(idx, have, nil); err != nil {
				errs = append(errs, fmt.Errorf("remove the bridge bypass of %s: %w", name, err))
				continue // tried again next time
			}
			d.changed("remove the bridge bypass filter of " + name)
		}
		delete(d.bypassed, name)
	}
	for name := range d.bypassed {
		if _, ok := links[name]; !ok && index(name) == 0 {
			delete(d.bypassed, name) // gone, its filter with it
		}
	}
	return errors.Join(errs...)
}

// write makes the maps hold exactly the wanted entries (key → value, by
// map) and returns how many it wrote or deleted.
func (p *bypassProgram) write(want map[*ebpf.Map]map[string]string) (int, error) {
	n := 0
	for _, m := range []*ebpf.Map{p.ports, p.dests, p.addrs} {
		written := p.written[m]
		for k, v := range want[m] {
			if old, ok := written[k]; ok && old == v {
				continue
			}
			if err := m.Put([]byte(k), []byte(v)); err != nil {
				return n, fmt.Errorf("write the bridge bypass's map %s: %w", mapName(m), err)
			}
			written[k] = v
			n++
		}
		for k := range written {
			if _, ok := want[m][k]; ok {
				continue
			}
			if err := m.Delete([]byte(k)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return n, fmt.Errorf("delete from the bridge bypass's map %s: %w", mapName(m), err)
			}
			delete(written, k)
			n++
		}
	}
	return n, nil
}

func mapName(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil {
		return info.Name
	}
	return m.String()
}

// attachBypass puts this run's program on dev's ingress, unless it is
// there alone: a filter of an earlier run's program is replaced in place
// (a frame meets the old program or the new one, both with whole maps);
// anything else there (an older meshnetd's u32 filters) goes first, the
// bridge carrying the frames meanwhile.
func (d *Kernel) attachBypass(prog *bypassProgram, dev string, idx int) error {
	have, err := d.nl.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}}, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("list ingress filters: %w", err)
	}
	keep := map[uint16]bool{}
	for _, f := range have {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Priority == bypassPrio && b.Protocol == unix.ETH_P_IP {
			if len(have) == 1 && b.Id == prog.id {
				return nil
			}
			keep[bypassPrio] = true
		}
	}
	if err := d.ensureClsact(idx); err != nil {
		return err
	}
	if err := d.delFilters(idx, have, keep); err != nil {
		return err
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS, Handle: bypassPrio,
			Priority: bypassPrio, Protocol: unix.ETH_P_IP},
		Fd: prog.prog.FD(), Name: "mn_bypass", DirectAction: true,
	}
	if err := d.nl.FilterReplace(f); err != nil {
		return fmt.Errorf("attach the bypass program: %w", err)
	}
	d.changed("attach the bridge bypass program to " + dev)
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
// lacks, a priority at a time, whatever their kind; the clsact qdisc stays
// (ensureClsact).
func (d *Kernel) delFilters(idx int, have []netlink.Filter, keep map[uint16]bool) error {
	done := map[uint16]bool{}
	for _, f := range have {
		a := f.Attrs()
		if keep[a.Priority] || done[a.Priority] {
			continue
		}
		done[a.Priority] = true
		del := &netlink.GenericFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS, Priority: a.Priority, Protocol: a.Protocol},
			FilterType: f.Type()}
		if err := d.nl.FilterDel(del); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete %s filters of priority %d: %w", f.Type(), a.Priority, err)
		}
	}
	return nil
}
