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

// Anti-spoofing, in table bridge meshnet: frames are judged where they enter
// a meshnet bridge from a container's veth, before the bridge looks at them.
//
// Chain prerouting (filter, bridge prerouting, priority -200) drops what a
// container sends that is not its own:
//
//   - a source MAC other than its own (set port_mac: host veth . MAC);
//   - IPv4 with a source other than its address (set port_ip4: host veth .
//     address), 0.0.0.0 included: addresses are static, nothing needs it;
//   - ARP that is not Ethernet/IPv4, or whose sender MAC or address is not
//     its own (so it cannot poison a neighbour's ARP cache);
//   - IPv6 with a source other than its address on a dual-stack network (set
//     port_ip6), a link-local address or :: (duplicate address detection);
//     neighbour advertisements for a global address not its own (so it
//     cannot poison a neighbour's cache, the IPv6 form of the ARP rules);
//     router advertisements and redirects: a container must not become its
//     neighbours' IPv6 router (Weave's CVE-2020-11091);
//   - every other ether type (VLAN tags included).
//
// Chain forward (filter, bridge forward, priority -200) drops ARP on its way
// to a container unless it is about that container's address: a broadcast
// ARP request is still flooded by the bridge, but each container receives
// only the requests for itself, so its neighbours' conversations do not even
// show as who-has.
//
// Every rule only drops, so the order of rules does not matter (a rule
// re-added after someone deleted it lands last and is still right), and
// rules name ports only through the two sets: they never change as
// containers come and go; Apply adds and removes set elements. A veth that
// is in no set (a port Apply has not finished) can send nothing. What
// arrives from the vxlan port was checked on the host it came from.
//
// Everything inside the container's namespace is untouched: DNS to
// 127.0.0.11 is answered there (sandbox package), and replies to published
// ports and hairpin connections leave the container with its own addresses.

const (
	l2Table      = "meshnet" // family bridge
	l2Prerouting = "prerouting"
	l2Forward    = "forward"
	portMACSet   = "port_mac"
	portIP4Set   = "port_ip4"
	portIP6Set   = "port_ip6"
	// l2Priority is the bridge family's "filter" priority.
	l2Priority = -200
)

// Ether types a container may send.
const (
	etherIPv4 = 0x0800
	etherARP  = 0x0806
	etherIPv6 = 0x86dd
)

// ICMPv6 types no container may send on a meshnet network.
const (
	icmpv6RouterAdvert   = 134
	icmpv6NeighborAdvert = 136
	icmpv6Redirect       = 137
)

var (
	portMACType = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)
	portIP4Type = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
	portIP6Type = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)
)

// l2Spec is what table bridge meshnet depends on.
type l2Spec struct {
	Active bool            // some network is valid or reserved: the table exists
	Ports  []LocalEndpoint // the valid local endpoints
	// Keep are host veths of networks left alone (invalid): their elements
	// are neither added nor removed, so such containers keep talking.
	Keep map[string]bool
}

// ifnameKey is an interface name as nftables keys it: 16 bytes, NUL padded.
func ifnameKey(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// portMACKey is a port_mac element: ifname, MAC, two bytes of padding (each
// part of a concatenation fills whole 32-bit registers).
func portMACKey(port string, mac []byte) []byte {
	return append(append(ifnameKey(port), mac...), 0, 0)
}

func portIP4Key(port string, a netip.Addr) []byte {
	b := a.As4()
	return append(ifnameKey(port), b[:]...)
}

func portIP6Key(port string, a netip.Addr) []byte {
	b := a.As16()
	return append(ifnameKey(port), b[:]...)
}

// l2Elements are the wanted elements of each set, keyed by their bytes.
func (s l2Spec) elements() map[string]map[string][]byte {
	out := map[string]map[string][]byte{portMACSet: {}, portIP4Set: {}, portIP6Set: {}}
	for _, l := range s.Ports {
		k := portMACKey(l.HostIf, l.MAC)
		out[portMACSet][string(k)] = k
		if a := l.Addr.Addr(); a.Is4() {
			k := portIP4Key(l.HostIf, a)
			out[portIP4Set][string(k)] = k
		}
		// An IPv6-only network's endpoint has its IPv6 address in Addr.
		for _, a := range []netip.Addr{l.Addr.Addr(), l.Addr6.Addr()} {
			if a.Is6() {
				k := portIP6Key(l.HostIf, a)
				out[portIP6Set][string(k)] = k
			}
		}
	}
	return out
}

// keyPort returns the interface name a set element starts with.
func keyPort(key []byte) string {
	if len(key) < 16 {
		return ""
	}
	n := slices.Index(key[:16], 0)
	if n < 0 {
		n = 16
	}
	return string(key[:n])
}

// Register numbers: NFT_REG_1 is 16 bytes (the interface name of a
// concatenation); NFT_REG32_04 follows it.
const (
	reg1    = 1
	reg32_4 = 12
)

// l2Rules are the rules of table bridge meshnet, all drops.
func l2Rules() []ruleSpec {
	var rules []ruleSpec
	rule := func(chain, comment string, e ...[]expr.Any) {
		var all []expr.Any
		for _, x := range e {
			all = append(all, x...)
		}
		all = append(all, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
		rules = append(rules, ruleSpec{Family: nftables.TableFamilyBridge, Table: l2Table, Chain: chain,
			Comment: commentPrefix + " " + comment, Exprs: all})
	}
	fromContainer := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnamePrefix(HostVethPrefix))
	toContainer := metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnamePrefix(HostVethPrefix))
	// port . FIELD != @SET, the port being the in- or output interface.
	notOwn := func(port expr.MetaKey, base expr.PayloadBase, off, n uint32, set string) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: port, Register: reg1},
			&expr.Payload{DestRegister: reg32_4, Base: base, Offset: off, Len: n},
			&expr.Lookup{SourceRegister: reg1, SetName: set, Invert: true},
		}
	}
	etherType := func(t uint16) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(t)},
		}
	}
	const (
		nh = expr.PayloadBaseNetworkHeader
		ll = expr.PayloadBaseLLHeader
	)
	rule(l2Prerouting, "from container: source MAC not its own", fromContainer,
		notOwn(expr.MetaKeyIIFNAME, ll, 6, 6, portMACSet))
	rule(l2Prerouting, "from container: ether type not IPv4, ARP or IPv6", fromContainer, []expr.Any{
		&expr.Payload{DestRegister: 1, Base: ll, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.BigEndian.PutUint16(etherIPv4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.BigEndian.PutUint16(etherARP)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.BigEndian.PutUint16(etherIPv6)},
	})
	rule(l2Prerouting, "from container: IPv4 source not its own", fromContainer, etherType(etherIPv4),
		notOwn(expr.MetaKeyIIFNAME, nh, 12, 4, portIP4Set))
	// htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4: the offsets below
	// hold for no other ARP.
	rule(l2Prerouting, "from container: ARP not Ethernet/IPv4", fromContainer, etherType(etherARP), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: nh, Offset: 0, Len: 6},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 1, 8, 0, 6, 4}},
	})
	rule(l2Prerouting, "from container: ARP sender MAC not its own", fromContainer, etherType(etherARP),
		notOwn(expr.MetaKeyIIFNAME, nh, 8, 6, portMACSet))
	rule(l2Prerouting, "from container: ARP sender address not its own", fromContainer, etherType(etherARP),
		notOwn(expr.MetaKeyIIFNAME, nh, 14, 4, portIP4Set))
	// fe80::/10: the first 10 bits of the address at off.
	notLinkLocal := func(base expr.PayloadBase, off uint32) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: 2},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0xfe, 0x80}},
		}
	}
	icmpv6Type := func(typ byte) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}},
		}
	}
	rule(l2Prerouting, "from container: IPv6 source not link-local, unspecified or its own", fromContainer, etherType(etherIPv6),
		notLinkLocal(nh, 8), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: nh, Offset: 8, Len: 16},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 16)},
		},
		notOwn(expr.MetaKeyIIFNAME, nh, 8, 16, portIP6Set))
	// The target address of a neighbour advertisement follows the ICMPv6
	// header (4 bytes) and the flags (4).
	rule(l2Prerouting, "from container: IPv6 neighbour advertisement not about its address", fromContainer, etherType(etherIPv6),
		icmpv6Type(icmpv6NeighborAdvert), notLinkLocal(expr.PayloadBaseTransportHeader, 8),
		notOwn(expr.MetaKeyIIFNAME, expr.PayloadBaseTransportHeader, 8, 16, portIP6Set))
	for _, t := range []struct {
		typ  byte
		name string
	}{{icmpv6RouterAdvert, "router advertisement"}, {icmpv6Redirect, "redirect"}} {
		rule(l2Prerouting, "from container: IPv6 "+t.name, fromContainer, etherType(etherIPv6), icmpv6Type(t.typ))
	}
	rule(l2Forward, "to container: ARP not about its address", toContainer, etherType(etherARP),
		notOwn(expr.MetaKeyOIFNAME, nh, 24, 4, portIP4Set))
	return rules
}

// l2View is what exists of table bridge meshnet.
type l2View struct {
	table  bool
	chains map[string]bool
	sets   map[string]*nftables.Set
}

func (d *Kernel) l2View() (l2View, error) {
	v := l2View{chains: map[string]bool{}, sets: map[string]*nftables.Set{}}
	tables, err := d.nft.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return v, fmt.Errorf("list nftables bridge tables: %w", err)
	}
	for _, t := range tables {
		v.table = v.table || t.Name == l2Table
	}
	if !v.table {
		return v, nil
	}
	chains, err := d.nft.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return v, fmt.Errorf("list nftables bridge chains: %w", err)
	}
	for _, c := range chains {
		if c.Table.Name == l2Table {
			v.chains[c.Name] = true
		}
	}
	t := &nftables.Table{Name: l2Table, Family: nftables.TableFamilyBridge}
	sets, err := d.nft.GetSets(t)
	if err != nil {
		return v, fmt.Errorf("list sets of table bridge meshnet: %w", err)
	}
	for _, s := range sets {
		v.sets[s.Name] = s
	}
	return v, nil
}

func (d *Kernel) l2RuleRefs(v l2View) ([]ruleRef, error) {
	var refs []ruleRef
	var errs []error
	t := &nftables.Table{Name: l2Table, Family: nftables.TableFamilyBridge}
	for _, c := range []string{l2Prerouting, l2Forward} {
		if !v.chains[c] {
			continue
		}
		rules, err := d.nft.GetRules(t, &nftables.Chain{Name: c})
		if err != nil {
			errs = append(errs, fmt.Errorf("list rules of bridge meshnet %s: %w", c, err))
			continue
		}
		for _, r := range rules {
			refs = append(refs, ruleRef{Family: t.Family, Table: l2Table, Chain: c, Comment: ruleComment(r.UserData), Handle: r.Handle})
		}
	}
	return refs, errors.Join(errs...)
}

// syncL2Adds creates table bridge meshnet, its chains, sets and rules as
// far as they are missing, and adds the elements of new ports.
func (d *Kernel) syncL2Adds(s l2Spec) error {
	if !s.Active {
		return nil
	}
	v, err := d.l2View()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: l2Table, Family: nftables.TableFamilyBridge}
	if !v.table {
		d.nft.AddTable(t)
		d.changed("add nftables table bridge meshnet")
	}
	accept := nftables.ChainPolicyAccept
	for _, c := range []nftables.Chain{
		{Name: l2Prerouting, Hooknum: nftables.ChainHookPrerouting},
		{Name: l2Forward, Hooknum: nftables.ChainHookForward},
	} {
		if v.chains[c.Name] {
			continue
		}
		c.Table, c.Type, c.Priority, c.Policy = t, nftables.ChainTypeFilter, nftables.ChainPriorityRef(l2Priority), &accept
		d.nft.AddChain(&c)
		d.changed("add nftables chain bridge meshnet " + c.Name)
	}
	var errs []error
	want := s.elements()
	// The sets, and their elements, before the rules that look them up.
	for _, w := range []struct {
		name string
		typ  nftables.SetDatatype
	}{{portMACSet, portMACType}, {portIP4Set, portIP4Type}, {portIP6Set, portIP6Type}} {
		set, ok := v.sets[w.name]
		var add []nftables.SetElement
		if ok {
			have, err := d.nft.GetSetElements(set)
			if err != nil {
				errs = append(errs, fmt.Errorf("list nftables set bridge meshnet %s: %w", w.name, err))
				continue
			}
			got := map[string]bool{}
			for _, e := range have {
				got[string(e.Key)] = true
			}
			for k, key := range want[w.name] {
				if !got[k] && !s.Keep[keyPort(key)] {
					add = append(add, nftables.SetElement{Key: key})
				}
			}
			if len(add) == 0 {
				continue
			}
			if err := d.nft.SetAddElements(set, add); err != nil {
				errs = append(errs, fmt.Errorf("add to nftables set bridge meshnet %s: %w", w.name, err))
				continue
			}
		} else {
			for _, key := range want[w.name] {
				add = append(add, nftables.SetElement{Key: key})
			}
			set = &nftables.Set{Table: t, Name: w.name, KeyType: w.typ, Concatenation: true}
			if err := d.nft.AddSet(set, add); err != nil {
				errs = append(errs, fmt.Errorf("add nftables set bridge meshnet %s: %w", w.name, err))
				continue
			}
			d.changed("add nftables set bridge meshnet " + w.name)
		}
		for _, e := range add {
			d.changed(fmt.Sprintf("add %s to %s", elementString(w.name, e.Key), w.name))
		}
	}
	have, err := d.l2RuleRefs(v)
	errs = append(errs, err)
	add, _ := planRules(l2Rules(), have)
	for _, r := range add {
		d.nft.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    &nftables.Chain{Name: r.Chain},
			Exprs:    r.Exprs,
			UserData: ruleUserData(r.Comment),
		})
		d.changed(fmt.Sprintf("add rule bridge meshnet %s: %s", r.Chain, r.Comment))
	}
	if err := d.nft.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("write table bridge meshnet: %w", err))
	}
	return errors.Join(errs...)
}

// syncL2Deletes removes the elements of ports that are gone and rules that
// are not wanted, or the whole table when no network is left.
func (d *Kernel) syncL2Deletes(s l2Spec) error {
	v, err := d.l2View()
	if err != nil {
		return err
	}
	if !v.table {
		return nil
	}
	t := &nftables.Table{Name: l2Table, Family: nftables.TableFamilyBridge}
	if !s.Active {
		d.nft.DelTable(t)
		d.changed("delete nftables table bridge meshnet")
		if err := d.nft.Flush(); err != nil {
			return fmt.Errorf("delete table bridge meshnet: %w", err)
		}
		return nil
	}
	var errs []error
	want := s.elements()
	for name, set := range v.sets {
		w, ok := want[name]
		if !ok {
			continue
		}
		have, err := d.nft.GetSetElements(set)
		if err != nil {
			errs = append(errs, fmt.Errorf("list nftables set bridge meshnet %s: %w", name, err))
			continue
		}
		var del []nftables.SetElement
		for _, e := range have {
			if _, ok := w[string(e.Key)]; !ok && !s.Keep[keyPort(e.Key)] {
				del = append(del, nftables.SetElement{Key: e.Key})
			}
		}
		if len(del) == 0 {
			continue
		}
		if err := d.nft.SetDeleteElements(set, del); err != nil {
			errs = append(errs, fmt.Errorf("remove from nftables set bridge meshnet %s: %w", name, err))
			continue
		}
		for _, e := range del {
			d.changed(fmt.Sprintf("remove %s from %s", elementString(name, e.Key), name))
		}
	}
	have, err := d.l2RuleRefs(v)
	errs = append(errs, err)
	_, del := planRules(l2Rules(), have)
	for _, r := range del {
		if err := d.nft.DelRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Name: r.Chain}, Handle: r.Handle}); err != nil {
			errs = append(errs, fmt.Errorf("delete rule bridge meshnet %s %q: %w", r.Chain, r.Comment, err))
			continue
		}
		d.changed(fmt.Sprintf("delete rule bridge meshnet %s: %s", r.Chain, r.Comment))
	}
	if err := d.nft.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("update table bridge meshnet: %w", err))
	}
	return errors.Join(errs...)
}

// elementString renders a set element for the log: "mnh1234 . 02:..".
func elementString(set string, key []byte) string {
	port := keyPort(key)
	if len(key) < 20 {
		return port
	}
	rest := key[16:]
	if set == portMACSet && len(rest) >= 6 {
		return fmt.Sprintf("%s . %x:%x:%x:%x:%x:%x", port, rest[0], rest[1], rest[2], rest[3], rest[4], rest[5])
	}
	n := 4
	if set == portIP6Set && len(rest) >= 16 {
		n = 16
	}
	a, _ := netip.AddrFromSlice(rest[:n])
	return fmt.Sprintf("%s . %v", port, a)
}
