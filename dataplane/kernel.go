package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// This file is the netlink half of the VXLAN dataplane: it reads the kernel into
// a kernelModel and executes the steps model.go plans.

// isOurName reports whether a device name is in meshnet's namespace of names.
func isOurName(name string) bool {
	return strings.HasPrefix(name, BridgePrefix) || strings.HasPrefix(name, VXLANPrefix) ||
		strings.HasPrefix(name, HostVethPrefix) || strings.HasPrefix(name, ContainerVethPrefix)
}

// observe reads meshnet's devices (with their bridge port flags), their
// addresses, vxlan FDB and neighbour entries and the bridges' entries for
// meshnet ports from the kernel.
func (d *Kernel) observe() (kernelModel, error) {
	m := kernelModel{Links: map[string]link{}}
	links, err := d.nl.LinkList()
	if err != nil {
		return m, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var errs []error
	// One dump of every bridge-family FDB entry: the vxlan devices' own
	// tables and the bridges' (brfdb.go).
	fdbAll, err := d.nl.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		errs = append(errs, fmt.Errorf("list FDB entries: %w", err))
	}
	byIndex := map[int]link{}
	for _, l := range links {
		a := l.Attrs()
		if !isOurName(a.Name) {
			continue
		}
		k := link{
			Name:   a.Name,
			Kind:   l.Type(),
			Index:  a.Index,
			MTU:    a.MTU,
			Master: names[a.MasterIndex],
			Up:     a.Flags&net.FlagUp != 0,
			MAC:    a.HardwareAddr.String(),
		}
		if vx, ok := l.(*netlink.Vxlan); ok {
			k.VNI = uint32(vx.VxlanId)
			k.Port = vx.Port
			k.Local = ipToAddr(vx.SrcAddr)
			k.Learning = vx.Learning
			k.Proxy = vx.Proxy
		}
		if (k.Kind == kindVeth || k.Kind == kindVXLAN) && a.MasterIndex != 0 {
			pi, err := d.nl.LinkGetProtinfo(l)
			if err != nil {
				errs = append(errs, fmt.Errorf("read bridge port flags of %s: %w", a.Name, err))
			}
			k.PortLearning = err == nil && pi.Learning
			if k.Kind == kindVeth {
				k.Hairpin = err == nil && pi.Hairpin
				k.PortFlood = err == nil && pi.Flood
			}
		}
		m.Links[a.Name] = k
		byIndex[a.Index] = k

		switch k.Kind {
		case kindBridge:
			addrs, err := d.nl.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				errs = append(errs, fmt.Errorf("list addresses of %s: %w", a.Name, err))
				continue
			}
			for _, ad := range addrs {
				ip := ipToAddr(ad.IP)
				ones, _ := ad.Mask.Size()
				m.Addrs = append(m.Addrs, addrEntry{Dev: a.Name, Prefix: netip.PrefixFrom(ip, ones)})
			}
			proxies, err := d.nl.NeighProxyList(a.Index, netlink.FAMILY_V6)
			if err != nil {
				errs = append(errs, fmt.Errorf("list neighbour proxies of %s: %w", a.Name, err))
			}
			for _, p := range proxies {
				if p.LinkIndex == a.Index && p.IP != nil {
					m.Proxies = append(m.Proxies, proxyEntry{Dev: a.Name, IP: ipToAddr(p.IP)})
				}
			}
		case kindVXLAN:
			for _, n := range fdbAll {
				// Only the vxlan device's own table (self); entries of the bridge
				// it is a port of (master) are the bridge's business.
				if n.LinkIndex != a.Index || n.Flags&netlink.NTF_SELF == 0 || n.Flags&netlink.NTF_MASTER != 0 {
					continue
				}
				m.FDB = append(m.FDB, fdbEntry{
					Dev: a.Name, MAC: n.HardwareAddr.String(), Dst: ipToAddr(n.IP),
					Permanent: n.State&netlink.NUD_PERMANENT != 0,
				})
			}
			for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
				neighs, err := d.nl.NeighList(a.Index, fam)
				if err != nil {
					errs = append(errs, fmt.Errorf("list neighbours of %s: %w", a.Name, err))
				}
				for _, n := range neighs {
					// Multicast entries (MLD, all-nodes) are the kernel's own.
					if n.LinkIndex != a.Index || n.IP == nil || n.IP.IsMulticast() {
						continue
					}
					m.Neigh = append(m.Neigh, neighEntry{
						Dev: a.Name, IP: ipToAddr(n.IP), MAC: n.HardwareAddr.String(),
						Permanent: n.State&netlink.NUD_PERMANENT != 0,
					})
				}
			}
		}
	}
	m.BrFDB = observeBrFDB(fdbAll, byIndex)
	routes, err := d.observeRoutes(names)
	if err != nil {
		errs = append(errs, err)
	}
	m.Routes = routes
	return m, errors.Join(errs...)
}

func ipToAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// linkByName finds a device by name; a missing one is an error that names it.
func (d *Kernel) linkByName(name string) (netlink.Link, error) {
	l, err := d.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	return l, nil
}

// entryLink finds the link an FDB, neighbour or proxy entry goes on: in the
// reading of the kernel the entries were planned on (no link changes
// between that reading and the writes), else by asking the kernel. Up to
// three entries per remote container are written; a link lookup for each
// made up a third of a cold Apply of 10,000 remotes.
func (d *Kernel) entryLink(name string) (index int, bridgePort bool, err error) {
	if l, ok := d.entryLinks[name]; ok && l.Index > 0 {
		return l.Index, l.Master != "", nil
	}
	nl, err := d.linkByName(name)
	if err != nil {
		return 0, false, err
	}
	return nl.Attrs().Index, nl.Attrs().MasterIndex != 0, nil
}

// execLink carries out one link step.
func (d *Kernel) execLink(s linkStep) error {
	w := s.Want
	switch s.Op {
	case linkRecreate:
		if err := d.deleteLink(w.Name); err != nil {
			return err
		}
		fallthrough
	case linkCreate:
		if err := d.createLink(w); err != nil {
			return err
		}
		d.changed(fmt.Sprintf("%s %s %s", s.Op, w.Kind, w.Name))
		return nil
	}
	l, err := d.linkByName(w.Name)
	if err != nil {
		return err
	}
	var errs []error
	if s.MTU {
		if err := d.nl.LinkSetMTU(l, w.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set MTU of %s to %d: %w", w.Name, w.MTU, err))
		} else {
			d.changed(fmt.Sprintf("set MTU of %s to %d", w.Name, w.MTU))
		}
	}
	if s.MAC {
		mac, _ := net.ParseMAC(w.MAC)
		if err := d.nl.LinkSetHardwareAddr(l, mac); err != nil {
			errs = append(errs, fmt.Errorf("set address of %s to %s: %w", w.Name, w.MAC, err))
		} else {
			d.changed(fmt.Sprintf("set address of %s to %s", w.Name, w.MAC))
		}
	}
	if s.PeerMTU || s.PeerMAC {
		errs = append(errs, d.updatePeer(w, s))
	}
	if s.Master {
		if err := d.setMaster(l, w.Master); err != nil {
			errs = append(errs, err)
		} else {
			d.changed(fmt.Sprintf("set master of %s to %s", w.Name, w.Master))
			// A new bridge port learns and floods by default, and has no
			// hairpin.
			s.PortLearning = isPort(w)
			s.PortFlood = w.Kind == kindVeth && w.Master != "" && !w.PortFlood
			s.Hairpin = w.Kind == kindVeth && w.Master != "" && w.Hairpin
		}
	}
	if s.PortFlood {
		if err := d.nl.LinkSetFlood(l, w.PortFlood); err != nil {
			errs = append(errs, fmt.Errorf("set flood %v on bridge port %s: %w", w.PortFlood, w.Name, err))
		} else {
			d.changed(fmt.Sprintf("set flood %v on bridge port %s", w.PortFlood, w.Name))
		}
	}
	if s.Hairpin {
		if err := d.nl.LinkSetHairpin(l, w.Hairpin); err != nil {
			errs = append(errs, fmt.Errorf("set hairpin %v on bridge port %s: %w", w.Hairpin, w.Name, err))
		} else {
			d.changed(fmt.Sprintf("set hairpin %v on bridge port %s", w.Hairpin, w.Name))
		}
	}
	if s.PortLearning {
		if err := d.nl.LinkSetLearning(l, false); err != nil {
			errs = append(errs, fmt.Errorf("turn off learning on bridge port %s: %w", w.Name, err))
		} else {
			d.changed(fmt.Sprintf("turn off learning on bridge port %s", w.Name))
		}
	}
	if s.Up {
		if err := d.nl.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", w.Name, err))
		} else {
			d.changed(fmt.Sprintf("set %s up", w.Name))
		}
	}
	return errors.Join(errs...)
}

// updatePeer fixes the container end of a veth that is still in this
// namespace: Docker moves it into the container with the MAC and MTU it has.
func (d *Kernel) updatePeer(w link, s linkStep) error {
	p, err := d.linkByName(w.Peer)
	if err != nil {
		return err
	}
	var errs []error
	if s.PeerMTU {
		if err := d.nl.LinkSetMTU(p, w.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set MTU of %s to %d: %w", w.Peer, w.MTU, err))
		} else {
			d.changed(fmt.Sprintf("set MTU of %s to %d", w.Peer, w.MTU))
		}
	}
	if s.PeerMAC {
		mac, _ := net.ParseMAC(w.PeerMAC)
		if err := d.nl.LinkSetHardwareAddr(p, mac); err != nil {
			errs = append(errs, fmt.Errorf("set address of %s to %s: %w", w.Peer, w.PeerMAC, err))
		} else {
			d.changed(fmt.Sprintf("set address of %s to %s", w.Peer, w.PeerMAC))
		}
	}
	return errors.Join(errs...)
}

func (d *Kernel) setMaster(l netlink.Link, master string) error {
	if master == "" {
		if err := d.nl.LinkSetNoMaster(l); err != nil {
			return fmt.Errorf("release %s from its master: %w", l.Attrs().Name, err)
		}
		return nil
	}
	m, err := d.linkByName(master)
	if err != nil {
		return fmt.Errorf("enslave %s: %w", l.Attrs().Name, err)
	}
	if err := d.nl.LinkSetMasterByIndex(l, m.Attrs().Index); err != nil {
		return fmt.Errorf("enslave %s to %s: %w", l.Attrs().Name, master, err)
	}
	return nil
}

// createLink creates a device with all wanted attributes and sets it up.
func (d *Kernel) createLink(w link) error {
	attrs := netlink.NewLinkAttrs() // keeps TxQLen at -1: a literal would ask for a zero queue
	attrs.Name = w.Name
	attrs.MTU = w.MTU
	if w.Master != "" {
		m, err := d.linkByName(w.Master)
		if err != nil {
			return fmt.Errorf("create %s %s: %w", w.Kind, w.Name, err)
		}
		attrs.MasterIndex = m.Attrs().Index
	}
	var l netlink.Link
	switch w.Kind {
	case kindBridge:
		if w.MAC != "" {
			attrs.HardwareAddr, _ = net.ParseMAC(w.MAC)
		}
		l = &netlink.Bridge{LinkAttrs: attrs}
	case kindVXLAN:
		l = &netlink.Vxlan{
			LinkAttrs: attrs,
			VxlanId:   int(w.VNI),
			SrcAddr:   net.IP(w.Local.AsSlice()),
			Port:      w.Port,
			Learning:  w.Learning,
			Proxy:     w.Proxy,
		}
	case kindVeth:
		peerMAC, _ := net.ParseMAC(w.PeerMAC)
		l = &netlink.Veth{
			LinkAttrs:        attrs,
			PeerName:         w.Peer,
			PeerHardwareAddr: peerMAC,
			PeerMTU:          uint32(w.MTU),
		}
	default:
		return fmt.Errorf("create %s: unknown kind %q", w.Name, w.Kind)
	}
	if err := d.nl.LinkAdd(l); err != nil {
		return fmt.Errorf("create %s %s: %w", w.Kind, w.Name, err)
	}
	if isPort(w) {
		// Every MAC of the network is a static entry of the bridge's table
		// (brfdb.go); the bridge must not learn (and let a forged source
		// MAC redirect) them.
		if err := d.nl.LinkSetLearning(l, false); err != nil {
			return fmt.Errorf("turn off learning on bridge port %s: %w", w.Name, err)
		}
	}
	if w.Kind == kindVeth && w.Master != "" && !w.PortFlood {
		// A frame to a MAC the bridge does not know goes to no container.
		if err := d.nl.LinkSetFlood(l, false); err != nil {
			return fmt.Errorf("turn off flooding on bridge port %s: %w", w.Name, err)
		}
	}
	if w.Kind == kindVeth && w.Master != "" && w.Hairpin {
		if err := d.nl.LinkSetHairpin(l, true); err != nil {
			return fmt.Errorf("set hairpin on bridge port %s: %w", w.Name, err)
		}
	}
	if d.bypassMode != BypassOff && (w.Kind == kindVXLAN || w.Kind == kindVeth && w.Master != "") {
		// The bypass's qdisc now, before anything flows: added later, it
		// would deactivate the device for a moment and drop a frame (a
		// new container's first ARP or ping reply, a second's retry).
		// (LinkAdd has looked the new device's index up.)
		if err := d.ensureClsact(l.Attrs().Index); err != nil {
			return fmt.Errorf("%s: %w", w.Name, err)
		}
	}
	if err := d.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", w.Name, err)
	}
	return nil
}

// deleteLink deletes a device by name; one already gone is not an error.
func (d *Kernel) deleteLink(name string) error {
	l, err := d.nl.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("find %s to delete it: %w", name, err)
	}
	if err := d.nl.LinkDel(l); err != nil && !isGone(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	d.changed("delete link " + name)
	return nil
}

// isGone reports errors that mean "already not there".
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.EADDRNOTAVAIL)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

func (d *Kernel) addrOp(a addrEntry, del bool) error {
	l, err := d.linkByName(a.Dev)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: prefixIPNet(a.Prefix)}
	if a.Prefix.Addr().Is6() {
		// The IPv6 gateway is the same on every host: duplicate address
		// detection has nothing to find (the overlay carries no
		// solicitation for it) and would only hold it tentative a second.
		addr.Flags = unix.IFA_F_NODAD
	}
	if del {
		if err := d.nl.AddrDel(l, addr); err != nil && !isGone(err) {
			return fmt.Errorf("delete address %v from %s: %w", a.Prefix, a.Dev, err)
		}
		d.changed(fmt.Sprintf("delete address %v from %s", a.Prefix, a.Dev))
		return nil
	}
	if err := d.nl.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("add address %v to %s: %w", a.Prefix, a.Dev, err)
	}
	d.changed(fmt.Sprintf("add address %v to %s", a.Prefix, a.Dev))
	return nil
}

// fdbOp replaces (bridge fdb replace MAC dev VX dst VTEP self permanent) or
// deletes one vxlan FDB entry.
func (d *Kernel) fdbOp(e fdbEntry, del bool) error {
	index, _, err := d.entryLink(e.Dev)
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(e.MAC)
	if err != nil {
		return fmt.Errorf("FDB entry on %s: %w", e.Dev, err)
	}
	n := &netlink.Neigh{
		LinkIndex:    index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		IP:           net.IP(e.Dst.AsSlice()),
		HardwareAddr: mac,
	}
	if del {
		if err := d.nl.NeighDel(n); err != nil && !isGone(err) {
			return fmt.Errorf("delete FDB entry %s dst %v from %s: %w", e.MAC, e.Dst, e.Dev, err)
		}
		d.changed(fmt.Sprintf("delete FDB entry %s dst %v from %s", e.MAC, e.Dst, e.Dev))
		return nil
	}
	if err := d.nl.NeighSet(n); err != nil {
		return fmt.Errorf("set FDB entry %s dst %v on %s: %w", e.MAC, e.Dst, e.Dev, err)
	}
	d.changed(fmt.Sprintf("set FDB entry %s dst %v on %s", e.MAC, e.Dst, e.Dev))
	return nil
}

// neighOp replaces (ip neigh replace IP lladdr MAC dev VX nud permanent) or
// deletes one neighbour entry.
func (d *Kernel) neighOp(e neighEntry, del bool) error {
	index, _, err := d.entryLink(e.Dev)
	if err != nil {
		return err
	}
	fam := netlink.FAMILY_V4
	if e.IP.Is6() {
		fam = netlink.FAMILY_V6
	}
	n := &netlink.Neigh{
		LinkIndex: index,
		Family:    fam,
		State:     netlink.NUD_PERMANENT,
		IP:        net.IP(e.IP.AsSlice()),
	}
	if del {
		if err := d.nl.NeighDel(n); err != nil && !isGone(err) {
			return fmt.Errorf("delete neighbour %v from %s: %w", e.IP, e.Dev, err)
		}
		d.changed(fmt.Sprintf("delete neighbour %v from %s", e.IP, e.Dev))
		return nil
	}
	if n.HardwareAddr, err = net.ParseMAC(e.MAC); err != nil {
		return fmt.Errorf("neighbour %v on %s: %w", e.IP, e.Dev, err)
	}
	if err := d.nl.NeighSet(n); err != nil {
		return fmt.Errorf("set neighbour %v lladdr %s on %s: %w", e.IP, e.MAC, e.Dev, err)
	}
	d.changed(fmt.Sprintf("set neighbour %v lladdr %s on %s", e.IP, e.MAC, e.Dev))
	return nil
}

// proxyOp adds or deletes one IPv6 neighbour proxy entry.
func (d *Kernel) proxyOp(e proxyEntry, del bool) error {
	index, _, err := d.entryLink(e.Dev)
	if err != nil {
		return err
	}
	n := &netlink.Neigh{LinkIndex: index, Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, IP: net.IP(e.IP.AsSlice())}
	if del {
		if err := d.nl.NeighDel(n); err != nil && !isGone(err) {
			return fmt.Errorf("delete neighbour proxy %v from %s: %w", e.IP, e.Dev, err)
		}
		d.changed(fmt.Sprintf("delete neighbour proxy %v from %s", e.IP, e.Dev))
		return nil
	}
	if err := d.nl.NeighSet(n); err != nil {
		return fmt.Errorf("add neighbour proxy %v on %s: %w", e.IP, e.Dev, err)
	}
	d.changed(fmt.Sprintf("add neighbour proxy %v on %s", e.IP, e.Dev))
	return nil
}

// underlayMTU finds the MTU that sizes networks with MTU 0: the configured one,
// else the MTU of the named underlay interface, else of the device holding the
// underlay address, else 1500.
func (d *Kernel) underlayMTU(u UnderlayInfo) int {
	if u.MTU > 0 {
		return u.MTU
	}
	if u.Interface != "" {
		if l, err := d.nl.LinkByName(u.Interface); err == nil {
			return l.Attrs().MTU
		}
		d.log.Warn("underlay interface not found, detecting MTU from the underlay address", "interface", u.Interface)
	}
	if mtu := addrLinkMTU(d.nl, u.Addr); mtu > 0 {
		return mtu
	}
	return 1500
}

// addrLinkMTU is the MTU of the link holding address a (0: none does).
func addrLinkMTU(h *netlink.Handle, a netip.Addr) int {
	if !a.IsValid() {
		return 0
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0
	}
	for _, x := range addrs {
		if ipToAddr(x.IP) == a {
			if l, err := h.LinkByIndex(x.LinkIndex); err == nil {
				return l.Attrs().MTU
			}
		}
	}
	return 0
}
