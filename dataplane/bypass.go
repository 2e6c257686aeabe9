package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The bridge bypass (doc.go, "The bridge bypass"): a vxlan network's IPv4
// unicast between containers does not cross the host's bridge, where
// br_netfilter would walk every frame through the host's IPv4 hooks. A tc
// program (bypassprog.go) on the ingress of each container's host-side
// veth hands a frame straight to the vxlan device (another host's
// container) or into the other container's namespace (one on this host),
// and on the vxlan device's ingress straight into the container's. A frame
// that is not plainly the container's own IPv4 to a container of its
// subnet (ARP, IPv6, broadcast, routed through the gateway, a forged
// source) goes to the bridge as before, where anti-spoofing and the
// firewall judge it.

// bypassPrio is the program's filter's priority (and handle) on each
// device's ingress.
const bypassPrio = 1

// planBypass lists, for every vxlan network with containers here that are
// not kept on the bridge, the ports the program runs on (their veths and
// the network's vxlan device) and the destinations it hands frames to
// (every local container with an IPv4 address and a MAC, those kept on the
// bridge marked so). bridgeMACOf gives each network's bridge MAC.
func planBypass(nets []Network, bridgeMACOf func(Network) net.HardwareAddr) (ports []bypassPort, dests []bypassDest) {
	for _, n := range nets {
		if n.wireguard() || !n.Subnet.Addr().Is4() {
			continue
		}
		vx := VXLANName(n.VNI)
		var netPorts []bypassPort
		var netDests []bypassDest
		for _, l := range n.Locals {
			if !l.Addr.Addr().Is4() || len(l.MAC) != 6 || l.HostIf == "" {
				continue
			}
			netDests = append(netDests, bypassDest{VXLAN: vx, MAC: l.MAC, Dev: l.HostIf, Bridged: l.Bridged})
			if !l.Bridged {
				netPorts = append(netPorts, bypassPort{Dev: l.HostIf, VXLAN: vx, Subnet: n.Subnet.Masked(),
					Addr: l.Addr.Addr(), MAC: l.MAC, GatewayMAC: bridgeMACOf(n)})
			}
		}
		if len(netPorts) == 0 {
			continue // every container here on the bridge: nothing to bypass
		}
		ports = append(ports, netPorts...)
		ports = append(ports, bypassPort{Dev: vx, VXLAN: vx, Subnet: n.Subnet.Masked()})
		dests = append(dests, netDests...)
	}
	slices.SortFunc(ports, func(a, b bypassPort) int { return strings.Compare(a.Dev, b.Dev) })
	slices.SortFunc(dests, func(a, b bypassDest) int {
		return cmp.Or(strings.Compare(a.VXLAN, b.VXLAN), strings.Compare(a.Dev, b.Dev))
	})
	return ports, dests
}

// syncBypass writes the program's maps to hold exactly ports and dests,
// attaches the program to each port's ingress (with a clsact qdisc), and
// removes filters from meshnet's other veths and vxlan devices in links
// (the kernel's reading), unless hold is set. Which devices to look at for
// removal: all of meshnet's at the first Apply (a previous run, or an
// older meshnetd's u32 filters, may be there), then those this run wrote.
// The maps are written before any filter, so a device the program is
// attached to finds its entries; they are this run's own (a fresh
// program), so they are written whole, hold or not.
func (d *Kernel) syncBypass(ports []bypassPort, dests []bypassDest, links map[string]link, hold bool) error {
	ifindex := func(name string) (int, error) {
		if l, ok := links[name]; ok && l.Index > 0 {
			return l.Index, nil
		}
		return 0, fmt.Errorf("no device %s", name)
	}
	var errs []error
	attach := map[string]bool{}
	if len(ports) > 0 {
		wantPorts, wantDests := map[string]string{}, map[string]string{}
		for _, p := range ports {
			k, v, err := p.encode(ifindex)
			if err != nil {
				errs = append(errs, fmt.Errorf("bridge bypass on %s: %w", p.Dev, err))
				continue
			}
			wantPorts[string(k)] = string(v)
			attach[p.Dev] = true
		}
		for _, dst := range dests {
			k, v, err := dst.encode(ifindex)
			if err != nil {
				errs = append(errs, fmt.Errorf("bridge bypass to %s: %w", dst.Dev, err))
				continue
			}
			wantDests[string(k)] = string(v)
		}
		prog := d.bypassProg.Load()
		n, err := prog.write(wantPorts, wantDests)
		if err != nil {
			return errors.Join(append(errs, err)...) // no filter on maps half written
		}
		if n > 0 {
			d.changed(fmt.Sprintf("write %d bridge bypass map entries", n))
		}
		for _, p := range ports {
			if !attach[p.Dev] {
				continue
			}
			if err := d.attachBypass(prog, p.Dev, links[p.Dev].Index); err != nil {
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
	for name, l := range links {
		if attach[name] || l.Index <= 0 || !(strings.HasPrefix(name, HostVethPrefix) || strings.HasPrefix(name, VXLANPrefix)) {
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
			d.changed("remove the bridge bypass filter of " + name)
		}
		delete(d.bypassed, name)
	}
	for name := range d.bypassed {
		if _, ok := links[name]; !ok {
			delete(d.bypassed, name) // gone, its filter with it
		}
	}
	return errors.Join(errs...)
}

// write makes the maps hold exactly the wanted entries and returns how
// many it wrote or deleted.
func (p *bypassProgram) write(ports, dests map[string]string) (int, error) {
	n := 0
	for _, m := range []struct {
		name       string
		written    map[string]string
		want       map[string]string
		update     func(k, v []byte) error
		deleteFrom func(k []byte) error
	}{
		{"ports", p.portsWritten, ports, func(k, v []byte) error { return p.ports.Put(k, v) }, func(k []byte) error { return p.ports.Delete(k) }},
		{"dests", p.destsWritten, dests, func(k, v []byte) error { return p.dests.Put(k, v) }, func(k []byte) error { return p.dests.Delete(k) }},
	} {
		for k, v := range m.want {
			if old, ok := m.written[k]; ok && old == v {
				continue
			}
			if err := m.update([]byte(k), []byte(v)); err != nil {
				return n, fmt.Errorf("write the bridge bypass's %s map: %w", m.name, err)
			}
			m.written[k] = v
			n++
		}
		for k := range m.written {
			if _, ok := m.want[k]; ok {
				continue
			}
			if err := m.deleteFrom([]byte(k)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return n, fmt.Errorf("delete from the bridge bypass's %s map: %w", m.name, err)
			}
			delete(m.written, k)
			n++
		}
	}
	return n, nil
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
