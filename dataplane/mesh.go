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

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The routing mesh (doc.go, "Routing mesh"): a service's port published on
// every host, balanced over its replicas anywhere, the client's address
// kept. Host to host, mesh connections travel over the probe device
// (mnprobe: a VXLAN link between hosts, VNI 1), not through the networks'
// bridges: a replica's host then needs to see nothing of a network's
// bridged frames to take part, which is what lets a network's bridge move
// into a namespace of its own (docs/netns-dataplane.md). Four parts, each
// on the host that needs it:
//
//   - the entry host E (any host with the network): in table ip
//     meshnet-vip's prerouting chain, after the VIPs, a connection to a
//     local address on the published port is DNATed to a replica (numgen
//     inc, as for VIPs) and its conntrack entry gets vipCtMark (so the
//     identity SNAT keeps the client's address) and meshCtMark; chain
//     meshroute, after the DNAT, gives the packets of such a connection to
//     a replica on another host H the mark of H's index, and H's table
//     (owned by the probe, below) routes them to H through mnprobe;
//     iptables FORWARD accepts them out of mnprobe (or out of the bridge
//     for a local replica) in Docker's form, and accepts the replies that
//     come back through mnprobe (meshRules); a client on the replica's own
//     host is SNATed to E (meshHairpin);
//   - the replica's host H: the packet arrives on mnprobe from E's probe
//     MAC; chain meshmark stores E's mesh index (MeshIndex) in the
//     connection's conntrack mark, and copies it to the packet mark of the
//     replica's replies, which are routed (the replica sends them to its
//     gateway);
//   - the tables (probe.go, owned by the probe, which owns the device): per
//     peer P an ip rule fwmark index/0xffff lookup a table of P's whose
//     default route goes to P through mnprobe (P's probe MAC in its FDB).
//     E's packets towards H and H's replies towards E take the same kind
//     of table; E un-NATs the reply and routes it to the client.

// MeshPort is one service port published on every host.
type MeshPort struct {
	Service    string // for comments and logs
	Proto      string // "tcp" or "udp"
	HostPort   uint16
	TargetPort uint16
	// VNI is the network the replicas are reached on (a vxlan network this
	// host has).
	VNI      uint32
	Backends []netip.Addr // healthy replicas anywhere; none = nothing published
	// PreferLocal: connections entering at a host with replicas of its own
	// go to those only; a host without any spreads over all.
	PreferLocal bool
}

func (m MeshPort) normalized() MeshPort {
	m.Backends = slices.Clone(m.Backends)
	slices.SortFunc(m.Backends, netip.Addr.Compare)
	m.Backends = slices.Compact(m.Backends)
	return m
}

func (m MeshPort) equal(o MeshPort) bool {
	return m.Service == o.Service && m.Proto == o.Proto && m.HostPort == o.HostPort && m.TargetPort == o.TargetPort &&
		m.VNI == o.VNI && slices.Equal(m.Backends, o.Backends) && m.PreferLocal == o.PreferLocal
}

// comment names the DNAT rule of m; it carries the whole rule.
func (m MeshPort) comment() string {
	bs := make([]string, len(m.Backends))
	for i, b := range m.Backends {
		bs[i] = b.String()
	}
	local := ""
	if m.PreferLocal {
		local = " prefer local"
	}
	return fmt.Sprintf("%s mesh %s %d %s via %s -> %s :%d%s", commentPrefix, m.Proto, m.HostPort, m.Service,
		BridgeName(m.VNI), strings.Join(bs, ","), m.TargetPort, local)
}

// normalizedMeshPorts sorts, drops what cannot be published (no replica,
// a protocol other than tcp/udp, IPv6 replicas) and keeps one service per
// protocol and host port (the first).
func normalizedMeshPorts(ms []MeshPort) []MeshPort {
	out := make([]MeshPort, 0, len(ms))
	for _, m := range ms {
		m = m.normalized()
		m.Backends = slices.DeleteFunc(m.Backends, func(a netip.Addr) bool { return !a.Is4() })
		if len(m.Backends) == 0 || (m.Proto != "tcp" && m.Proto != "udp") || m.HostPort == 0 || m.TargetPort == 0 {
			continue
		}
		out = append(out, m)
	}
	slices.SortStableFunc(out, func(a, b MeshPort) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.HostPort, b.HostPort))
	})
	return slices.CompactFunc(out, func(a, b MeshPort) bool { return a.Proto == b.Proto && a.HostPort == b.HostPort })
}

// meshOnNetworks keeps the mesh ports of vxlan networks among nets (the
// valid ones), normalized; a port that prefers local replicas and has
// some on this host keeps only those (what this host balances over).
func meshOnNetworks(ms []MeshPort, nets []Network) []MeshPort {
	vx := map[uint32]bool{}
	local := map[netip.Addr]bool{}
	for _, n := range nets {
		if !n.wireguard() && !n.Internal && n.Subnet.Addr().Is4() {
			vx[n.VNI] = true
			for _, l := range n.Locals {
				local[l.Addr.Addr()] = true
			}
		}
	}
	out := normalizedMeshPorts(ms)
	out = slices.DeleteFunc(out, func(m MeshPort) bool { return !vx[m.VNI] })
	for i, m := range out {
		if !m.PreferLocal {
			continue
		}
		mine := slices.DeleteFunc(slices.Clone(m.Backends), func(a netip.Addr) bool { return !local[a] })
		if len(mine) > 0 {
			out[i].Backends = mine
		}
	}
	return out
}

func meshPortsEqual(a, b []MeshPort) bool {
	return slices.EqualFunc(normalizedMeshPorts(a), normalizedMeshPorts(b), MeshPort.equal)
}

// MeshIndex is a host's identity in conntrack and packet marks (the low 16
// bits) and in its return table's ID: the low 16 bits of its IPv4 underlay
// address (unique among hosts of one /16), a hash for IPv6; never 0. Two
// hosts with the same index are reported by the probe's Sync
// (planReturnRoutes).
func MeshIndex(underlay netip.Addr) uint32 {
	a := underlay.Unmap()
	var i uint32
	if a.Is4() {
		b := a.As4()
		i = uint32(b[2])<<8 | uint32(b[3])
	} else {
		h := fnv.New32a()
		s := a.As16()
		h.Write(s[:])
		i = h.Sum32() & meshIndexMask
	}
	if i == 0 {
		i = meshIndexMask
	}
	return i
}

const (
	// meshIndexMask: the mark bits holding an entry host's index.
	meshIndexMask = 0xffff
	// meshTableBase + index is the routing table of an entry host's
	// return path; meshRulePref is its rule's priority (before main).
	meshTableBase = 0x6d6e0000
	meshRulePref  = 1000
	// meshMarkChain is the filter chain (prerouting, priority mangle,
	// after conntrack) that marks replica-side connections.
	meshMarkChain = "meshmark"
	meshPrioMark  = -150
	// meshRouteChain (prerouting, filter, after the DNAT at -110) gives an
	// entry host's mesh packets to a remote replica the mark that routes
	// them to the replica's host.
	meshRouteChain = "meshroute"
	meshPrioRoute  = -90
	// meshCtMark marks a connection DNATed by a mesh port (bit 26 of the
	// conntrack mark): a VIP's connection, bridged, must not be routed
	// over the probe device.
	meshCtMark = 1 << 26
	// meshOutChain (postrouting, filter) clears the index from replies
	// leaving through the probe device: the VXLAN driver routes the outer
	// packet with the inner one's mark, which would send it back into the
	// device (a circular route, dropped).
	meshOutChain = "meshout"
)

// meshHairpin: connections from member Member to one of Backends, which
// run on that member, are SNATed to this host's underlay address. Their
// replies would otherwise never come back here: addressed to a local
// address of the replica's host, they are delivered there (the local
// table is looked up before the return path's rules) and the client,
// expecting this host's address, resets them. Such a client (a process or
// a masqueraded container on the replica's own host) is the one the
// replica sees as the entry host.
type meshHairpin struct {
	Member   netip.Addr
	Backends []netip.Addr
}

func (h meshHairpin) comment() string {
	bs := make([]string, len(h.Backends))
	for i, b := range h.Backends {
		bs[i] = b.String()
	}
	return fmt.Sprintf("%s mesh snat from %v to its own replicas %s", commentPrefix, h.Member, strings.Join(bs, ","))
}

// remoteHosts maps the address of every remote endpoint of nets to the
// underlay address (VTEP) of the host it runs on, IPv4 hosts other than
// self only (the probe device, which carries mesh traffic, is IPv4).
func remoteHosts(nets []Network, self netip.Addr) map[netip.Addr]netip.Addr {
	where := map[netip.Addr]netip.Addr{}
	for _, n := range nets {
		for _, r := range n.Remotes {
			if v := r.VTEP.Unmap(); v.Is4() && v != self.Unmap() {
				where[r.Addr] = v
			}
		}
	}
	return where
}

// meshHairpins groups the mesh ports' remote backends by the member that
// holds them (from the networks' remote endpoints).
func meshHairpins(nets []Network, ports []MeshPort, self netip.Addr) []meshHairpin {
	if len(ports) == 0 {
		return nil // every Apply: no map of every remote endpoint for nothing
	}
	where := remoteHosts(nets, self)
	by := map[netip.Addr][]netip.Addr{}
	for _, m := range ports {
		for _, b := range m.Backends {
			if v, ok := where[b]; ok {
				by[v] = append(by[v], b)
			}
		}
	}
	out := make([]meshHairpin, 0, len(by))
	for v, bs := range by {
		slices.SortFunc(bs, netip.Addr.Compare)
		out = append(out, meshHairpin{Member: v, Backends: slices.Compact(bs)})
	}
	slices.SortFunc(out, func(a, b meshHairpin) int { return a.Member.Compare(b.Member) })
	return out
}

// meshForward is one remote replica an entry host routes mesh packets to,
// and the index of its host (the mark that selects the host's table).
type meshForward struct {
	Backend netip.Addr
	Index   uint32
}

// probeRemotes is remoteHosts less the endpoints of hosts that do not
// take mesh connections over the probe device (an older meshnetd: those
// are bridged into the overlay, where it looks for them).
func probeRemotes(nets []Network, self netip.Addr, probeHosts []netip.Addr) map[netip.Addr]netip.Addr {
	where := remoteHosts(nets, self)
	maps.DeleteFunc(where, func(_, host netip.Addr) bool { return !slices.Contains(probeHosts, host) })
	return where
}

// meshForwards lists the mesh ports' backends on hosts in probeHosts with
// their hosts' indexes, sorted by backend.
func meshForwards(nets []Network, ports []MeshPort, self netip.Addr, probeHosts []netip.Addr) []meshForward {
	if len(ports) == 0 {
		return nil
	}
	where := probeRemotes(nets, self, probeHosts)
	var out []meshForward
	for _, m := range ports {
		for _, b := range m.Backends {
			if v, ok := where[b]; ok {
				out = append(out, meshForward{Backend: b, Index: MeshIndex(v)})
			}
		}
	}
	slices.SortFunc(out, func(a, b meshForward) int { return a.Backend.Compare(b.Backend) })
	return slices.CompactFunc(out, func(a, b meshForward) bool { return a.Backend == b.Backend })
}

// meshRouteComment names chain meshroute's rule; it carries the whole map.
func meshRouteComment(fs []meshForward) string {
	es := make([]string, len(fs))
	for i, f := range fs {
		es[i] = fmt.Sprintf("%v=%d", f.Backend, f.Index)
	}
	return fmt.Sprintf("%s mesh route %s via %s", commentPrefix, strings.Join(es, ","), ProbeDevice)
}

// addMeshHairpins queues, in the postrouting chain before the identity
// SNAT: ct mark & vipCtMark, ip saddr MEMBER, ip daddr { its replicas },
// snat to SELF.
func (d *Kernel) addMeshHairpins(t *nftables.Table, post *nftables.Chain, hs []meshHairpin, self netip.Addr) error {
	for _, h := range hs {
		set := &nftables.Set{Table: t, Anonymous: true, Constant: true, KeyType: nftables.TypeIPAddr}
		var elems []nftables.SetElement
		for _, b := range h.Backends {
			elems = append(elems, nftables.SetElement{Key: b.AsSlice()})
		}
		if err := d.nft.AddSet(set, elems); err != nil {
			return fmt.Errorf("add the replica set of mesh clients from %v: %w", h.Member, err)
		}
		d.nft.AddRule(&nftables.Rule{Table: t, Chain: post, UserData: ruleUserData(h.comment()), Exprs: append(ctMarkHas(vipCtMark),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: h.Member.AsSlice()},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			&expr.Counter{},
			&expr.Immediate{Register: 1, Data: self.Unmap().AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		)})
	}
	return nil
}

// meshMarkSpec is what chain meshmark needs on a replica's host: the
// probe MACs other hosts send mesh connections from, and their indexes; and
// per network, for hosts with an older meshnetd that bridge mesh
// connections into the overlay, their bridge MACs there. Empty: this host
// has no local replica of a mesh port.
type meshMarkSpec struct {
	Probe   map[string]uint32 // probe MAC of another host -> its MeshIndex
	Bridged []meshBridgedMark
}

// meshBridgedMark: on network VNI, connections arriving bridged from a
// source outside Subnet with one of Entries' source MACs.
type meshBridgedMark struct {
	VNI     uint32
	Subnet  netip.Prefix
	Entries map[string]uint32 // bridge MAC of another host -> its MeshIndex
}

func (m meshMarkSpec) empty() bool { return len(m.Probe) == 0 && len(m.Bridged) == 0 }

// macIndexes writes a MAC -> index map as nft would list it, sorted.
func macIndexes(m map[string]uint32) string {
	var es []string
	for mac, idx := range m {
		es = append(es, fmt.Sprintf("%s=%d", mac, idx))
	}
	slices.Sort(es)
	return strings.Join(es, ",")
}

// comments are the spec's rule comments, in chain order.
func (m meshMarkSpec) comments() []string {
	var out []string
	if len(m.Probe) > 0 {
		out = append(out, fmt.Sprintf("%s mesh mark from %s %s", commentPrefix, ProbeDevice, macIndexes(m.Probe)))
	}
	for _, b := range m.Bridged {
		out = append(out, fmt.Sprintf("%s mesh mark %s from %s", commentPrefix, BridgeName(b.VNI), macIndexes(b.Entries)))
	}
	return out
}

const (
	meshCommentRestore = commentPrefix + " mesh restore mark for replies"
	meshCommentClear   = commentPrefix + " mesh clear mark before encapsulation"
)

// meshMarks computes the spec from the networks, the mesh ports, the
// members (self and IPv6 hosts excluded) and which of them send over the
// probe device.
func meshMarks(nets []Network, ports []MeshPort, self netip.Addr, members, probeHosts []netip.Addr) meshMarkSpec {
	used := map[uint32]bool{}
	for _, m := range ports {
		used[m.VNI] = true
	}
	var others []netip.Addr
	for _, a := range members {
		if a = a.Unmap(); a != self.Unmap() && a.Is4() {
			others = append(others, a)
		}
	}
	s := meshMarkSpec{Probe: map[string]uint32{}}
	replicas := false
	for _, n := range nets {
		if !used[n.VNI] || n.wireguard() || len(n.Locals) == 0 || !n.Subnet.Addr().Is4() {
			continue
		}
		replicas = true
		b := meshBridgedMark{VNI: n.VNI, Subnet: n.Subnet.Masked(), Entries: map[string]uint32{}}
		for _, a := range others {
			if !slices.Contains(probeHosts, a) {
				b.Entries[bridgeMAC(a, n.VNI).String()] = MeshIndex(a)
			}
		}
		if len(b.Entries) > 0 {
			s.Bridged = append(s.Bridged, b)
		}
	}
	if replicas {
		for _, a := range others {
			s.Probe[ProbeMAC(a).String()] = MeshIndex(a)
		}
	}
	slices.SortFunc(s.Bridged, func(a, b meshBridgedMark) int { return cmp.Compare(a.VNI, b.VNI) })
	return s
}

// addMeshDNAT queues the DNAT rule of m into the prerouting chain:
// fib daddr type local, PROTO dport PORT, ct mark |= vipCtMark|meshCtMark,
// dnat to numgen inc mod N map { i: Ri } : TARGET.
func (d *Kernel) addMeshDNAT(t *nftables.Table, pre *nftables.Chain, m MeshPort) error {
	mp, err := addReplicaMap(d.nft, t, m.Backends)
	if err != nil {
		return fmt.Errorf("add the replica map of mesh port %s/%d: %w", m.Proto, m.HostPort, err)
	}
	e := []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
	e = append(e, l4Dport(m.Proto, m.HostPort)...)
	e = append(e, &expr.Counter{})
	e = append(e, ctMarkOr(vipCtMark|meshCtMark)...)
	e = append(e, pickReplica(mp, len(m.Backends))...)
	e = append(e,
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(m.TargetPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: pre, UserData: ruleUserData(m.comment()), Exprs: e})
	return nil
}

// addMeshMarks queues chain meshmark: iifname mnprobe ct mark & vipCtMark
// == 0 ct mark set ether saddr map { PROBE-MAC: index } (a connection
// another host sends here; one this host DNATed, whose replies come back
// on mnprobe, is left alone); then iifname "mnbr*" ct mark & 0xffff != 0
// meta mark set ct mark & 0xffff (the replica's replies, routed by the
// tables' rules).
func (d *Kernel) addMeshMarks(t *nftables.Table, spec meshMarkSpec) error {
	ch := d.nft.AddChain(&nftables.Chain{Table: t, Name: meshMarkChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(meshPrioMark)})
	comments := spec.comments()
	if len(spec.Probe) > 0 {
		e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(ProbeDevice))
		e = append(e, ctMarkLacks(vipCtMark)...)
		if err := d.addMACMark(t, ch, e, spec.Probe, comments[0]); err != nil {
			return err
		}
		comments = comments[1:]
	}
	for i, b := range spec.Bridged {
		e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(BridgeName(b.VNI)))
		// ip saddr != SUBNET, as nft writes it in an ip table (no meta
		// nfproto: nft cannot list that before a link-layer match).
		e = append(e, addrNotIn(b.Subnet, false)[2:]...)
		if err := d.addMACMark(t, ch, e, b.Entries, comments[i]); err != nil {
			return err
		}
	}
	e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnamePrefix(BridgePrefix))
	e = append(e, ctMarkHas(meshIndexMask)...)
	e = append(e,
		&expr.Counter{},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	)
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, UserData: ruleUserData(meshCommentRestore), Exprs: e})
	return nil
}

// addMACMark queues, in ch, a rule of match: ... ct mark set ether saddr
// map { MAC: index }.
func (d *Kernel) addMACMark(t *nftables.Table, ch *nftables.Chain, match []expr.Any, entries map[string]uint32, comment string) error {
	mp := &nftables.Set{Table: t, Anonymous: true, Constant: true, IsMap: true,
		KeyType: nftables.TypeEtherAddr, DataType: nftables.TypeMark}
	var me []nftables.SetElement
	for mac, idx := range entries {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return fmt.Errorf("mesh mark map (%s): %w", comment, err)
		}
		me = append(me, nftables.SetElement{Key: hw, Val: binaryutil.NativeEndian.PutUint32(idx)})
	}
	if err := d.nft.AddSet(mp, me); err != nil {
		return fmt.Errorf("add the mesh mark map (%s): %w", comment, err)
	}
	e := append(match,
		// meta iiftype ether: what nft itself puts before a link-layer
		// match outside the bridge family (it cannot list one without).
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}, // ether saddr
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: mp.Name, SetID: mp.ID},
		&expr.Counter{},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	)
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, UserData: ruleUserData(comment), Exprs: e})
	return nil
}

// addMeshRoute queues chain meshroute: ct mark & meshCtMark != 0 meta mark
// set ip daddr map { REPLICA: index } (the packets of a mesh connection
// this host DNATed to a replica on another host; a reply's daddr is the
// client, in no map).
func (d *Kernel) addMeshRoute(t *nftables.Table, fs []meshForward) error {
	ch := d.nft.AddChain(&nftables.Chain{Table: t, Name: meshRouteChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(meshPrioRoute)})
	mp := &nftables.Set{Table: t, Anonymous: true, Constant: true, IsMap: true,
		KeyType: nftables.TypeIPAddr, DataType: nftables.TypeMark}
	var me []nftables.SetElement
	for _, f := range fs {
		me = append(me, nftables.SetElement{Key: f.Backend.AsSlice(), Val: binaryutil.NativeEndian.PutUint32(f.Index)})
	}
	if err := d.nft.AddSet(mp, me); err != nil {
		return fmt.Errorf("add the mesh route map: %w", err)
	}
	e := append(ctMarkHas(meshCtMark),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, // ip daddr
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: mp.Name, SetID: mp.ID},
		&expr.Counter{},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	)
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, UserData: ruleUserData(meshRouteComment(fs)), Exprs: e})
	return nil
}

// addMeshOut queues chain meshout, which clears the index from packets
// leaving through the probe device (see meshOutChain).
func (d *Kernel) addMeshOut(t *nftables.Table) {
	out := d.nft.AddChain(&nftables.Chain{Table: t, Name: meshOutChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(300))})
	e := metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(ProbeDevice))
	e = append(e,
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(meshIndexMask)), Xor: make([]byte, 4)},
		&expr.Counter{},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	)
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: out, UserData: ruleUserData(meshCommentClear), Exprs: e})
}

// meshRules are the iptables FORWARD accepts the routing mesh needs:
// towards each replica on the published target port, in Docker's form for
// published ports, out of the network's bridge (a replica on this host, one
// whose host is not known yet or runs an older meshnetd; on a replica's
// host this also accepts what entry hosts send through the probe device)
// or out of the probe device (a replica on another host); and the replies
// that come back through the probe device.
func meshRules(f firewallSpec, view firewallView) []ruleSpec {
	chain, ok := view.acceptChain[nftables.TableFamilyIPv4]
	if !ok || len(f.MeshPorts) == 0 {
		return nil
	}
	remote := probeRemotes(f.Nets, f.Self, f.MeshProbeHosts)
	var rules []ruleSpec
	for _, m := range f.MeshPorts {
		for _, b := range m.Backends {
			out := BridgeName(m.VNI)
			if _, ok := remote[b]; ok {
				out = ProbeDevice
			}
			pm := PortMapping{Proto: m.Proto, ContainerPort: m.TargetPort}
			rules = append(rules, ruleSpec{Family: nftables.TableFamilyIPv4, Table: iptFilterTable, Chain: chain,
				Comment: fmt.Sprintf("%s accept %s mesh %s %v:%d", commentPrefix, out, m.Proto, b, m.TargetPort),
				Exprs:   acceptPublishedExprs(out, b, pm)})
		}
	}
	rules = append(rules, ruleSpec{Family: nftables.TableFamilyIPv4, Table: iptFilterTable, Chain: chain,
		Comment: fmt.Sprintf("%s accept mesh replies from %s", commentPrefix, ProbeDevice),
		Exprs:   acceptFromEstablishedExprs(ProbeDevice)})
	return dedupe(rules)
}

// returnRoute is one entry host's return path on a replica's host.
type returnRoute struct {
	Name     string
	Underlay netip.Addr
	Index    uint32
}

// planReturnRoutes gives each peer its index and reports peers whose index
// another peer (or this host) has: the first by name keeps it.
func planReturnRoutes(self netip.Addr, peers []ProbePeer) ([]returnRoute, error) {
	byIndex := map[uint32]string{MeshIndex(self): "this host"}
	sorted := slices.Clone(peers)
	slices.SortFunc(sorted, func(a, b ProbePeer) int { return strings.Compare(a.Name, b.Name) })
	var out []returnRoute
	var errs []error
	for _, p := range sorted {
		if !p.Underlay.Unmap().Is4() {
			continue // the probe device and the overlay are IPv4 today
		}
		idx := MeshIndex(p.Underlay)
		if other, taken := byIndex[idx]; taken {
			errs = append(errs, fmt.Errorf("routing mesh: %s (%v) has mesh index %d, as %s has: replies to connections entering at %s are not routed back (give hosts underlay addresses that differ in their last 16 bits)",
				p.Name, p.Underlay, idx, other, p.Name))
			continue
		}
		byIndex[idx] = p.Name
		out = append(out, returnRoute{Name: p.Name, Underlay: p.Underlay.Unmap(), Index: idx})
	}
	return out, errors.Join(errs...)
}

// syncReturnPath makes the return routes exist on the probe device link
// (neighbour, table, rule per route) and removes those of hosts no longer
// listed, unless keep is set.
func syncReturnPath(h *netlink.Handle, link netlink.Link, routes []returnRoute, keep bool) error {
	var errs []error
	idx := link.Attrs().Index
	want := map[int]bool{}
	for _, r := range routes {
		table := int(meshTableBase + r.Index)
		want[table] = true
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: net.IP(r.Underlay.AsSlice()), HardwareAddr: ProbeMAC(r.Underlay)}
		if err := h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("mesh return neighbour %v on %s: %w", r.Underlay, ProbeDevice, err))
		}
		rt := &netlink.Route{LinkIndex: idx, Table: table, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
			Gw: net.IP(r.Underlay.AsSlice()), Flags: int(netlink.FLAG_ONLINK)}
		if err := h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("mesh return route to %s (table %d): %w", r.Name, table, err))
		}
	}
	if !keep {
		wantNeigh := map[netip.Addr]bool{}
		for _, r := range routes {
			wantNeigh[r.Underlay] = true
		}
		if ns, err := h.NeighList(idx, unix.AF_INET); err == nil {
			for _, n := range ns {
				a, _ := netip.AddrFromSlice(n.IP)
				if n.State&netlink.NUD_PERMANENT != 0 && !wantNeigh[a.Unmap()] {
					if err := h.NeighDel(&n); err != nil {
						errs = append(errs, fmt.Errorf("delete mesh return neighbour %v: %w", a, err))
					}
				}
			}
		}
	}
	have, err := meshRules4(h)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	haveTable := map[int]bool{}
	for _, r := range have {
		haveTable[r.Table] = true
		if !want[r.Table] && !keep {
			if err := h.RuleDel(&r); err != nil {
				errs = append(errs, fmt.Errorf("delete mesh return rule (table %d): %w", r.Table, err))
			}
			flushTable(h, r.Table)
		}
	}
	for _, r := range routes {
		table := int(meshTableBase + r.Index)
		if haveTable[table] {
			continue
		}
		rule := netlink.NewRule()
		rule.Family = unix.AF_INET
		rule.Priority = meshRulePref
		rule.Mark = r.Index
		m := uint32(meshIndexMask)
		rule.Mask = &m
		rule.Table = table
		if err := h.RuleAdd(rule); err != nil {
			errs = append(errs, fmt.Errorf("add mesh return rule for %s (fwmark %d/0x%x table %d): %w", r.Name, r.Index, meshIndexMask, table, err))
		}
	}
	return errors.Join(errs...)
}

// meshRules4 lists the IPv4 rules of return paths.
func meshRules4(h *netlink.Handle) ([]netlink.Rule, error) {
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list ip rules: %w", err)
	}
	var out []netlink.Rule
	for _, r := range rules {
		if r.Priority == meshRulePref && r.Table >= meshTableBase && r.Table <= meshTableBase+meshIndexMask {
			out = append(out, r)
		}
	}
	return out, nil
}

// flushTable deletes every route of a return table (the device's own go
// with it; this is for a peer that left while the device stays).
func flushTable(h *netlink.Handle, table int) {
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return
	}
	for _, r := range routes {
		_ = h.RouteDel(&r)
	}
}

// removeReturnPath deletes every return rule and table, and the IPv4
// neighbour entries on link (nil: the device goes anyway): teardown, and a
// probe disabled or told the mesh is not used.
func removeReturnPath(h *netlink.Handle, link netlink.Link) error {
	var errs []error
	if link != nil {
		if ns, err := h.NeighList(link.Attrs().Index, unix.AF_INET); err == nil {
			for _, n := range ns {
				if n.State&netlink.NUD_PERMANENT != 0 {
					if err := h.NeighDel(&n); err != nil {
						errs = append(errs, fmt.Errorf("delete mesh return neighbour %v: %w", n.IP, err))
					}
				}
			}
		}
	}
	rules, err := meshRules4(h)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range rules {
		if err := h.RuleDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete mesh return rule (table %d): %w", r.Table, err))
		}
		flushTable(h, r.Table)
	}
	return errors.Join(errs...)
}

// acceptFromEstablishedExprs: -i DEV -m conntrack --ctstate
// RELATED,ESTABLISHED -j ACCEPT (see acceptReturnExprs for the encoding).
func acceptFromEstablishedExprs(dev string) []expr.Any {
	e := acceptReturnExprs(dev)
	// acceptReturnExprs matches the output interface; this one the input.
	if m, ok := e[0].(*expr.Meta); ok {
		c := *m
		c.Key = expr.MetaKeyIIFNAME
		e[0] = &c
	}
	return e
}
