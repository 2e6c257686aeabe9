package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// The firewall has two homes.
//
// meshnet's own table, inet "meshnet", holds what is meshnet's alone: masquerade
// for traffic leaving a network's subnet through anything but its bridge, the
// drop that isolates networks from each other, an internal network's drops,
// and the DNAT of published ports (ports.go).
//
// The iptables "filter" table (family ip and ip6, as iptables-nft keeps it) holds
// accepts. Docker sets the FORWARD policy to DROP and turns on br_netfilter, so
// both bridged frames on a meshnet bridge and routed egress cross that chain; an
// accept in another table cannot overrule a drop there, so the accepts must be in
// that very chain. They are appended to FORWARD, after the jumps Docker inserts
// at its head (DOCKER-USER first, then its isolation or DOCKER-FORWARD), so an
// operator's drop in DOCKER-USER and Docker's own rules are seen first. They are
// encoded exactly as iptables-nft encodes "-i", "-o", "-m conntrack --ctstate"
// and "-j ACCEPT", and carry a rule comment, so that iptables -S, and Docker's
// own iptables calls, still parse the chain.

const (
	meshnetTable     = "meshnet"
	meshnetForward   = "forward"
	meshnetPostroute = "postrouting"
	iptFilterTable   = "filter"
	iptForward       = "FORWARD"
	iptDockerUser    = "DOCKER-USER"
	// commentPrefix marks every rule meshnet writes; rules are found by it.
	commentPrefix = "meshnet:"
)

// xt_conntrack state bits: XT_CONNTRACK_STATE_BIT(ctinfo) = 1 << (ctinfo+1).
const (
	ctStateEstablished = 1 << 1
	ctStateRelated     = 1 << 2
)

// ruleSpec is one rule meshnet wants. Comment identifies it and encodes every
// parameter of the rule, so equal comments mean equal rules.
type ruleSpec struct {
	Family  nftables.TableFamily
	Table   string
	Chain   string
	Comment string
	Exprs   []expr.Any
	// First puts the rule at the head of its chain (accepts that must come
	// before a drop in the same chain); otherwise it is appended. Rules in
	// the iptables filter table are always appended.
	First bool
}

// ruleRef is one meshnet rule found in the kernel.
type ruleRef struct {
	Family  nftables.TableFamily
	Table   string
	Chain   string
	Comment string
	Handle  uint64
	// Misplaced: the rule sits in FORWARD ahead of Docker's jump to
	// DOCKER-USER, where it would overrule the operator's drops; it is
	// deleted and appended again.
	Misplaced bool
}

type ruleKey struct {
	Family                nftables.TableFamily
	Table, Chain, Comment string
}

func (r ruleSpec) key() ruleKey { return ruleKey{r.Family, r.Table, r.Chain, r.Comment} }
func (r ruleRef) key() ruleKey  { return ruleKey{r.Family, r.Table, r.Chain, r.Comment} }

// firewallView is what the firewall looks like before meshnet touches it.
type firewallView struct {
	// acceptChain maps an iptables family (ip, ip6) to the chain of its "filter"
	// table that receives meshnet's accepts (FORWARD); a family without a
	// FORWARD chain there is absent: nothing drops, so nothing is needed.
	acceptChain map[nftables.TableFamily]string
	// dockerUser: the family's filter table has a DOCKER-USER chain (where
	// meshnet's accepts used to go: old ones are found there and removed).
	dockerUser map[nftables.TableFamily]bool
	// meshnetChains are the chains of table inet meshnet that exist.
	meshnetTable  bool
	meshnetChains map[string]bool
}

// wantRules compiles the rules the valid networks imply, given the view.
func wantRules(f firewallSpec, view firewallView) []ruleSpec {
	var rules []ruleSpec
	for _, n := range f.Nets {
		br := BridgeName(n.VNI)
		rules = append(rules, ruleSpec{
			Family: nftables.TableFamilyINet, Table: meshnetTable, Chain: meshnetForward,
			Comment: fmt.Sprintf("%s isolate %s except published", commentPrefix, br),
			Exprs:   isolateExprs(br),
		})
		for _, s := range n.subnets() {
			switch {
			case n.Internal:
				rules = append(rules, internalRules(br, s)...)
			case s.Addr().Is6() && n.IPv6Routed:
				// Left as it is: the operator routes the subnet.
			default:
				// NAT for IPv6 too (NAT66), as Docker does for IPv6
				// networks: a ULA subnet reaches nothing outside
				// unless it is masqueraded.
				rules = append(rules, masqueradeRule(n, br, s))
			}
		}
		for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
			chain, ok := view.acceptChain[fam]
			if !ok {
				continue
			}
			for _, r := range []struct {
				what  string
				exprs []expr.Any
			}{
				{"bridged", acceptBridgedExprs(br)},
				{"egress", acceptEgressExprs(br)},
				{"return", acceptReturnExprs(br)},
			} {
				if n.Internal && r.what == "egress" {
					continue
				}
				rules = append(rules, ruleSpec{
					Family: fam, Table: iptFilterTable, Chain: chain,
					Comment: fmt.Sprintf("%s accept %s %s", commentPrefix, br, r.what),
					Exprs:   r.exprs,
				})
			}
			for _, s := range n.subnets() {
				if n.wireguard() && f.Tunnel != "" && (fam == nftables.TableFamilyIPv6) == s.Addr().Is6() {
					rules = append(rules, ruleSpec{
						Family: fam, Table: iptFilterTable, Chain: chain,
						Comment: fmt.Sprintf("%s accept %s from %s", commentPrefix, br, f.Tunnel),
						Exprs:   acceptFromTunnelExprs(f.Tunnel, br, s),
					})
				}
			}
		}
	}
	rules = append(rules, publishRules(f, view)...)
	rules = append(rules, meshRules(f, view)...)
	rules = append(rules, dockerBridgeRules(f)...)
	return append(rules, tunnelRules(f)...)
}

// masqueradeRule masquerades what leaves subnet s of network n through
// anything but its bridge; on a wireguard network only what leaves for
// outside the subnet (its remote blocks keep their sources).
func masqueradeRule(n Network, br string, s netip.Prefix) ruleSpec {
	r := ruleSpec{
		Family: nftables.TableFamilyINet, Table: meshnetTable, Chain: meshnetPostroute,
		Comment: fmt.Sprintf("%s masquerade %v from %s", commentPrefix, s, br),
		Exprs:   masqueradeExprs(s, br),
	}
	if n.wireguard() {
		r.Comment += " off subnet"
		r.Exprs = masqueradeOffSubnetExprs(s, br)
	}
	return r
}

// internalRules keep an internal network's traffic inside its subnet (one
// call per subnet of a dual-stack network), as Docker's
// bridge does (-i BR ! -d SUBNET -j DROP, -o BR ! -s SUBNET -j DROP): its
// bridge, vxlan device and tunnel routes carry only the subnet's own
// addresses, so other hosts' containers of the network stay reachable.
func internalRules(br string, subnet netip.Prefix) []ruleSpec {
	drop := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	out := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(br))
	out = append(append(out, addrNotIn(subnet, true)...), drop...)
	in := metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(br))
	in = append(append(in, addrNotIn(subnet, false)...), drop...)
	return []ruleSpec{
		{Family: nftables.TableFamilyINet, Table: meshnetTable, Chain: meshnetForward,
			Comment: fmt.Sprintf("%s internal %s drop to outside %v", commentPrefix, br, subnet), Exprs: out},
		{Family: nftables.TableFamilyINet, Table: meshnetTable, Chain: meshnetForward,
			Comment: fmt.Sprintf("%s internal %s drop from outside %v", commentPrefix, br, subnet), Exprs: in},
	}
}

// planRules returns the wanted rules that are missing (or misplaced) and the
// meshnet rules that are no longer wanted (also duplicates of a wanted one, and
// misplaced ones).
func planRules(want []ruleSpec, have []ruleRef) (add []ruleSpec, del []ruleRef) {
	wantSet := map[ruleKey]bool{}
	for _, r := range want {
		wantSet[r.key()] = true
	}
	haveSet := map[ruleKey]bool{}
	for _, r := range have {
		if !wantSet[r.key()] || haveSet[r.key()] || r.Misplaced {
			del = append(del, r)
		}
		if !r.Misplaced {
			haveSet[r.key()] = true
		}
	}
	for _, r := range want {
		if !haveSet[r.key()] {
			add = append(add, r)
			haveSet[r.key()] = true
		}
	}
	slices.SortFunc(del, func(a, b ruleRef) int {
		return cmp.Or(strings.Compare(a.Chain, b.Chain), cmp.Compare(a.Handle, b.Handle))
	})
	return add, del
}

// ifnameExact is how iptables-nft encodes "-i NAME": the name and its NUL.
func ifnameExact(name string) []byte { return append([]byte(name), 0) }

// ifnamePrefix is how iptables-nft encodes "-i NAME+": the name without NUL.
func ifnamePrefix(prefix string) []byte { return []byte(prefix) }

func metaIfname(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

func acceptVerdict() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}}
}

// acceptBridgedExprs: -i BR -o BR -j ACCEPT (frames bridged between ports of BR,
// seen by iptables through br_netfilter).
func acceptBridgedExprs(br string) []expr.Any {
	e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(br))
	e = append(e, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(br))...)
	return append(e, acceptVerdict()...)
}

// acceptEgressExprs: -i BR ! -o mnbr+ -j ACCEPT (containers leaving the overlay).
func acceptEgressExprs(br string) []expr.Any {
	e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(br))
	e = append(e, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ifnamePrefix(BridgePrefix))...)
	return append(e, acceptVerdict()...)
}

// acceptReturnExprs: -o BR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT.
// iptables 1.8.9 encodes --ctstate as the xt "conntrack" match revision 3, and
// it cannot parse a native nftables "ct state" back: a native expression here
// would make iptables -S refuse the whole chain.
func acceptReturnExprs(br string) []expr.Any {
	e := metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameExact(br))
	e = append(e, &expr.Match{
		Name: "conntrack",
		Rev:  3,
		Info: &xt.ConntrackMtinfo3{ConntrackMtinfo2: xt.ConntrackMtinfo2{
			ConntrackMtinfoBase: xt.ConntrackMtinfoBase{MatchFlags: uint16(xt.ConntrackState)},
			StateMask:           ctStateEstablished | ctStateRelated,
		}},
	})
	return append(e, acceptVerdict()...)
}

// isolateExprs: iifname BR oifname "mnbr*" oifname != BR ct status & dnat
// == 0 drop. A DNATed connection is one to a published port, which every
// network may reach (both directions carry the status).
func isolateExprs(br string) []expr.Any {
	e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameExact(br))
	e = append(e, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnamePrefix(BridgePrefix))...)
	e = append(e, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifnameExact(br)})
	e = append(e, ctStatusDNAT(expr.CmpOpEq)...)
	return append(e, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// masqueradeExprs: meta nfproto FAMILY, saddr SUBNET, oifname != BR, masquerade.
// Bridged frames seen through br_netfilter have oifname BR and are left alone.
func masqueradeExprs(subnet netip.Prefix, br string) []expr.Any {
	proto, off, size := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if subnet.Addr().Is6() {
		proto, off, size = unix.NFPROTO_IPV6, 8, 16
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
	}
	if subnet.Bits() < int(size*8) {
		mask := netipMask(subnet.Bits(), int(size*8))
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: subnet.Addr().AsSlice()})
	e = append(e, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ifnameExact(br))...)
	return append(e, &expr.Counter{}, &expr.Masq{})
}

func netipMask(ones, bits int) []byte {
	m := make([]byte, bits/8)
	for i := 0; i < ones; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// ruleBridge returns the bridge a meshnet rule comment names.
func ruleBridge(comment string) string {
	for _, f := range strings.Fields(comment) {
		if strings.HasPrefix(f, BridgePrefix) {
			return f
		}
	}
	return ""
}

// jumpsTo reports whether r jumps to chain (as iptables' "-j CHAIN" does).
func jumpsTo(r *nftables.Rule, chain string) bool {
	for _, e := range r.Exprs {
		if v, ok := e.(*expr.Verdict); ok && v.Kind == expr.VerdictJump && v.Chain == chain {
			return true
		}
	}
	return false
}

// ruleUserData is a rule's comment as nftables stores it.
func ruleUserData(comment string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, comment)
}

func ruleComment(udata []byte) string {
	s, _ := userdata.GetString(udata, userdata.TypeComment)
	return s
}

// firewallView reads which tables and chains exist.
func (d *Kernel) firewallView() (firewallView, error) {
	view := firewallView{acceptChain: map[nftables.TableFamily]string{},
		dockerUser: map[nftables.TableFamily]bool{}, meshnetChains: map[string]bool{}}
	var errs []error
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet} {
		chains, err := d.nft.ListChainsOfTableFamily(fam)
		if err != nil {
			errs = append(errs, fmt.Errorf("list nftables chains of family %d: %w", fam, err))
			continue
		}
		names := map[string]bool{}
		table := iptFilterTable
		if fam == nftables.TableFamilyINet {
			table = meshnetTable
		}
		for _, c := range chains {
			if c.Table.Name == table {
				names[c.Name] = true
			}
		}
		if fam == nftables.TableFamilyINet {
			view.meshnetChains = names
			continue
		}
		if names[iptForward] {
			view.acceptChain[fam] = iptForward
		}
		view.dockerUser[fam] = names[iptDockerUser]
	}
	tables, err := d.nft.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		errs = append(errs, fmt.Errorf("list nftables tables: %w", err))
	}
	for _, t := range tables {
		if t.Name == meshnetTable {
			view.meshnetTable = true
		}
	}
	return view, errors.Join(errs...)
}

// firewallRules lists the meshnet rules in the kernel: every rule of table inet
// meshnet, and the commented ones in the iptables FORWARD and DOCKER-USER chains
// (the latter only to remove them). A meshnet rule in FORWARD ahead of a jump
// to DOCKER-USER is marked misplaced.
func (d *Kernel) firewallRules(view firewallView) ([]ruleRef, error) {
	type place struct {
		fam          nftables.TableFamily
		table, chain string
	}
	var places []place
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		if _, ok := view.acceptChain[fam]; ok {
			places = append(places, place{fam, iptFilterTable, iptForward})
		}
		if view.dockerUser[fam] {
			places = append(places, place{fam, iptFilterTable, iptDockerUser})
		}
	}
	for c := range view.meshnetChains {
		places = append(places, place{nftables.TableFamilyINet, meshnetTable, c})
	}
	var refs []ruleRef
	var errs []error
	for _, p := range places {
		rules, err := d.nft.GetRules(&nftables.Table{Name: p.table, Family: p.fam}, &nftables.Chain{Name: p.chain})
		if err != nil {
			errs = append(errs, fmt.Errorf("list rules of %s %s: %w", p.table, p.chain, err))
			continue
		}
		lastJump := -1 // index of FORWARD's last jump to DOCKER-USER
		if p.chain == iptForward {
			for i, r := range rules {
				if jumpsTo(r, iptDockerUser) {
					lastJump = i
				}
			}
		}
		for i, r := range rules {
			c := ruleComment(r.UserData)
			if p.table == iptFilterTable && !strings.HasPrefix(c, commentPrefix) {
				continue // not ours
			}
			refs = append(refs, ruleRef{Family: p.fam, Table: p.table, Chain: p.chain, Comment: c, Handle: r.Handle,
				Misplaced: i < lastJump})
		}
	}
	return refs, errors.Join(errs...)
}

// syncFirewallAdds creates table inet meshnet, its chains and member sets
// when networks exist, and adds every wanted rule that is missing.
func (d *Kernel) syncFirewallAdds(f firewallSpec) error {
	nets := f.Nets
	view, err := d.firewallView()
	if err != nil {
		return err
	}
	d.warnLegacyLocked(view)
	have, err := d.firewallRules(view)
	if err != nil {
		return err
	}
	add, _ := planRules(wantRules(f, view), have)
	if len(nets) > 0 {
		t := &nftables.Table{Name: meshnetTable, Family: nftables.TableFamilyINet}
		if !view.meshnetTable {
			d.nft.AddTable(t)
			d.changed("add nftables table inet meshnet")
		}
		accept := nftables.ChainPolicyAccept
		for _, c := range []nftables.Chain{
			{Name: meshnetForward, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept},
			{Name: meshnetPostroute, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept},
			{Name: meshnetInput, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept},
			{Name: meshnetPrerouting, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept},
			{Name: meshnetOutput, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept},
			{Name: meshnetRaw, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept},
			{Name: meshnetLocalOut, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept},
		} {
			if !view.meshnetChains[c.Name] {
				c.Table = t
				d.nft.AddChain(&c)
				d.changed("add nftables chain inet meshnet " + c.Name)
			}
		}
		// The sets before the rules that look them up.
		if err := d.syncMemberSets(f, view.meshnetTable, false); err != nil {
			return err
		}
	}
	for _, r := range add {
		rule := &nftables.Rule{
			Table:    &nftables.Table{Name: r.Table, Family: r.Family},
			Chain:    &nftables.Chain{Name: r.Chain},
			Exprs:    r.Exprs,
			UserData: ruleUserData(r.Comment),
		}
		if r.First && r.Table != iptFilterTable {
			d.nft.InsertRule(rule) // first in the chain, ahead of any drop
		} else {
			d.nft.AddRule(rule)
		}
		d.changed(fmt.Sprintf("add rule %s %s: %s", r.Table, r.Chain, r.Comment))
	}
	if err := d.nft.Flush(); err != nil {
		return fmt.Errorf("add firewall rules: %w", err)
	}
	return nil
}

// syncFirewallDeletes removes meshnet rules and members that are no longer
// wanted, and table inet meshnet when no network is left. Rules of reserved
// bridges (an invalid network's) stay.
func (d *Kernel) syncFirewallDeletes(f firewallSpec, reserved map[string]bool) error {
	nets := f.Nets
	view, err := d.firewallView()
	if err != nil {
		return err
	}
	if len(nets) == 0 && len(reserved) == 0 && view.meshnetTable {
		d.nft.DelTable(&nftables.Table{Name: meshnetTable, Family: nftables.TableFamilyINet})
		d.changed("delete nftables table inet meshnet")
		view.meshnetChains = nil
	}
	have, err := d.firewallRules(view)
	if err != nil {
		return err
	}
	_, del := planRules(wantRules(f, view), have)
	var errs []error
	if len(view.meshnetChains) > 0 {
		errs = append(errs, d.syncMemberSets(f, true, true))
	}
	for _, r := range del {
		if reserved[ruleBridge(r.Comment)] {
			continue
		}
		err := d.nft.DelRule(&nftables.Rule{
			Table:  &nftables.Table{Name: r.Table, Family: r.Family},
			Chain:  &nftables.Chain{Name: r.Chain},
			Handle: r.Handle,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("delete rule %s %s %q: %w", r.Table, r.Chain, r.Comment, err))
			continue
		}
		d.changed(fmt.Sprintf("delete rule %s %s: %s", r.Table, r.Chain, r.Comment))
	}
	if err := d.nft.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("delete firewall rules: %w", err))
	}
	return errors.Join(errs...)
}

// legacyFilterTable reports whether iptables-legacy has a filter table in
// the dataplane's namespace; file is ip_tables_names or ip6_tables_names.
func (d *Kernel) legacyFilterTable(file string) bool {
	var names []byte
	_ = d.inNetNS(func() error {
		var err error
		names, err = os.ReadFile("/proc/thread-self/net/" + file)
		return err
	})
	return slices.Contains(strings.Fields(string(names)), iptFilterTable)
}

// warnLegacyLocked logs, once, that an iptables-legacy filter table exists
// while iptables-nft has none: meshnet cannot put its accepts there, and a
// FORWARD DROP policy in it would eat overlay traffic.
func (d *Kernel) warnLegacyLocked(view firewallView) {
	if d.warnedLegacy {
		return
	}
	for fam, file := range map[nftables.TableFamily]string{
		nftables.TableFamilyIPv4: "ip_tables_names",
		nftables.TableFamilyIPv6: "ip6_tables_names",
	} {
		if _, ok := view.acceptChain[fam]; ok {
			continue
		}
		if d.legacyFilterTable(file) {
			d.log.Warn("iptables-legacy filter table in use: meshnet writes its FORWARD accepts only through nftables "+
				"(iptables-nft); if FORWARD's policy there is DROP, overlay traffic will be dropped. "+
				"Switch the host to iptables-nft or accept mnbr+ traffic in legacy FORWARD by hand.",
				"proc", file)
			d.warnedLegacy = true
		}
	}
}
