package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Service VIPs, balanced in the kernel (see "Service VIPs" in doc.go for
// where the DNAT happens and why). Everything lives in one table of its
// own, ip meshnet-vip, so the table inet meshnet's rule diffing never has
// to know about it and a teardown is one delete:
//
//   - set vips: every VIP this host answers for.
//   - chain prerouting (nat, priority dstnat-10, before meshnet's and
//     Docker's published ports, which would otherwise match the VIP as a
//     local address): per VIP with replicas, ip daddr VIP dnat to numgen
//     inc mod N map { 0: R0, 1: R1, ... }. Ports are kept.
//   - chain postrouting (nat, priority srcnat-1): a connection the
//     prerouting chain balanced (conntrack mark bit 25) gets an identity SNAT (its own source), which fixes the
//     connection's source binding before table inet meshnet's hairpin
//     masquerade is consulted: the replica sees the client's address, and
//     a replica on another host answers the client, not its own gateway.
//   - chain input (filter): what is addressed to a VIP and was not DNATed
//     (no replica left) is rejected, so it neither reaches a host socket
//     nor waits for a timeout.

const (
	vipTableName = "meshnet-vip"
	vipSetName   = "vips"
	vipPre       = "prerouting"
	vipPost      = "postrouting"
	vipInput     = "input"
	// Before dstnat (-100): meshnet's published ports and Docker's DOCKER
	// chain match any local address, and the VIP is one (it sits on lo).
	vipPrioDNAT = -110
	// Before srcnat (100): the first NAT binding of a connection wins.
	vipPrioSNAT = 99
	// vipCtMark marks a connection balanced by a VIP (bit 25 of the
	// conntrack mark; bit 24 of the packet mark is the tunnel guard's).
	// A mark, not "ct original ip daddr @vips": google/nftables cannot read
	// a ct expression with a direction back, and Apply compares by reading.
	vipCtMark = 1 << 25
)

// VIP is one service's virtual address on a network of this host.
type VIP struct {
	Addr     netip.Addr
	Service  string       // for rule comments and logs
	Backends []netip.Addr // healthy replicas anywhere; none = connections refused
}

func (v VIP) normalized() VIP {
	v.Backends = slices.Clone(v.Backends)
	slices.SortFunc(v.Backends, netip.Addr.Compare)
	v.Backends = slices.Compact(v.Backends)
	return v
}

func (v VIP) equal(o VIP) bool {
	return v.Addr == o.Addr && v.Service == o.Service && slices.Equal(v.Backends, o.Backends)
}

// comment names the DNAT rule of v; it carries the whole rule, so
// comparing comments is comparing rules.
func (v VIP) comment() string {
	bs := make([]string, len(v.Backends))
	for i, b := range v.Backends {
		bs[i] = b.String()
	}
	return fmt.Sprintf("%s vip %s %s -> %s", commentPrefix, v.Addr, v.Service, strings.Join(bs, ","))
}

func normalizedVIPs(vs []VIP) []VIP {
	out := make([]VIP, 0, len(vs))
	for _, v := range vs {
		if !v.Addr.Is4() {
			continue // the table is ip (IPv4); networks are IPv4 today
		}
		out = append(out, v.normalized())
	}
	slices.SortFunc(out, func(a, b VIP) int { return cmp.Or(a.Addr.Compare(b.Addr), strings.Compare(a.Service, b.Service)) })
	// One address, one rule: a VIP twice (two service names on one
	// address cannot happen from the daemon) keeps the first.
	return slices.CompactFunc(out, func(a, b VIP) bool { return a.Addr == b.Addr })
}

func vipsEqual(a, b []VIP) bool {
	a, b = normalizedVIPs(a), normalizedVIPs(b)
	return slices.EqualFunc(a, b, VIP.equal)
}

const (
	vipCommentSNAT   = commentPrefix + " vip keep client address"
	vipCommentReject = commentPrefix + " vip without replicas"
)

// serviceRules is what table ip meshnet-vip holds: the VIPs, the mesh
// ports this host publishes and the mesh marks of replicas here.
type serviceRules struct {
	VIPs     []VIP
	Mesh     []MeshPort
	Marks    meshMarkSpec
	Forwards []meshForward
	Hairpins []meshHairpin
	Self     netip.Addr // this host's underlay address (the hairpins' SNAT)
}

func (r serviceRules) empty() bool {
	return len(r.VIPs) == 0 && len(r.Mesh) == 0 && r.Marks.empty() && len(r.Forwards) == 0 && len(r.Hairpins) == 0
}

// wantVIPComments is what the table holds for r, chain by chain.
func wantVIPComments(r serviceRules) map[string][]string {
	want := map[string][]string{vipPost: {vipCommentSNAT}, vipInput: {vipCommentReject}, vipPre: nil}
	for _, h := range r.Hairpins {
		want[vipPost] = append(want[vipPost], h.comment())
	}
	for _, v := range r.VIPs {
		if len(v.Backends) > 0 {
			want[vipPre] = append(want[vipPre], v.comment())
		}
	}
	for _, m := range r.Mesh {
		want[vipPre] = append(want[vipPre], m.comment())
	}
	if !r.Marks.empty() {
		want[meshMarkChain] = append(r.Marks.comments(), meshCommentRestore)
	}
	if len(r.Forwards) > 0 {
		want[meshRouteChain] = []string{meshRouteComment(r.Forwards)}
	}
	if !r.Marks.empty() || len(r.Forwards) > 0 {
		want[meshOutChain] = []string{meshCommentClear}
	}
	return want
}

// syncVIPs makes table ip meshnet-vip hold exactly r. The table is
// compared by its rule comments and set elements; on any difference it is
// rewritten whole in one nftables transaction (delete and re-add), which
// the kernel applies atomically: no packet sees a half-written table, and
// connections already balanced keep their replica, because the choice
// lives in their conntrack entry, not in the rules.
func (d *Kernel) syncVIPs(r serviceRules, hold bool) error {
	r.VIPs, r.Mesh = normalizedVIPs(r.VIPs), normalizedMeshPorts(r.Mesh)
	vs := r.VIPs
	exists, why, err := d.vipTableDiff(r)
	if err != nil {
		return err
	}
	same := why == ""
	switch {
	case r.empty() && !exists:
		return nil
	case r.empty():
		if hold {
			return nil
		}
		d.nft.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: vipTableName})
		if err := d.nft.Flush(); err != nil {
			return fmt.Errorf("delete nftables table ip %s: %w", vipTableName, err)
		}
		d.changed("delete nftables table ip " + vipTableName)
		return nil
	case same:
		return nil
	case hold && exists:
		// A restarted daemon that has not heard its cluster yet knows
		// only part of the services: a rewrite now would drop the mesh's
		// marks and ports of the rest (breaking the replies of their
		// established connections), so the table stays as the previous
		// run left it until deletes are allowed again.
		return nil
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: vipTableName}
	if exists {
		d.nft.DelTable(t)
	}
	d.nft.AddTable(t)
	if err := d.addVIPTable(t, r); err != nil {
		return err
	}
	if err := d.nft.Flush(); err != nil {
		return fmt.Errorf("write nftables table ip %s (%d VIPs, %d mesh ports, %d mesh entry hosts, %d remote mesh replicas): %w",
			vipTableName, len(vs), len(r.Mesh), len(r.Marks.Probe), len(r.Forwards), err)
	}
	d.changed(fmt.Sprintf("write nftables table ip %s: %d VIPs, %d mesh ports, %d mesh entry hosts, %d remote mesh replicas (%s)",
		vipTableName, len(vs), len(r.Mesh), len(r.Marks.Probe), len(r.Forwards), why))
	return nil
}

// vipTableDiff reads the table back: whether it exists and, if it does
// not hold what vs asks for, why ("" = it does).
func (d *Kernel) vipTableDiff(r serviceRules) (exists bool, why string, err error) {
	tables, err := d.nft.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, "", fmt.Errorf("list nftables ip tables: %w", err)
	}
	var t *nftables.Table
	for _, x := range tables {
		if x.Name == vipTableName {
			t = x
		}
	}
	if t == nil {
		return false, "new", nil
	}
	for chain, want := range wantVIPComments(r) {
		rules, err := d.nft.GetRules(t, &nftables.Chain{Name: chain})
		if err != nil {
			return true, "chain " + chain + ": " + err.Error(), nil
		}
		var have []string
		for _, r := range rules {
			have = append(have, ruleComment(r.UserData))
		}
		slices.Sort(have)
		want = slices.Clone(want)
		slices.Sort(want)
		if !slices.Equal(have, want) {
			return true, fmt.Sprintf("chain %s holds %q", chain, have), nil
		}
	}
	elems, err := d.nft.GetSetElements(&nftables.Set{Table: t, Name: vipSetName, KeyType: nftables.TypeIPAddr})
	if err != nil {
		return true, "set " + vipSetName + ": " + err.Error(), nil
	}
	var have []netip.Addr
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			have = append(have, a)
		}
	}
	slices.SortFunc(have, netip.Addr.Compare)
	var want []netip.Addr
	for _, v := range r.VIPs {
		want = append(want, v.Addr)
	}
	if !slices.Equal(have, want) {
		return true, fmt.Sprintf("set %s holds %v", vipSetName, have), nil
	}
	// A chain no longer wanted (the mesh marks') makes the table differ too.
	chains, err := d.nft.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return true, "chains: " + err.Error(), nil
	}
	wantChains := wantVIPComments(r)
	for _, c := range chains {
		if _, ok := wantChains[c.Name]; c.Table.Name == vipTableName && !ok {
			return true, "chain " + c.Name + " no longer wanted", nil
		}
	}
	return true, "", nil
}

// addVIPTable queues the chains, set and rules of the table for r.
func (d *Kernel) addVIPTable(t *nftables.Table, r serviceRules) error {
	vs := r.VIPs
	pre := d.nft.AddChain(&nftables.Chain{Table: t, Name: vipPre, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(vipPrioDNAT)})
	post := d.nft.AddChain(&nftables.Chain{Table: t, Name: vipPost, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(vipPrioSNAT)})
	in := d.nft.AddChain(&nftables.Chain{Table: t, Name: vipInput, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})

	set, err := addVIPRules(d.nft, t, pre, vs, true)
	if err != nil {
		return err
	}
	// Mesh ports after the VIPs: a VIP is a local address too.
	for _, m := range r.Mesh {
		if err := d.addMeshDNAT(t, pre, m); err != nil {
			return err
		}
	}
	if !r.Marks.empty() {
		if err := d.addMeshMarks(t, r.Marks); err != nil {
			return err
		}
	}
	if len(r.Forwards) > 0 {
		if err := d.addMeshRoute(t, r.Forwards); err != nil {
			return err
		}
	}
	if !r.Marks.empty() || len(r.Forwards) > 0 {
		d.addMeshOut(t)
	}
	// Before the identity SNAT: the first NAT binding wins.
	if err := d.addMeshHairpins(t, post, r.Hairpins, r.Self); err != nil {
		return err
	}
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: post, UserData: ruleUserData(vipCommentSNAT), Exprs: append(ctMarkHas(vipCtMark),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, // ip saddr
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	)})
	d.nft.AddRule(&nftables.Rule{Table: t, Chain: in, UserData: ruleUserData(vipCommentReject), Exprs: vipRejectExprs(set)})
	return nil
}

// vipRejectExprs: ip daddr @vips counter reject (ICMP port unreachable):
// a connection to a VIP that no chain DNATed fails at once.
func vipRejectExprs(set *nftables.Set) []expr.Any {
	return vipReject(&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID})
}

// vipReject: ip daddr MATCH counter reject, MATCH comparing register 1.
func vipReject(match expr.Any) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, // ip daddr
		match,
		&expr.Counter{},
		&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3}, // port unreachable
	}
}

// addVIPRules queues set vips (every VIP) and, in chain dnat, a DNAT rule
// per VIP with replicas: the part of the table the host's (vip.go) and a
// container's (clientvip.go) have in common. markConn sets the conntrack
// bit the host's identity SNAT looks for.
func addVIPRules(conn *nftables.Conn, t *nftables.Table, dnat *nftables.Chain, vips []VIP, markConn bool) (*nftables.Set, error) {
	set := &nftables.Set{Table: t, Name: vipSetName, KeyType: nftables.TypeIPAddr}
	var elems []nftables.SetElement
	for _, v := range vips {
		elems = append(elems, nftables.SetElement{Key: v.Addr.AsSlice()})
	}
	if err := conn.AddSet(set, elems); err != nil {
		return nil, fmt.Errorf("add nftables set ip %s %s: %w", vipTableName, vipSetName, err)
	}
	for _, v := range vips {
		if len(v.Backends) == 0 {
			continue
		}
		m, err := addReplicaMap(conn, t, v.Backends)
		if err != nil {
			return nil, fmt.Errorf("add the replica map of VIP %v: %w", v.Addr, err)
		}
		conn.AddRule(&nftables.Rule{Table: t, Chain: dnat, UserData: ruleUserData(v.comment()), Exprs: vipDNATExprs(v, m, markConn)})
	}
	return set, nil
}

// vipDNATExprs: ip daddr VIP counter [ct mark set ct mark | vipCtMark]
// dnat to numgen inc mod N map @m.
// Round robin (inc) rather than random: every host's clients are spread
// exactly evenly over the replicas, where random would leave a replica of
// six about ±9 of 100 new connections off its share (one standard
// deviation) — a spread the issue's ±5 points would catch now and then.
func vipDNATExprs(v VIP, m *nftables.Set, markConn bool) []expr.Any {
	e := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: v.Addr.AsSlice()},
		&expr.Counter{},
	}
	if markConn {
		e = append(e, ctMarkOr(vipCtMark)...) // for the postrouting chain
	}
	e = append(e, pickReplica(m, len(v.Backends))...)
	return append(e, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1})
}

// addReplicaMap queues the anonymous map { 0: B0, 1: B1, ... } that
// pickReplica looks a connection's number up in.
func addReplicaMap(conn *nftables.Conn, t *nftables.Table, backends []netip.Addr) (*nftables.Set, error) {
	m := &nftables.Set{Table: t, Anonymous: true, Constant: true, IsMap: true,
		KeyType: nftables.TypeInteger, DataType: nftables.TypeIPAddr}
	var me []nftables.SetElement
	for i, b := range backends {
		me = append(me, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: b.AsSlice()})
	}
	return m, conn.AddSet(m, me)
}

// pickReplica: numgen inc mod N map @m, the chosen replica into register 1.
func pickReplica(m *nftables.Set, n int) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: uint32(n), Type: unix.NFT_NG_INCREMENTAL},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
	}
}

// ctMarkOr: ct mark set ct mark | bits.
func ctMarkOr(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^bits), Xor: binaryutil.NativeEndian.PutUint32(bits)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	}
}

// ctMarkHas: ct mark & mask != 0, the masked mark left in register 1.
func ctMarkHas(mask uint32) []expr.Any { return ctMarkMasked(mask, expr.CmpOpNeq) }

// ctMarkLacks: ct mark & mask == 0.
func ctMarkLacks(mask uint32) []expr.Any { return ctMarkMasked(mask, expr.CmpOpEq) }

// ctMarkMasked compares ct mark & mask with 0 by op.
func ctMarkMasked(mask uint32, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: make([]byte, 4)},
	}
}

// teardownVIPs removes the table whatever it holds.
func (d *Kernel) teardownVIPs() error {
	return errors.Join(d.syncVIPs(serviceRules{}, false))
}
