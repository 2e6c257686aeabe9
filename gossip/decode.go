package gossip

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
)

// This file is the one place record values are decoded and validated (see
// doc.go, "Record values"): the wire values (values.go, ipamvalues.go)
// turned into typed ones with netip addresses, or refused with the reason.
// Merge admits a peer's record only if it parses here (check.go), and
// Snapshot.View decodes every record once per snapshot with the same
// functions, so what one consumer accepts every other accepts too.

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

// decodeValue unmarshals a record's value into a T.
func decodeValue[T any](r Record) (T, error) {
	var v T
	if err := json.Unmarshal(r.Value, &v); err != nil {
		return v, fmt.Errorf("decode %s record %s: %w", r.Kind, r.Key, err)
	}
	return v, nil
}

// DecodeNode returns a KindNode record's wire value, unchecked: for the
// owner's read-modify-write of its own record. Readers use ParseNode.
func DecodeNode(r Record) (NodeInfo, error) { return decodeValue[NodeInfo](r) }

// DecodeNetwork returns a KindNetwork record's wire value, unchecked.
func DecodeNetwork(r Record) (NetworkInfo, error) { return decodeValue[NetworkInfo](r) }

// DecodeEndpoint returns a KindEndpoint record's wire value, unchecked.
func DecodeEndpoint(r Record) (EndpointInfo, error) { return decodeValue[EndpointInfo](r) }

// DecodeRemoval returns a KindRemoval record's value.
func DecodeRemoval(r Record) (Removal, error) { return decodeValue[Removal](r) }

// Node is a checked KindNode record.
type Node struct {
	Name string // the owner
	Info NodeInfo
	Addr netip.Addr
}

// Network is a checked KindNetwork record.
type Network struct {
	Owner   string
	Info    NetworkInfo
	Subnet  netip.Prefix // masked: a subnet with host bits is refused
	Gateway netip.Addr   // inside Subnet
	// Subnet6 and Gateway6 are a dual-stack network's IPv6 half (Subnet
	// is then IPv4); invalid on a single-family network.
	Subnet6  netip.Prefix
	Gateway6 netip.Addr
}

// Endpoint is a checked KindEndpoint record.
type Endpoint struct {
	ID     string
	Owner  string
	Info   EndpointInfo
	Subnet netip.Prefix
	// Addr is Info.Addr, a bare address inside Subnet: the one form every
	// meshnet version writes. "10.42.0.5/16", which ipam used to take, is
	// refused.
	Addr netip.Addr
	// Subnet6 and Addr6 are Info's on a dual-stack network: an IPv6
	// address inside an IPv6 subnet. Invalid when there are none.
	Subnet6 netip.Prefix
	Addr6   netip.Addr
	// MAC is nil when the record has none: ipam counts its address, the
	// dataplane and DNS have nothing to forward to.
	MAC net.HardwareAddr
	// Up: the owner is up in the snapshot the view was made from.
	Up bool
}

// ParseNode decodes and checks a KindNode record.
func ParseNode(r Record) (Node, error) {
	if r.ID != "" {
		return Node{}, fmt.Errorf("node record with ID %q (a node has one record, ID \"\")", r.ID)
	}
	n, err := DecodeNode(r)
	if err != nil {
		return Node{}, err
	}
	addr, err := netip.ParseAddr(n.Addr)
	if err != nil {
		return Node{}, fmt.Errorf("address: %w", err)
	}
	if err := checkPort(n.GossipPort); err != nil {
		return Node{}, fmt.Errorf("gossip port: %w", err)
	}
	if err := checkPort(n.WireGuardPort); err != nil {
		return Node{}, fmt.Errorf("WireGuard port: %w", err)
	}
	if n.WireGuardKey != "" {
		if b, err := base64.StdEncoding.DecodeString(n.WireGuardKey); err != nil || len(b) != 32 {
			return Node{}, fmt.Errorf("WireGuard key %q is not a base64 32-byte key", n.WireGuardKey)
		}
	}
	if n.NodeKey != "" {
		if _, err := decodeNodeKey(n.NodeKey); err != nil {
			return Node{}, err
		}
	}
	return Node{Name: r.Owner, Info: n, Addr: addr}, nil
}

func checkPort(p int) error {
	if p < 0 || p > 65535 {
		return fmt.Errorf("%d is out of range", p)
	}
	return nil
}

// ParseNetwork decodes and checks a KindNetwork record.
func ParseNetwork(r Record) (Network, error) {
	n, err := DecodeNetwork(r)
	if err != nil {
		return Network{}, err
	}
	subnet, gw, err := parseSubnetGateway(n.Subnet, n.Gateway)
	if err != nil {
		return Network{}, err
	}
	out := Network{Owner: r.Owner, Info: n, Subnet: subnet, Gateway: gw}
	if n.Subnet6 != "" || n.Gateway6 != "" {
		if out.Subnet6, out.Gateway6, err = parseSubnetGateway(n.Subnet6, n.Gateway6); err != nil {
			return Network{}, fmt.Errorf("IPv6 half: %w", err)
		}
		if !subnet.Addr().Is4() || !out.Subnet6.Addr().Is6() {
			return Network{}, fmt.Errorf("dual-stack network with subnets %s and %s: want an IPv4 subnet and an IPv6 one, in that order", subnet, out.Subnet6)
		}
	}
	if n.VNI > maxVNI {
		return Network{}, fmt.Errorf("VNI %d is over the 24-bit limit %d", n.VNI, maxVNI)
	}
	if n.MTU < 0 || n.MTU > 65535 {
		return Network{}, fmt.Errorf("MTU %d is out of range", n.MTU)
	}
	return out, nil
}

// parseSubnetGateway parses a masked subnet and a gateway inside it.
func parseSubnetGateway(subnetText, gatewayText string) (netip.Prefix, netip.Addr, error) {
	subnet, err := netip.ParsePrefix(subnetText)
	if err != nil {
		return subnet, netip.Addr{}, fmt.Errorf("subnet: %w", err)
	}
	if subnet != subnet.Masked() || subnet.Addr().Is4In6() {
		return subnet, netip.Addr{}, fmt.Errorf("subnet %s has host bits set or is an IPv4-mapped prefix", subnet)
	}
	gw, err := netip.ParseAddr(gatewayText)
	if err != nil {
		return subnet, gw, fmt.Errorf("gateway: %w", err)
	}
	if !subnet.Contains(gw) {
		return subnet, gw, fmt.Errorf("gateway %s is outside subnet %s", gw, subnet)
	}
	return subnet, gw, nil
}

// ParseEndpoint decodes and checks a KindEndpoint record. Up is left
// false: it is a fact of a snapshot, not of the record.
func ParseEndpoint(r Record) (Endpoint, error) {
	e, err := DecodeEndpoint(r)
	if err != nil {
		return Endpoint{}, err
	}
	subnet, err := netip.ParsePrefix(e.Subnet)
	if err != nil {
		return Endpoint{}, fmt.Errorf("subnet: %w", err)
	}
	addr, err := netip.ParseAddr(e.Addr)
	if err != nil {
		return Endpoint{}, fmt.Errorf("address: %w (a bare address, as meshnet writes it)", err)
	}
	addr = addr.Unmap()
	if !subnet.Contains(addr) {
		return Endpoint{}, fmt.Errorf("address %s is outside subnet %s", addr, subnet)
	}
	var subnet6 netip.Prefix
	var addr6 netip.Addr
	if e.Addr6 != "" || e.Subnet6 != "" {
		if subnet6, err = netip.ParsePrefix(e.Subnet6); err != nil {
			return Endpoint{}, fmt.Errorf("IPv6 subnet: %w", err)
		}
		if addr6, err = netip.ParseAddr(e.Addr6); err != nil {
			return Endpoint{}, fmt.Errorf("IPv6 address: %w", err)
		}
		if !addr6.Is6() || addr6.Is4In6() || addr6.Zone() != "" || !subnet.Addr().Is4() || !subnet6.Contains(addr6) {
			return Endpoint{}, fmt.Errorf("IPv6 address %q in %q on subnet %s: a dual-stack endpoint has an IPv4 address in its IPv4 subnet and an IPv6 one in its IPv6 subnet", e.Addr6, e.Subnet6, subnet)
		}
	}
	// No MAC: nothing to forward to (the daemon skips it; ipam counts
	// the address). A MAC that is there must be an Ethernet one.
	var mac net.HardwareAddr
	if e.MAC != "" {
		if mac, err = net.ParseMAC(e.MAC); err != nil {
			return Endpoint{}, fmt.Errorf("MAC: %w", err)
		}
		if len(mac) != 6 {
			return Endpoint{}, fmt.Errorf("MAC %s is not an Ethernet address", e.MAC)
		}
	}
	return Endpoint{ID: r.ID, Owner: r.Owner, Info: e, Subnet: subnet, Addr: addr, Subnet6: subnet6, Addr6: addr6, MAC: mac}, nil
}

// VIP is a checked KindVIP record.
type VIP struct {
	Owner   string
	Subnet  netip.Prefix // masked
	Service string
	Addr    netip.Addr // inside Subnet
}

// ParseVIP decodes and checks a KindVIP record: its ID must be
// "<subnet> <service>" of its value, so one service has one record per owner.
func ParseVIP(r Record) (VIP, error) {
	v, err := decodeValue[VIPInfo](r)
	if err != nil {
		return VIP{}, err
	}
	subnet, err := netip.ParsePrefix(v.Subnet)
	if err != nil {
		return VIP{}, fmt.Errorf("subnet: %w", err)
	}
	if subnet != subnet.Masked() {
		return VIP{}, fmt.Errorf("subnet %s has host bits set", subnet)
	}
	if v.Service == "" {
		return VIP{}, errors.New("no service name")
	}
	addr, err := netip.ParseAddr(v.Addr)
	if err != nil {
		return VIP{}, fmt.Errorf("address: %w", err)
	}
	addr = addr.Unmap()
	if !subnet.Contains(addr) {
		return VIP{}, fmt.Errorf("address %s is outside subnet %s", addr, subnet)
	}
	if want := subnet.String() + " " + v.Service; r.ID != want {
		return VIP{}, fmt.Errorf("ID %q does not name its value (%q)", r.ID, want)
	}
	return VIP{Owner: r.Owner, Subnet: subnet, Service: v.Service, Addr: addr}, nil
}

// ParseRemoval decodes and checks a KindRemoval record.
func ParseRemoval(r Record) (Removal, error) {
	if r.ID == "" {
		return Removal{}, errors.New("removal of no node (empty ID)")
	}
	rm, err := DecodeRemoval(r)
	if err != nil {
		return Removal{}, err
	}
	// A removal hides the removed node's records up to UpTo. Its writer
	// can only know of versions up to its own clock at the write, so an
	// UpTo above the record's own version hides writes yet to come.
	if rm.UpTo > r.Version {
		return Removal{}, fmt.Errorf("removal up to version %d, after the removal itself (%d)", rm.UpTo, r.Version)
	}
	return rm, nil
}

// Block is a checked KindBlock record.
type Block struct {
	Owner   string
	Version uint64
	ID      string
	Value   BlockRecord
	Pool    netip.Prefix
	Prefix  netip.Prefix // masked, inside Pool
	// Held is Value.Held parsed, the addresses outside Prefix left out.
	Held []netip.Addr
}

// ParseBlock decodes and checks a KindBlock record: its ID must be the one
// BlockID gives for its value, its prefix a masked prefix inside its pool.
func ParseBlock(r Record) (Block, error) {
	b, err := decodeValue[BlockRecord](r)
	if err != nil {
		return Block{}, err
	}
	if r.ID != BlockID(b.Pool, b.Prefix, b.Origin) {
		return Block{}, fmt.Errorf("block record ID %q does not name its pool, prefix and lineage", r.ID)
	}
	pool, err1 := netip.ParsePrefix(b.Pool)
	p, err2 := netip.ParsePrefix(b.Prefix)
	if err1 != nil || err2 != nil || p != p.Masked() || p.Bits() < pool.Bits() || !pool.Contains(p.Addr()) {
		return Block{}, fmt.Errorf("block %q is no masked prefix of pool %q", b.Prefix, b.Pool)
	}
	out := Block{Owner: r.Owner, Version: r.Version, ID: r.ID, Value: b, Pool: pool, Prefix: p}
	// A held list that does not parse is left out as a whole, as ipam
	// always did: the claim still counts.
	if held, err := ParseAddrList(b.Held); err == nil {
		for _, a := range held {
			if p.Contains(a) {
				out.Held = append(out.Held, a)
			}
		}
	}
	return out, nil
}

// ParsePool decodes and checks a KindPool record.
func ParsePool(r Record) (PoolRecord, error) {
	p, err := decodeValue[PoolRecord](r)
	if err != nil {
		return PoolRecord{}, err
	}
	if p.Subnet != r.ID || p.Origin.IsZero() {
		return PoolRecord{}, fmt.Errorf("pool record %q names subnet %q or no lineage", r.ID, p.Subnet)
	}
	return p, nil
}

// ParseRequest decodes and checks a KindRequest record.
func ParseRequest(r Record) (RequestRecord, error) {
	rr, err := decodeValue[RequestRecord](r)
	if err != nil {
		return RequestRecord{}, err
	}
	if rr.Subnet != r.ID {
		return RequestRecord{}, fmt.Errorf("request record %q names subnet %q", r.ID, rr.Subnet)
	}
	return rr, nil
}

// EncodeAddrList writes a set of addresses compactly, as block records'
// Held lists carry them: sorted, runs as "a-b".
func EncodeAddrList(addrs []netip.Addr) []string {
	if len(addrs) == 0 {
		return nil
	}
	s := append([]netip.Addr(nil), addrs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Less(s[j]) })
	var out []string
	start, prev := s[0], s[0]
	flush := func() {
		if start == prev {
			out = append(out, start.String())
		} else {
			out = append(out, start.String()+"-"+prev.String())
		}
	}
	for _, a := range s[1:] {
		if a == prev {
			continue
		}
		if a == prev.Next() {
			prev = a
			continue
		}
		flush()
		start, prev = a, a
	}
	flush()
	return out
}

// maxAddrList bounds what one record can make a node expand.
const maxAddrList = 1 << 16

// ParseAddrList reads what EncodeAddrList wrote.
func ParseAddrList(in []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range in {
		lo, hi, isRange := strings.Cut(s, "-")
		a, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("address list entry %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = netip.ParseAddr(hi); err != nil {
				return nil, fmt.Errorf("address list entry %q: %w", s, err)
			}
			if b.Less(a) || a.Is4() != b.Is4() {
				return nil, fmt.Errorf("address list entry %q: not an ascending range", s)
			}
		}
		for x := a; ; x = x.Next() {
			if len(out) >= maxAddrList {
				return nil, fmt.Errorf("address list longer than %d", maxAddrList)
			}
			out = append(out, x)
			if x == b {
				break
			}
		}
	}
	return out, nil
}
