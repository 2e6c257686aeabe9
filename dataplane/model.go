package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// This file is the pure half of the VXLAN dataplane: it compiles a State into the
// kernel objects it implies (a kernelModel) and diffs two models into steps. It
// touches no kernel, so it is unit-tested without root; kernel.go observes the
// kernel into the same model and executes the steps.

// Link kinds as the kernel names them (IFLA_INFO_KIND).
const (
	kindBridge = "bridge"
	kindVXLAN  = "vxlan"
	kindVeth   = "veth"
)

// link is one network device, as wanted or as found.
type link struct {
	Name   string
	Kind   string
	Index  int // observed only
	MTU    int
	Master string // name of the master device; "" = none
	Up     bool
	MAC    string // wanted: "" = do not care

	// vxlan only.
	VNI      uint32
	Port     int
	Local    netip.Addr
	Learning bool
	Proxy    bool
	// PortLearning is the bridge-port flag of an enslaved vxlan device or
	// veth: with it the bridge learns source MACs arriving on the port, so a
	// forged frame could redirect traffic. Wanted off on every meshnet port
	// (the bridge's table is static, brfdb.go); observed from the kernel.
	PortLearning bool
	// PortFlood is a veth port's BR_FLOOD flag: with it a frame to a MAC the
	// bridge does not know is copied to the port. Wanted off on veths, so
	// one container never receives unicast meant for another; observed from
	// the kernel.
	PortFlood bool
	// Hairpin is the bridge-port flag of a container's veth: the bridge may
	// send a frame back out of the port it came in by. A container reaching
	// its own published port through the host's address needs it (the DNAT
	// happens on the bridged frame, which then goes back to its sender), as
	// Docker sets it with the userland proxy off. Observed from the kernel.
	Hairpin bool

	// veth only, used when creating the pair.
	Peer    string
	PeerMAC string
}

// addrEntry is an address held by a device.
type addrEntry struct {
	Dev    string
	Prefix netip.Prefix
}

// fdbEntry is a vxlan device's own forwarding entry (bridge fdb ... self):
// frames for MAC go to the VTEP Dst.
type fdbEntry struct {
	Dev       string
	MAC       string
	Dst       netip.Addr
	Permanent bool
}

// neighEntry is a neighbour entry on a vxlan device; with proxy on, the vxlan
// device answers ARP/ND for IP with MAC from it.
type neighEntry struct {
	Dev       string
	IP        netip.Addr
	MAC       string
	Permanent bool
}

// proxyEntry is an IPv6 neighbour proxy entry on a bridge (ip -6 neigh
// add proxy IP dev BR): with proxy_ndp on, the bridge answers neighbour
// solicitations for IP with its own MAC. A dual-stack wireguard network
// has one per remote IPv6 address, as proxy_arp answers for every IPv4 one.
type proxyEntry struct {
	Dev string
	IP  netip.Addr
}

// routeEntry is a route in the main table that meshnet owns (tagged with
// routeProtocol): a remote address block of a wireguard network through the
// WireGuard device, or a local container's address inside a remote block
// through its bridge.
type routeEntry struct {
	Dst netip.Prefix
	Dev string
}

// kernelModel is the part of the kernel the dataplane manages.
type kernelModel struct {
	Links   map[string]link
	Addrs   []addrEntry
	FDB     []fdbEntry
	Neigh   []neighEntry
	Proxies []proxyEntry
	Routes  []routeEntry
	// BrFDB are static entries of meshnet bridges' own forwarding tables.
	BrFDB []brFDBEntry
}

// compiled is what a State implies, plus the names of objects Apply must leave
// alone because the network they belong to failed validation.
type compiled struct {
	Want     kernelModel
	Networks []Network      // the valid networks, in State order
	MTU      map[uint32]int // effective MTU per VNI
	Reserved map[string]bool
	// ReservedSubnets are the subnets of networks left alone: their routes
	// are neither added nor deleted.
	ReservedSubnets []netip.Prefix
	// Locals are the valid local endpoints of the valid networks, each
	// with its own veth and MAC: the ports the anti-spoofing rules know.
	Locals []LocalEndpoint
}

// compile turns st into the kernel model it implies. underlayMTU sizes networks
// with MTU 0. tunnel names the WireGuard device wireguard networks route
// through; "" means there is none (this dataplane has no WireGuard, or its
// device could not start), and wireguard networks are then reported and left
// alone. Invalid networks, endpoints and remotes are skipped and reported;
// everything else is still compiled.
func compile(st State, underlayMTU int, tunnel string) (compiled, error) {
	c := compiled{
		Want:     kernelModel{Links: map[string]link{}},
		MTU:      map[uint32]int{},
		Reserved: map[string]bool{},
	}
	var errs []error
	if len(st.Networks) > 0 && !st.Underlay.Addr.IsValid() {
		return c, errors.New("state has networks but no underlay address")
	}
	seenVNI := map[uint32]bool{}
	seenVeth := map[string]uint32{}
	var claimed []portClaim
	for _, n := range st.Networks {
		if err := n.validate(); err != nil {
			errs = append(errs, fmt.Errorf("network VNI %d (%v): %w", n.VNI, n.Subnet, err))
			c.reserve(n)
			continue
		}
		if n.wireguard() && tunnel == "" {
			errs = append(errs, fmt.Errorf("network VNI %d (%v): wireguard network, but no WireGuard device is running", n.VNI, n.Subnet))
			c.reserve(n)
			continue
		}
		if seenVNI[n.VNI] {
			errs = append(errs, fmt.Errorf("network VNI %d (%v): VNI listed twice", n.VNI, n.Subnet))
			continue
		}
		seenVNI[n.VNI] = true
		n.Locals = slices.Clone(n.Locals) // ports are checked below, in this copy
		for _, o := range c.Networks {
			for _, s := range n.subnets() {
				for _, os := range o.subnets() {
					if os.Overlaps(s) {
						errs = append(errs, fmt.Errorf("network VNI %d: subnet %v overlaps %v of VNI %d",
							n.VNI, s, os, o.VNI))
					}
				}
			}
		}
		c.Networks = append(c.Networks, n)

		mtu := n.MTU
		if mtu == 0 {
			mtu = underlayMTU - overhead(n, st.Underlay.Addr)
		}
		c.MTU[n.VNI] = mtu
		br, vx := BridgeName(n.VNI), VXLANName(n.VNI)
		c.Want.Links[br] = link{
			Name: br, Kind: kindBridge, MTU: mtu, Up: true,
			MAC: bridgeMAC(st.Underlay.Addr, n.VNI).String(),
		}
		if n.wireguard() {
			c.Want.Routes = append(c.Want.Routes, tunnelRoutes(n, st.WireGuard, tunnel)...)
		} else {
			c.Want.Links[vx] = link{
				Name: vx, Kind: kindVXLAN, MTU: mtu, Master: br, Up: true,
				VNI: n.VNI, Port: st.port(), Local: st.Underlay.Addr, Learning: false, Proxy: true,
			}
		}
		c.Want.Addrs = append(c.Want.Addrs, addrEntry{Dev: br, Prefix: netip.PrefixFrom(n.Gateway, n.Subnet.Bits())})
		if n.Subnet6.IsValid() {
			c.Want.Addrs = append(c.Want.Addrs, addrEntry{Dev: br, Prefix: netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())})
		}

		locals := c.Networks[len(c.Networks)-1].Locals
		brMACs := map[string]string{} // MAC -> port in this bridge's table
		for i, l := range n.Locals {
			locals[i].Ports = nil // until checked
			if err := l.validate(); err != nil {
				errs = append(errs, fmt.Errorf("network VNI %d: endpoint %s: %w", n.VNI, l.ID, err))
				c.Reserved[l.HostIf] = true
				continue
			}
			if other, dup := seenVeth[l.HostIf]; dup {
				errs = append(errs, fmt.Errorf("network VNI %d: endpoint %s: veth %s already used in VNI %d",
					n.VNI, l.ID, l.HostIf, other))
				continue
			}
			if !n.Internal { // an internal network publishes nothing
				ports, err := checkPorts(l, &claimed)
				if err != nil {
					errs = append(errs, fmt.Errorf("network VNI %d: endpoint %s: %w", n.VNI, l.ID, err))
				}
				locals[i].Ports = ports
			}
			seenVeth[l.HostIf] = n.VNI
			c.Want.Links[l.HostIf] = link{
				Name: l.HostIf, Kind: kindVeth, MTU: mtu, Master: br, Up: true,
				Peer: l.ContainerIf, PeerMAC: l.MAC.String(), Hairpin: !n.Internal,
			}
			c.Locals = append(c.Locals, l)
			mac := l.MAC.String()
			if other, dup := brMACs[mac]; dup {
				errs = append(errs, fmt.Errorf("network VNI %d: endpoint %s: MAC %s already used by %s; frames to it go to %s",
					n.VNI, l.ID, mac, other, other))
				continue
			}
			brMACs[mac] = l.HostIf
			c.Want.BrFDB = append(c.Want.BrFDB, brFDBEntry{Bridge: br, MAC: mac, Port: l.HostIf, Static: true})
		}

		byMAC := map[string]netip.Addr{}
		byIP := map[netip.Addr]string{}
		if n.wireguard() {
			// Routed: remote containers are reached by prefix, not by MAC.
			// Remote IPv6 addresses are answered for by the bridge.
			for _, r := range n.Remotes {
				if r.validate() == nil && r.Addr.Is6() && slices.ContainsFunc(n.subnets(), func(s netip.Prefix) bool { return s.Contains(r.Addr) }) {
					c.Want.Proxies = append(c.Want.Proxies, proxyEntry{Dev: br, IP: r.Addr})
				}
			}
			continue
		}
		for _, r := range n.Remotes {
			if err := r.validate(); err != nil {
				errs = append(errs, fmt.Errorf("network VNI %d: remote %v: %w", n.VNI, r.Addr, err))
				continue
			}
			mac := r.MAC.String()
			if vtep, ok := byMAC[mac]; ok && vtep != r.VTEP {
				errs = append(errs, fmt.Errorf("network VNI %d: remote MAC %s claimed by VTEPs %v and %v",
					n.VNI, mac, vtep, r.VTEP))
				continue
			}
			if m, ok := byIP[r.Addr]; ok && m != mac {
				errs = append(errs, fmt.Errorf("network VNI %d: remote address %v claimed by MACs %s and %s",
					n.VNI, r.Addr, m, mac))
				continue
			}
			if port, local := brMACs[mac]; local && port != vx {
				// The address moved here and the store still shows the old
				// holder (gossip lags): the local container is certainly here.
				errs = append(errs, fmt.Errorf("network VNI %d: remote %v has MAC %s of local port %s; kept local",
					n.VNI, r.Addr, mac, port))
				continue
			}
			if _, ok := byMAC[mac]; !ok {
				c.Want.FDB = append(c.Want.FDB, fdbEntry{Dev: vx, MAC: mac, Dst: r.VTEP, Permanent: true})
				c.Want.BrFDB = append(c.Want.BrFDB, brFDBEntry{Bridge: br, MAC: mac, Port: vx, Static: true})
				brMACs[mac] = vx
			}
			if _, ok := byIP[r.Addr]; !ok {
				c.Want.Neigh = append(c.Want.Neigh, neighEntry{Dev: vx, IP: r.Addr, MAC: mac, Permanent: true})
			}
			byMAC[mac], byIP[r.Addr] = r.VTEP, mac
		}
	}
	return c, errors.Join(errs...)
}

// reserve records the names of an invalid network so that Apply neither creates
// nor deletes them: a typo upstream must not tear down running containers.
func (c *compiled) reserve(n Network) {
	if n.Subnet.IsValid() {
		c.ReservedSubnets = append(c.ReservedSubnets, n.Subnet.Masked())
	}
	if n.VNI != 0 && n.VNI <= maxVNI {
		c.Reserved[BridgeName(n.VNI)] = true
		c.Reserved[VXLANName(n.VNI)] = true
	}
	for _, l := range n.Locals {
		c.Reserved[l.HostIf] = true
	}
}

// bridgeMAC is the fixed address of a bridge. Left alone, a bridge takes the
// lowest MAC of its ports and changes it whenever such a port joins or leaves,
// which breaks every container's cached gateway entry. The address differs per
// host (the same gateway IP lives on every host, and frames from it cross the
// overlay, so a shared MAC would be delivered to the wrong host's bridge).
func bridgeMAC(underlay netip.Addr, vni uint32) net.HardwareAddr {
	h := fnv.New64a()
	b := underlay.As16()
	h.Write(b[:])
	h.Write([]byte{byte(vni >> 16), byte(vni >> 8), byte(vni)})
	sum := h.Sum(nil)
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	return mac
}

// managed reports whether a device found in the kernel is one meshnet made and
// may therefore delete.
func managed(l link) bool {
	switch {
	case strings.HasPrefix(l.Name, BridgePrefix):
		_, ok := vniFromName(l.Name, BridgePrefix)
		return ok
	case strings.HasPrefix(l.Name, VXLANPrefix):
		_, ok := vniFromName(l.Name, VXLANPrefix)
		return ok
	case strings.HasPrefix(l.Name, HostVethPrefix):
		return l.Kind == kindVeth
	}
	return false
}

// linkOp says what to do about one wanted device.
type linkOp int

const (
	linkCreate   linkOp = iota // missing: create it
	linkRecreate               // exists with an identity that cannot change in place: delete, create
	linkUpdate                 // exists: fix the flagged attributes in place
)

func (o linkOp) String() string {
	return [...]string{"create", "recreate", "update"}[o]
}

// linkStep is one change to one device.
type linkStep struct {
	Op   linkOp
	Want link
	// For linkUpdate: which attributes differ.
	MTU, Master, Up, MAC bool
	// PortLearning: a vxlan device's or veth's bridge port learns; turn it off.
	PortLearning bool
	// PortFlood: a veth's flood flag differs from the wanted one.
	PortFlood bool
	// Hairpin: a veth's hairpin flag differs from the wanted one.
	Hairpin bool
	// For a veth whose container end is still in this namespace (Docker has not
	// moved it yet): which of that end's attributes differ.
	PeerMTU, PeerMAC bool
}

// isPort reports whether w is a vxlan device or veth enslaved to a bridge:
// a port whose flags Apply manages.
func isPort(w link) bool {
	return (w.Kind == kindVXLAN || w.Kind == kindVeth) && w.Master != ""
}

// kindRank orders creation: a vxlan or veth needs its bridge to exist.
func kindRank(kind string) int {
	switch kind {
	case kindBridge:
		return 0
	case kindVXLAN:
		return 1
	}
	return 2
}

// planLinks returns the steps that make every wanted device exist with the
// wanted attributes, bridges first. A device whose configuration already matches
// gets no step: a restarted daemon adopts what the last run left without
// flapping links.
func planLinks(want, have kernelModel) []linkStep {
	var steps []linkStep
	for _, name := range sortedLinks(want.Links) {
		w := want.Links[name]
		h, ok := have.Links[name]
		if !ok {
			steps = append(steps, linkStep{Op: linkCreate, Want: w})
			continue
		}
		if needsRecreate(w, h) {
			steps = append(steps, linkStep{Op: linkRecreate, Want: w})
			continue
		}
		s := linkStep{
			Op: linkUpdate, Want: w,
			MTU:    w.MTU != h.MTU,
			Master: w.Master != h.Master,
			Up:     w.Up && !h.Up,
			MAC:    w.MAC != "" && w.MAC != h.MAC,
			// Checked only where it is observed: on a port of the wanted
			// master (a port moving to another master is fixed next time).
			PortLearning: isPort(w) && w.Master == h.Master && h.PortLearning && !w.PortLearning,
			PortFlood:    w.Kind == kindVeth && w.Master != "" && w.Master == h.Master && h.PortFlood != w.PortFlood,
			Hairpin:      w.Kind == kindVeth && w.Master != "" && w.Master == h.Master && h.Hairpin != w.Hairpin,
		}
		if p, ok := have.Links[w.Peer]; ok && w.Kind == kindVeth && p.Kind == kindVeth {
			s.PeerMTU = p.MTU != w.MTU
			s.PeerMAC = w.PeerMAC != "" && p.MAC != w.PeerMAC
		}
		if s.MTU || s.Master || s.Up || s.MAC || s.PeerMTU || s.PeerMAC || s.PortLearning || s.PortFlood || s.Hairpin {
			steps = append(steps, s)
		}
	}
	return steps
}

// needsRecreate reports whether h differs from w in something the kernel cannot
// change on a live device (or that we do not change in place): its kind, or a
// vxlan's VNI, port, local address or flags.
func needsRecreate(w, h link) bool {
	if w.Kind != h.Kind {
		return true
	}
	if w.Kind == kindVXLAN {
		return w.VNI != h.VNI || w.Port != h.Port || w.Local != h.Local ||
			w.Learning != h.Learning || w.Proxy != h.Proxy
	}
	return false
}

// sortedLinks returns link names in creation order: bridges, vxlans, veths.
func sortedLinks(links map[string]link) []string {
	names := slices.Collect(maps.Keys(links))
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(kindRank(links[a].Kind), kindRank(links[b].Kind)), strings.Compare(a, b))
	})
	return names
}

// planLinkDeletes returns the meshnet devices in have that are not wanted nor
// reserved, in deletion order: veths, then vxlans, then bridges.
func planLinkDeletes(want, have kernelModel, reserved map[string]bool) []link {
	var del []link
	for _, h := range have.Links {
		if _, ok := want.Links[h.Name]; ok || reserved[h.Name] || !managed(h) {
			continue
		}
		del = append(del, h)
	}
	slices.SortFunc(del, func(a, b link) int {
		return cmp.Or(cmp.Compare(kindRank(b.Kind), kindRank(a.Kind)), strings.Compare(a.Name, b.Name))
	})
	return del
}

// wantedDevs is the set of devices whose addresses, FDB and neighbours the
// wanted model fully describes; entries on other devices are left alone.
func wantedDevs(want kernelModel, kinds ...string) map[string]bool {
	devs := map[string]bool{}
	for name, l := range want.Links {
		if slices.Contains(kinds, l.Kind) {
			devs[name] = true
		}
	}
	return devs
}

// planAddrs returns the addresses to add and to delete on wanted bridges. IPv6
// link-local addresses are the kernel's business and are never deleted.
func planAddrs(want, have kernelModel) (add, del []addrEntry) {
	devs := wantedDevs(want, kindBridge)
	haveSet := map[addrEntry]bool{}
	for _, a := range have.Addrs {
		haveSet[a] = true
	}
	wantSet := map[addrEntry]bool{}
	for _, a := range want.Addrs {
		wantSet[a] = true
		if !haveSet[a] {
			add = append(add, a)
		}
	}
	for _, a := range have.Addrs {
		ll6 := a.Prefix.Addr().Is6() && a.Prefix.Addr().IsLinkLocalUnicast()
		if devs[a.Dev] && !wantSet[a] && !ll6 {
			del = append(del, a)
		}
	}
	return add, del
}

// fdbKey identifies one vxlan FDB remote: one MAC may have several.
type fdbKey struct {
	Dev, MAC string
	Dst      netip.Addr
}

func (e fdbEntry) key() fdbKey { return fdbKey{e.Dev, e.MAC, e.Dst} }

// planFDB returns the FDB entries to set (replace) and to delete on wanted vxlan
// devices. An entry the kernel learned, or one with the right destination that
// is not permanent, is replaced, never reported as a conflict.
func planFDB(want, have kernelModel) (set, del []fdbEntry) {
	devs := wantedDevs(want, kindVXLAN)
	haveSet := map[fdbEntry]bool{}
	for _, e := range have.FDB {
		haveSet[e] = true
	}
	wantKeys := map[fdbKey]bool{}
	for _, e := range want.FDB {
		wantKeys[e.key()] = true
		if !haveSet[e] {
			set = append(set, e)
		}
	}
	for _, e := range have.FDB {
		if devs[e.Dev] && !wantKeys[e.key()] {
			del = append(del, e)
		}
	}
	return set, del
}

// neighKey identifies one neighbour entry.
type neighKey struct {
	Dev string
	IP  netip.Addr
}

// planNeigh returns the neighbour entries to set (replace) and to delete on
// wanted vxlan devices.
func planNeigh(want, have kernelModel) (set, del []neighEntry) {
	devs := wantedDevs(want, kindVXLAN)
	haveSet := map[neighEntry]bool{}
	for _, e := range have.Neigh {
		haveSet[e] = true
	}
	wantKeys := map[neighKey]bool{}
	for _, e := range want.Neigh {
		wantKeys[neighKey{e.Dev, e.IP}] = true
		if !haveSet[e] {
			set = append(set, e)
		}
	}
	for _, e := range have.Neigh {
		if devs[e.Dev] && !wantKeys[neighKey{e.Dev, e.IP}] {
			del = append(del, e)
		}
	}
	return set, del
}

// planProxies returns the neighbour proxy entries to add and to delete on
// wanted bridges.
func planProxies(want, have kernelModel) (add, del []proxyEntry) {
	devs := wantedDevs(want, kindBridge)
	haveSet := map[proxyEntry]bool{}
	for _, e := range have.Proxies {
		haveSet[e] = true
	}
	wantSet := map[proxyEntry]bool{}
	for _, e := range want.Proxies {
		wantSet[e] = true
		if !haveSet[e] {
			add = append(add, e)
		}
	}
	for _, e := range have.Proxies {
		if devs[e.Dev] && !wantSet[e] {
			del = append(del, e)
		}
	}
	return add, del
}
