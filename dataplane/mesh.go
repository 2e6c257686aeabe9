package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
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
// kept. Four parts, each on the host that needs it:
//
//   - the entry host E (any host with the network): in table ip
//     meshnet-vip's prerouting chain, after the VIPs, a connection to a
//     local address on the published port is DNATed to a replica (numgen
//     inc, as for VIPs) and its conntrack entry gets vipCtMark, so the
//     identity SNAT keeps the client's address; iptables FORWARD accepts it
//     towards the replica (Docker's form) and accepts the replies that come
//     back through the probe device (meshRules); a client on the replica's
//     own host is SNATed to E (meshHairpin);
//   - the replica's host H: the DNATed packet arrives bridged from the
//     overlay with E's bridge MAC as its source and a source address outside
//     the subnet; chain meshmark stores E's mesh index (MeshIndex) in the
//     connection's conntrack mark, and copies it to the packet mark of the
//     replica's replies, which are routed (the replica sends them to its
//     gateway);
//   - H's return path (probe.go, owned by the probe, which owns the device):
//     per peer E an ip rule fwmark index/0xffff lookup a table of E's whose
//     default route goes to E through the probe device (mnprobe: host to
//     host over VXLAN, E's probe MAC in its FDB). E un-NATs the reply and
//     routes it to the client.

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

// meshHairpins groups the mesh ports' remote backends by the member that
// holds them (from the networks' remote endpoints).
func meshHairpins(nets []Network, ports []MeshPort, self netip.Addr) []meshHairpin {
	where := map[netip.Addr]netip.Addr{} // container address -> its host's VTEP
	for _, n := range nets {
		for _, r := range n.Remotes {
			where[r.Addr] = r.VTEP.Unmap()
		}
	}
	by := map[netip.Addr][]netip.Addr{}
	for _, m := range ports {
		for _, b := range m.Backends {
			if v, ok := where[b]; ok && v.Is4() && v != self.Unmap() {
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

// meshMarkSpec is what chain meshmark needs on a replica's host: per
// network with mesh ports and local replicas, the bridge MACs other hosts
// send from on it, and their indexes.
type meshMarkSpec struct {
	VNI     uint32
	Subnet  netip.Prefix
	Entries map[string]uint32 // bridge MAC of another host -> its MeshIndex
}

func (m meshMarkSpec) comment() string {
	var es []string
	for mac, idx := range m.Entries {
		es = append(es, fmt.Sprintf("%s=%d", mac, idx))
	}
	slices.Sort(es)
	return fmt.Sprintf("%s mesh mark %s from %s", commentPrefix, BridgeName(m.VNI), strings.Join(es, ","))
}

const (
	meshCommentRestore = commentPrefix + " mesh restore mark for replies"
	meshCommentClear   = commentPrefix + " mesh clear mark before encapsulation"
)

// meshMarks computes the specs from the networks, the mesh ports and the
// members (self excluded).
func meshMarks(nets []Network, ports []MeshPort, self netip.Addr, members []netip.Addr) []meshMarkSpec {
	used := map[uint32]bool{}
	for _, m := range ports {
		used[m.VNI] = true
	}
	var out []meshMarkSpec
	for _, n := range nets {
		if !used[n.VNI] || n.wireguard() || len(n.Locals) == 0 || !n.Subnet.Addr().Is4() {
			continue
		}
		s := meshMarkSpec{VNI: n.VNI, Subnet: n.Subnet.Masked(), Entries: map[string]uint32{}}
		for _, a := range members {
			if a.Unmap() == self.Unmap() {
				continue
			}
			s.Entries[bridgeMAC(a.Unmap(), n.VNI).String()] = MeshIndex(a)
		}
		if len(s.Entries) > 0 {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b meshMarkSpec) int { return cmp.Compare(a.VNI, b.VNI) })
	return out
}

// addMeshDNAT queues the DNAT rule of m into the prerouting chain:
// fib daddr type local, PROTO dport PORT, ct mark |= vipCtMark, dnat to
// numgen inc mod N map { i: Ri } : TARGET.
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
	e = append(e, ctMarkOr(vipCtMark)...)
	e = append(e, pickReplica(mp, len(m.Backends))...)
	e = append(e,
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(m.TargetPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: pre, UserData: ruleUserData(m.comment()), Exprs: e})
	return nil
}

// addMeshMarks queues chain meshmark: per spec, iifname BR ip saddr !=
// SUBNET ct mark set ether saddr map { MAC: index }; then iifname "mnbr*"
// ct mark & 0xffff != 0 meta mark set ct mark & 0xffff (the replica's
// replies, routed by the return path's rules).
func (d *Kernel) addMeshMarks(t *nftables.Table, specs []meshMarkSpec) error {
	ch := d.nft.AddChain(&nftables.Chain{Table: t, Name: meshMarkChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(meshPrioMark)})
	for _, s := range specs {
		mp := &nftables.Set{Table: t, Anonymous: true, Constant: true, IsMap: true,
			KeyType: nftables.TypeEtherAddr, DataType: nftables.TypeMark}
		var me []nftables.SetElement
		for mac, idx := range s.Entries {
			hw, err := net.ParseMAC(mac)
			if err != nil {
				return fmt.Errorf("mesh mark map of %s: %w", BridgeName(s.VNI), err)
			}
			me = append(me, nftables.SetElement{Key: hw, Val: binaryutil.NativeEndian.PutUint32(idx)})
		}
		if err := d.nft.AddSet(mp, me); err != nil {
			return fmt.Errorf("add the mesh mark map of %s: %w", BridgeName(s.VNI), err)
		}
		e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(BridgeName(s.VNI)))
		// ip saddr != SUBNET, as nft writes it in an ip table (no meta
		// nfproto: nft cannot list that before a link-layer match).
		src := addrNotIn(s.Subnet, false)[2:]
		e = append(e, src...)
		e = append(e,
			// meta iiftype ether: what nft itself puts before a link-layer
			// match outside the bridge family (it cannot list one without).
			&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}, // ether saddr
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: mp.Name, SetID: mp.ID},
			&expr.Counter{},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		)
		d.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, UserData: ruleUserData(s.comment()), Exprs: e})
	}
	e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnamePrefix(BridgePrefix))
	e = append(e, ctMarkHas(meshIndexMask)...)
	e = append(e,
		&expr.Counter{},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	)
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: ch, UserData: ruleUserData(meshCommentRestore), Exprs: e})
	out := d.nft.AddChain(&nftables.Chain{Table: t, Name: meshOutChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(300))})
	e = metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(ProbeDevice))
	e = append(e,
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(meshIndexMask)), Xor: make([]byte, 4)},
		&expr.Counter{},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	)
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: out, UserData: ruleUserData(meshCommentClear), Exprs: e})
	return nil
}

// meshRules are the iptables FORWARD accepts the entry host needs: towards
// each replica on the published target port (Docker's form for published
// ports), and the replies that come back through the probe device.
func meshRules(f firewallSpec, view firewallView) []ruleSpec {
	chain, ok := view.acceptChain[nftables.TableFamilyIPv4]
	if !ok || len(f.MeshPorts) == 0 {
		return nil
	}
	var rules []ruleSpec
	for _, m := range f.MeshPorts {
		br := BridgeName(m.VNI)
		for _, b := range m.Backends {
			pm := PortMapping{Proto: m.Proto, ContainerPort: m.TargetPort}
			rules = append(rules, ruleSpec{Family: nftables.TableFamilyIPv4, Table: iptFilterTable, Chain: chain,
				Comment: fmt.Sprintf("%s accept %s mesh %s %v:%d", commentPrefix, br, m.Proto, b, m.TargetPort),
				Exprs:   acceptPublishedExprs(br, b, pm)})
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
