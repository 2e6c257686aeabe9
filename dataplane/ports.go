package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Published ports, as Docker's bridge driver does them with the userland
// proxy off, in table inet meshnet:
//
//   - chain prerouting (nat, dstnat): a packet to a local address (fib daddr
//     type local, or the mapping's host address) and the host port is
//     DNATed to the container; chain output (nat, dstnat) does the same for
//     the host's own connections, 127.0.0.1 included.
//   - chain postrouting: a connection a container makes to a published port
//     of its own bridge (hairpin) is masqueraded to the gateway, or the
//     reply would go straight back, un-NATed; so is one from 127.0.0.0/8
//     (route_localnet is on for the bridge, or the kernel would drop it as
//     a martian). Nothing else is: the container sees the client's address.
//   - iptables filter (appended to FORWARD): -d ADDR/32 -o BR -p PROTO
//     --dport PORT -j ACCEPT, Docker's own form, so FORWARD DROP lets the
//     new connection through (replies are the "return" accept's).
//   - chain forward: the isolation drop between meshnet bridges spares
//     DNATed connections: publishing a port makes it reachable from every
//     network, as Docker's bridge does through its proxy.
//   - chain raw (prerouting, priority raw): nothing from a meshnet bridge
//     to 127.0.0.0/8 reaches a host socket (route_localnet would otherwise
//     let containers reach the host's loopback services).

const (
	meshnetPrerouting = "prerouting"
	meshnetOutput     = "output"
	// meshnetRaw is a filter chain at prerouting, priority raw: before
	// conntrack, so a reply to a localhost connection (addressed to the
	// gateway until conntrack restores 127.0.0.1) is not mistaken for a
	// container reaching for the host's loopback.
	meshnetRaw = "raw"
	// ipsDstNAT is conntrack's IPS_DST_NAT status bit (the connection was DNATed).
	ipsDstNAT = 1 << 5
)

// PortMapping is one published port of a local endpoint.
type PortMapping struct {
	Proto         string     // "tcp", "udp" or "sctp"
	HostIP        netip.Addr // IPv4; zero = every local address
	HostPort      uint16
	ContainerPort uint16
}

func (m PortMapping) String() string {
	host := "0.0.0.0"
	if m.HostIP.IsValid() {
		host = m.HostIP.String()
	}
	return fmt.Sprintf("%s %s:%d->%d", m.Proto, host, m.HostPort, m.ContainerPort)
}

func (m PortMapping) compare(o PortMapping) int {
	return cmp.Or(cmp.Compare(m.Proto, o.Proto), cmp.Compare(m.HostPort, o.HostPort),
		m.HostIP.Compare(o.HostIP), cmp.Compare(m.ContainerPort, o.ContainerPort))
}

func sortedPorts(ps []PortMapping) []PortMapping {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, PortMapping.compare)
	return slices.Compact(ps)
}

func protoNumber(proto string) (byte, bool) {
	switch proto {
	case "tcp":
		return unix.IPPROTO_TCP, true
	case "udp":
		return unix.IPPROTO_UDP, true
	case "sctp":
		return unix.IPPROTO_SCTP, true
	}
	return 0, false
}

func (m PortMapping) validate() error {
	var errs []error
	if _, ok := protoNumber(m.Proto); !ok {
		errs = append(errs, fmt.Errorf("protocol %q is not tcp, udp or sctp", m.Proto))
	}
	if m.HostPort == 0 || m.ContainerPort == 0 {
		errs = append(errs, errors.New("port 0"))
	}
	if m.HostIP.IsValid() && (!m.HostIP.Is4() || m.HostIP.IsUnspecified()) {
		errs = append(errs, fmt.Errorf("host address %v is not a specific IPv4 address", m.HostIP))
	}
	return errors.Join(errs...)
}

// overlaps reports whether m and o claim the same host port.
func (m PortMapping) overlaps(o PortMapping) bool {
	return m.Proto == o.Proto && m.HostPort == o.HostPort &&
		(!m.HostIP.IsValid() || !o.HostIP.IsValid() || m.HostIP == o.HostIP)
}

// portClaim is a mapping already compiled, for the conflict check.
type portClaim struct {
	m  PortMapping
	id string
}

// checkPorts returns l's mappings that are valid and claim no host port an
// earlier endpoint claimed, and reports the others.
func checkPorts(l LocalEndpoint, claimed *[]portClaim) ([]PortMapping, error) {
	var ok []PortMapping
	var errs []error
	if len(l.Ports) > 0 && !l.Addr.Addr().Is4() {
		return nil, fmt.Errorf("published ports need an IPv4 address, have %v", l.Addr)
	}
	for _, m := range sortedPorts(l.Ports) {
		if err := m.validate(); err != nil {
			errs = append(errs, fmt.Errorf("port %v: %w", m, err))
			continue
		}
		if i := slices.IndexFunc(*claimed, func(c portClaim) bool { return c.m.overlaps(m) }); i >= 0 {
			errs = append(errs, fmt.Errorf("port %v: host port already published by endpoint %s", m, (*claimed)[i].id))
			continue
		}
		*claimed = append(*claimed, portClaim{m, l.ID})
		ok = append(ok, m)
	}
	return ok, errors.Join(errs...)
}

// publishRules are the rules of every published port of the valid networks
// (their ports already checked by compile), and the per-network masquerades
// that make published ports work from the host and from the bridge itself.
func publishRules(f firewallSpec, view firewallView) []ruleSpec {
	var rules []ruleSpec
	inet := func(chain, comment string, exprs []expr.Any) {
		rules = append(rules, ruleSpec{Family: nftables.TableFamilyINet, Table: meshnetTable, Chain: chain,
			Comment: commentPrefix + " " + comment, Exprs: exprs})
	}
	for _, n := range f.Nets {
		if n.Internal || !n.Subnet.Addr().Is4() {
			continue
		}
		br := BridgeName(n.VNI)
		inet(meshnetPostroute, fmt.Sprintf("masquerade hairpin to %s", br),
			append(append(metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(br)), addrIn(n.Subnet.Masked(), false)...),
				append(ctStatusDNAT(expr.CmpOpNeq), &expr.Counter{}, &expr.Masq{})...))
		inet(meshnetPostroute, fmt.Sprintf("masquerade localhost to %s", br),
			append(append(metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(br)),
				addrIn(netip.MustParsePrefix("127.0.0.0/8"), false)...), &expr.Counter{}, &expr.Masq{}))
		for _, l := range n.Locals {
			caddr := l.Addr.Addr()
			for _, m := range l.Ports {
				host := "0.0.0.0"
				if m.HostIP.IsValid() {
					host = m.HostIP.String()
				}
				what := fmt.Sprintf("publish %s %s:%d to %v:%d on %s", m.Proto, host, m.HostPort, caddr, m.ContainerPort, br)
				inet(meshnetPrerouting, what, dnatExprs(m, caddr))
				inet(meshnetOutput, what+" from host", dnatExprs(m, caddr))
				chain, ok := view.acceptChain[nftables.TableFamilyIPv4]
				if !ok {
					continue
				}
				rules = append(rules, ruleSpec{
					Family: nftables.TableFamilyIPv4, Table: iptFilterTable, Chain: chain,
					Comment: fmt.Sprintf("%s accept %s published %s %v:%d", commentPrefix, br, m.Proto, caddr, m.ContainerPort),
					Exprs:   acceptPublishedExprs(br, caddr, m),
				})
			}
		}
	}
	if len(f.Nets) > 0 {
		inet(meshnetRaw, "drop from bridges to 127.0.0.0/8",
			append(append(metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnamePrefix(BridgePrefix)),
				addrIn(netip.MustParsePrefix("127.0.0.0/8"), true)...), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}))
	}
	return dedupe(rules)
}

// dedupe drops rules whose key repeats (two endpoints publishing the same
// container port are told apart by address, so this only guards the accept
// of one endpoint published twice).
func dedupe(rules []ruleSpec) []ruleSpec {
	seen := map[ruleKey]bool{}
	out := rules[:0]
	for _, r := range rules {
		if !seen[r.key()] {
			seen[r.key()] = true
			out = append(out, r)
		}
	}
	return out
}

// ctStatusDNAT: ct status & dnat OP 0 (CmpOpNeq: the connection was
// DNATed; CmpOpEq: it was not).
func ctStatusDNAT(op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: make([]byte, 4)},
	}
}

// l4Dport: meta l4proto PROTO th dport PORT.
func l4Dport(proto string, port uint16) []expr.Any {
	p, _ := protoNumber(proto)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// dnatExprs: meta nfproto ipv4, ip daddr HOSTIP (or fib daddr type local),
// PROTO dport HOSTPORT, dnat ip to CADDR:CPORT.
func dnatExprs(m PortMapping, caddr netip.Addr) []expr.Any {
	var e []expr.Any
	if m.HostIP.IsValid() {
		e = addrIn(netip.PrefixFrom(m.HostIP, 32), true)
	} else {
		e = []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		}
	}
	e = append(e, l4Dport(m.Proto, m.HostPort)...)
	return append(e,
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: caddr.AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(m.ContainerPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
}

// acceptPublishedExprs: -o BR -d CADDR/32 -p PROTO -m PROTO --dport CPORT
// -j ACCEPT, encoded as iptables-nft 1.8 encodes it (the address and port
// as native payload compares, -p as meta l4proto), so iptables -S reads it.
func acceptPublishedExprs(br string, caddr netip.Addr, m PortMapping) []expr.Any {
	e := metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(br))
	e = append(e, iptDest(netip.PrefixFrom(caddr, 32))...)
	e = append(e, l4Dport(m.Proto, m.ContainerPort)...)
	return append(e, acceptVerdict()...)
}

// iptDest is how iptables-nft encodes "-d PREFIX" (see iptSource).
func iptDest(p netip.Prefix) []expr.Any {
	e := iptSource(p)
	if pl, ok := e[0].(*expr.Payload); ok {
		c := *pl
		c.Offset += 4
		if p.Addr().Is6() {
			c.Offset += 12
		}
		e[0] = &c
	}
	return e
}
