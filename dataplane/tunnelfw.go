package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Firewall rules for the tunnels, in table inet meshnet.
//
// Tunnel ports: a VXLAN or WireGuard packet is accepted only as tunnel
// traffic, i.e. from a current member's underlay address arriving on the
// interface that address is routed through (fib saddr . iif oif: a forged
// member source arriving from a container's veth, a bridge or lo fails
// it). The kernel's VXLAN socket decapsulates whatever reaches its port,
// so without this anyone who can send a UDP packet to a host could inject
// frames into an overlay; WireGuard authenticates, but there is no reason
// to let strangers make it compute. Members live in two named sets
// (members4, members6) whose elements follow State.Members, so the rules
// themselves never change when hosts come and go.
//
// A member's own address is a member's, though: what leaves a member host
// must be kept from the tunnel ports too. Forwarded packets (containers on
// meshnet's or Docker's bridges, masqueraded to the host's address) may not
// go to a member's tunnel port at all. The host's own sockets may not send to
// a member's VXLAN port (chain localout, meta skuid: the kernel's VXLAN
// socket has no owner, so encapsulated frames do not match). A host
// process's packet into an overlay is encapsulated with that process's
// socket still attached, so packets routed out of a meshnet bridge are
// first marked (overlayMark), and marked packets pass. WireGuard's port is
// left out: wireguard-go sends from meshnetd's own socket, and WireGuard
// drops what it cannot authenticate.
//
// WireGuard isolation: every wireguard network shares one WireGuard device,
// so the forward chain drops what crosses between the device and a bridge
// with an address outside that bridge's subnet: a container of one network
// cannot reach another network through a peer, nor another network's remote
// blocks through the local device.

const (
	meshnetInput = "input"
	// meshnetLocalOut is a filter chain at the output hook (the nat chain
	// "output" cannot drop).
	meshnetLocalOut = "localout"
	membersSet4     = "members4"
	membersSet6     = "members6"
	// overlayMark is the packet mark bit that exempts a host packet routed
	// into an overlay from the host-socket drop once it is encapsulated. It
	// is set with "mark | bit" and tested with "mark & bit", so other
	// users of marks keep theirs; policy routing that matches this bit would
	// see it.
	overlayMark = 0x01000000
)

// firewallSpec is everything the wanted rules depend on.
type firewallSpec struct {
	Nets          []Network // valid networks only
	Members       []netip.Addr
	VXLANPort     int
	WireGuardPort int
	Tunnel        string // WireGuard device; "" = none
	// AllowDockerBridges leaves out the drops between Docker's bridges and
	// meshnet's (State.AllowDockerBridges).
	AllowDockerBridges bool
	// MeshPorts this host publishes (normalized, on valid vxlan networks).
	MeshPorts []MeshPort
	// Self is this host's underlay address (which endpoints are remote).
	Self netip.Addr
	// MeshProbeHosts: State.MeshProbeHosts.
	MeshProbeHosts []netip.Addr
}

// tunnelPorts returns the UDP ports to guard: VXLAN's when a vxlan network
// exists, WireGuard's when a wireguard one does.
func (f firewallSpec) tunnelPorts() []int {
	var vx, wg bool
	for _, n := range f.Nets {
		if n.wireguard() {
			wg = true
		} else {
			vx = true
		}
	}
	var ports []int
	if vx {
		ports = append(ports, f.VXLANPort)
	}
	if wg && f.Tunnel != "" && f.WireGuardPort != f.VXLANPort {
		ports = append(ports, f.WireGuardPort)
	}
	return ports
}

// members splits the member addresses by family, sorted and unique.
func (f firewallSpec) members() (v4, v6 []netip.Addr) {
	for _, a := range f.Members {
		a = a.Unmap()
		if a.Is4() {
			v4 = append(v4, a)
		} else if a.Is6() {
			v6 = append(v6, a)
		}
	}
	for _, s := range []*[]netip.Addr{&v4, &v6} {
		slices.SortFunc(*s, netip.Addr.Compare)
		*s = slices.Compact(*s)
	}
	return v4, v6
}

// tunnelRules are the rules of table inet meshnet that guard tunnel ports
// and isolate wireguard networks.
func tunnelRules(f firewallSpec) []ruleSpec {
	var rules []ruleSpec
	inet := func(chain, comment string, first bool, exprs []expr.Any) {
		rules = append(rules, ruleSpec{Family: nftables.TableFamilyINet, Table: meshnetTable, Chain: chain,
			Comment: commentPrefix + " " + comment, Exprs: exprs, First: first})
	}
	drop := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	for _, port := range f.tunnelPorts() {
		for _, fam := range []struct {
			name, set string
			v6        bool
		}{{"ip", membersSet4, false}, {"ip6", membersSet6, true}} {
			inet(meshnetInput, fmt.Sprintf("tunnel udp %d accept %s members on their route", port, fam.name), true,
				append(append(udpPortMatch(port, fam.v6, fam.set, false), fibSaddrIif()...), acceptVerdict()...))
			inet(meshnetForward, fmt.Sprintf("tunnel udp %d drop forwarded to %s members", port, fam.name), false,
				append(udpPortMatch(port, fam.v6, fam.set, true), drop...))
			if port == f.VXLANPort && port != f.WireGuardPort {
				// The socket's owner first: every packet the vxlan devices
				// send meets this rule, and for them (no owner) it ends
				// there, before the set lookup.
				inet(meshnetLocalOut, fmt.Sprintf("tunnel udp %d drop host sockets to %s members", port, fam.name), false,
					append(append(hostSocketNotOverlay(), udpPortMatch(port, fam.v6, fam.set, true)...), drop...))
			}
		}
		inet(meshnetInput, fmt.Sprintf("tunnel udp %d drop others", port), false, append(udpPort(port), drop...))
	}
	if slices.Contains(f.tunnelPorts(), f.VXLANPort) && f.VXLANPort != f.WireGuardPort {
		inet(meshnetLocalOut, "tunnel mark host packets into overlays", true, markOverlay())
	}
	if f.Tunnel == "" || !slices.ContainsFunc(f.Nets, Network.wireguard) {
		return rules
	}
	// What comes out of the tunnel goes to a meshnet bridge and nowhere
	// else: not the underlay, not Docker's other networks.
	onlyBridges := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(f.Tunnel))
	onlyBridges = append(onlyBridges, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ifnamePrefix(BridgePrefix))...)
	inet(meshnetForward, fmt.Sprintf("isolate %s to bridges only", f.Tunnel), false, append(onlyBridges, drop...))
	for _, n := range f.Nets {
		if !n.wireguard() {
			continue
		}
		br, subnet := BridgeName(n.VNI), n.Subnet.Masked()
		in := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(f.Tunnel))
		in = append(in, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(br))...)
		inet(meshnetForward, fmt.Sprintf("isolate %s from %s outside %v", br, f.Tunnel, subnet), false,
			append(append(in, addrNotIn(subnet, false)...), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}))
		out := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(br))
		out = append(out, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(f.Tunnel))...)
		inet(meshnetForward, fmt.Sprintf("isolate %s to %s outside %v", br, f.Tunnel, subnet), false,
			append(append(out, addrNotIn(subnet, true)...), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}))
		// Only the network's own bridge may send to its remote blocks.
		others := metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(f.Tunnel))
		others = append(others, addrIn(subnet, true)...)
		others = append(others, metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, ifnameExact(br))...)
		inet(meshnetForward, fmt.Sprintf("isolate %s remote blocks from other interfaces", br), false, append(others, drop...))
	}
	return rules
}

// fibSaddrIif: fib saddr . iif oif != 0, the reverse-path check: the source
// is routed back through the interface the packet came in by.
func fibSaddrIif() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// hostSocketNotOverlay: meta skuid >= 0 (the packet belongs to a socket a
// process owns; the kernel's tunnel sockets have no owner, and the match
// fails), meta mark & overlayMark == 0.
func hostSocketNotOverlay() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(overlayMark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
	}
}

// markOverlay: oifname "mnbr*" meta mark set mark | overlayMark.
func markOverlay() []expr.Any {
	e := metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnamePrefix(BridgePrefix))
	return append(e,
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(overlayMark)), Xor: binaryutil.NativeEndian.PutUint32(overlayMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		&expr.Counter{},
	)
}

// udpPort: meta l4proto udp udp dport PORT.
func udpPort(port int) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(port))},
	}
}

// udpPortMatch: meta nfproto FAMILY, udp dport PORT, ip[6] saddr|daddr @SET.
func udpPortMatch(port int, v6 bool, set string, daddr bool) []expr.Any {
	proto, off, size := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if v6 {
		proto, off, size = unix.NFPROTO_IPV6, 8, 16
	}
	if daddr {
		off += size
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	e = append(e, udpPort(port)...)
	return append(e,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	)
}

// addrNotIn: meta nfproto FAMILY, ip[6] saddr|daddr != SUBNET.
func addrNotIn(subnet netip.Prefix, daddr bool) []expr.Any {
	return addrMatch(subnet, daddr, expr.CmpOpNeq)
}

// addrIn: meta nfproto FAMILY, ip[6] saddr|daddr SUBNET.
func addrIn(subnet netip.Prefix, daddr bool) []expr.Any {
	return addrMatch(subnet, daddr, expr.CmpOpEq)
}

func addrMatch(subnet netip.Prefix, daddr bool, op expr.CmpOp) []expr.Any {
	proto, off, size := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if subnet.Addr().Is6() {
		proto, off, size = unix.NFPROTO_IPV6, 8, 16
	}
	if daddr {
		off += size
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
	}
	if subnet.Bits() < int(size*8) {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size,
			Mask: netipMask(subnet.Bits(), int(size*8)), Xor: make([]byte, size)})
	}
	return append(e, &expr.Cmp{Op: op, Register: 1, Data: subnet.Addr().AsSlice()})
}

// iptSource is how iptables-nft encodes "-s PREFIX": a byte-aligned prefix
// loads and compares only its bytes; any other loads the whole address and
// masks it.
func iptSource(p netip.Prefix) []expr.Any {
	off, size := uint32(12), uint32(4)
	if p.Addr().Is6() {
		off, size = 8, 16
	}
	addr := p.Masked().Addr().AsSlice()
	if p.Bits()%8 == 0 {
		n := uint32(p.Bits() / 8)
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:n]},
		}
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: netipMask(p.Bits(), int(size*8)), Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
	}
}

// acceptFromTunnelExprs: -s SUBNET -i TUNNEL -o BR -j ACCEPT (new connections
// from remote containers of the network; replies are the "return" rule's).
func acceptFromTunnelExprs(tunnel, br string, subnet netip.Prefix) []expr.Any {
	e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(tunnel))
	e = append(e, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(br))...)
	e = append(e, iptSource(subnet)...)
	return append(e, acceptVerdict()...)
}

// masqueradeOffSubnetExprs: like masqueradeExprs, but only for destinations
// outside the subnet: a wireguard network's traffic to its remote blocks
// leaves through the WireGuard device and must keep its source.
func masqueradeOffSubnetExprs(subnet netip.Prefix, br string) []expr.Any {
	e := masqueradeExprs(subnet, br)
	// Insert "daddr != subnet" before the counter and masq.
	tail := e[len(e)-2:]
	head := slices.Clone(e[:len(e)-2])
	head = append(head, addrNotIn(subnet, true)[2:]...) // nfproto is already matched
	return append(head, tail...)
}

// syncMemberSets makes the member sets exist (when the table does) and
// holds exactly the wanted addresses: additions now, removals when
// deletes is true (Apply's last phase).
func (d *Kernel) syncMemberSets(f firewallSpec, tableExists, deletes bool) error {
	t := &nftables.Table{Name: meshnetTable, Family: nftables.TableFamilyINet}
	v4, v6 := f.members()
	have := map[string]*nftables.Set{}
	if tableExists {
		sets, err := d.nft.GetSets(t)
		if err != nil {
			return fmt.Errorf("list nftables sets: %w", err)
		}
		for _, s := range sets {
			have[s.Name] = s
		}
	}
	var errs []error
	for _, w := range []struct {
		name  string
		typ   nftables.SetDatatype
		addrs []netip.Addr
	}{{membersSet4, nftables.TypeIPAddr, v4}, {membersSet6, nftables.TypeIP6Addr, v6}} {
		s, ok := have[w.name]
		if !ok {
			if deletes {
				continue
			}
			s = &nftables.Set{Table: t, Name: w.name, KeyType: w.typ}
			if err := d.nft.AddSet(s, setElements(w.addrs)); err != nil {
				errs = append(errs, fmt.Errorf("add nftables set %s: %w", w.name, err))
				continue
			}
			d.changed(fmt.Sprintf("add nftables set inet meshnet %s %v", w.name, w.addrs))
			continue
		}
		elems, err := d.nft.GetSetElements(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("list nftables set %s: %w", w.name, err))
			continue
		}
		cur := map[netip.Addr]bool{}
		for _, e := range elems {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				cur[a] = true
			}
		}
		var add, del []netip.Addr
		for _, a := range w.addrs {
			if !cur[a] {
				add = append(add, a)
			}
			delete(cur, a)
		}
		for a := range cur {
			del = append(del, a)
		}
		if !deletes && len(add) > 0 {
			if err := d.nft.SetAddElements(s, setElements(add)); err != nil {
				errs = append(errs, fmt.Errorf("add to nftables set %s: %w", w.name, err))
			} else {
				d.changed(fmt.Sprintf("add members %v to %s", add, w.name))
			}
		}
		if deletes && len(del) > 0 {
			if err := d.nft.SetDeleteElements(s, setElements(del)); err != nil {
				errs = append(errs, fmt.Errorf("remove from nftables set %s: %w", w.name, err))
			} else {
				d.changed(fmt.Sprintf("remove members %v from %s", del, w.name))
			}
		}
	}
	return errors.Join(errs...)
}

func setElements(addrs []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, nftables.SetElement{Key: a.AsSlice()})
	}
	return out
}
