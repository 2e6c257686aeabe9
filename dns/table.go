package dns

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Port is one published port of an endpoint, answered as SRV
// _<name>._<proto>.<service>.<domain> and _<port>._<proto>.<service>.<domain>.
type Port struct {
	Proto string // "tcp" or "udp"
	Port  uint16
	Name  string // optional, e.g. "http"
}

// Entry is one container endpoint on one network, as the record store
// knows it. The table does not care where entries come from.
type Entry struct {
	Container string   // container name, without Docker's leading '/'
	Services  []string // service names: labels, compose service, network aliases
	Network   string   // Docker network name; may be empty
	// Subnet is the network's identity (the same on every host, unlike its
	// Docker name): bare names are answered per subnet (see Scope).
	Subnet netip.Prefix
	Addr   netip.Addr
	// Addr6 is the endpoint's IPv6 address on a dual-stack network (Addr
	// is then its IPv4 one): every name answers AAAA with it, and it has
	// its PTR under ip6.arpa. Invalid otherwise.
	Addr6 netip.Addr
	Node  string // host node name; not published in DNS, kept for meshctl
	Ports []Port // optional; published as SRV
	// TaskServices are service names answered only as tasks.<service>:
	// the service has a VIP, which answers <service> (Swarm's answers).
	TaskServices []string
	// VIP marks a service's virtual address: its Services answer it as
	// <service>, <service>.<network> and the bare name, never as tasks.
	VIP bool
}

// Table is an immutable index of the zone, built once from a full set of
// entries. Only the rotation counters change after NewTable, atomically
// (and views merged for clients on several networks are added, see view),
// so a Table is safe for concurrent use without locks.
//
// It holds the zone several times over: a view of every entry (meshctl,
// and clients on no meshnet network), and a view per network holding only
// that network's entries, so that a client sees the names of the networks
// it is on and a label set on one network cannot change another's
// answers.
type Table struct {
	zone    string                     // lower-case FQDN, e.g. "meshnet."
	all     *zoneView                  // every entry
	nets    map[netip.Prefix]*zoneView // one network's entries, by subnet
	subnets []netip.Prefix             // the keys of nets, sorted
	empty   *zoneView                  // a network without entries: the apex alone
	merged  sync.Map                   // Scope.key → *zoneView, for clients on several networks
	serial  uint32
	entries int
}

// zoneView is the zone as one kind of client sees it.
type zoneView struct {
	names   map[string]*node // lower-case FQDN → node; empty non-terminals have an empty node
	reverse map[string]*node // "d.c.b.a.in-addr.arpa." (or ip6.arpa.) → node holding PTR targets
	// bare holds the names Docker users write without a domain ("api.",
	// a container name, a network alias); only network views have them.
	bare map[string]*node
}

// node is one owner name and the records it holds. Every record set
// rotates independently: over n queries for one name each of its n records
// comes first once.
type node struct {
	v4  rotating[net.IP]
	v6  rotating[net.IP]
	srv rotating[srvTarget]
	ptr []string // lower-case FQDN targets
}

type srvTarget struct {
	port   uint16
	target string // lower-case FQDN holding the A/AAAA records
}

// rotating is a record set answered with a rotating start offset.
type rotating[T any] struct {
	items []T
	next  atomic.Uint32
}

// start returns the offset the next answer begins at: counter mod n, so
// over n queries every item is first exactly once.
func (r *rotating[T]) start() int {
	n := uint32(len(r.items))
	if n < 2 {
		return 0
	}
	return int((r.next.Add(1) - 1) % n)
}

// NewTable indexes entries under domain (normalised as zoneName does).
// For each entry it publishes, with every Docker name passed through Label:
//
//	<container>.<domain>            <container>.<network>.<domain>
//	<service>.<domain>              tasks.<service>.<domain>
//	<service>.<network>.<domain>    PTR <addr> → <container>.<domain>
//	SRV _<name|port>._<proto>.{<service>,<service>.<network>,<container>}.<domain>
//
// Addresses are deduplicated per name and sorted, so two tables built from
// the same entries answer identically. Entries without a valid address and
// names that would not fit in DNS are skipped.
func NewTable(domain string, entries []Entry) *Table {
	t := &Table{
		zone:   zoneName(domain),
		nets:   make(map[netip.Prefix]*zoneView),
		serial: uint32(time.Now().Unix()),
	}
	b := tableBuilder{zone: t.zone, sets: map[netip.Prefix]*viewSets{{}: newViewSets()}}
	for i := range entries {
		if b.add(&entries[i]) {
			t.entries++
		}
	}
	for key, vs := range b.sets {
		v := vs.freeze(t.zone)
		if !key.IsValid() {
			t.all = v
			continue
		}
		t.nets[key] = v
		t.subnets = append(t.subnets, key)
	}
	slices.SortFunc(t.subnets, netip.Prefix.Compare)
	t.empty = newViewSets().freeze(t.zone)
	return t
}

// Zone returns the zone the table answers for, as a lower-case FQDN.
func (t *Table) Zone() string { return t.zone }

// Len returns how many entries the table indexed.
func (t *Table) Len() int { return t.entries }

// tableBuilder collects sets before they are frozen into nodes: one
// viewSets for every entry (the zero prefix) and one per network.
type tableBuilder struct {
	zone string
	sets map[netip.Prefix]*viewSets
}

// viewSets are the record sets of one view before they are frozen.
type viewSets struct {
	addrs map[string]map[netip.Addr]struct{}
	srvs  map[string]map[srvTarget]struct{}
	ptrs  map[string]map[string]struct{} // reverse name → targets
	bare  map[string]map[netip.Addr]struct{}
}

func newViewSets() *viewSets {
	return &viewSets{
		addrs: make(map[string]map[netip.Addr]struct{}),
		srvs:  make(map[string]map[srvTarget]struct{}),
		ptrs:  make(map[string]map[string]struct{}),
		bare:  make(map[string]map[netip.Addr]struct{}),
	}
}

// views returns the sets an entry goes into: every entry's, and its
// network's when it names one.
func (b *tableBuilder) views(e *Entry) []*viewSets {
	out := []*viewSets{b.sets[netip.Prefix{}]}
	if e.Subnet.IsValid() {
		key := e.Subnet.Masked()
		vs := b.sets[key]
		if vs == nil {
			vs = newViewSets()
			b.sets[key] = vs
		}
		out = append(out, vs)
	}
	return out
}

// addTo adds v to the set m[k], making the set if needed.
func addTo[K, V comparable](m map[K]map[V]struct{}, k K, v V) {
	set := m[k]
	if set == nil {
		set = make(map[V]struct{})
		m[k] = set
	}
	set[v] = struct{}{}
}

func (b *tableBuilder) add(e *Entry) bool {
	if !e.Addr.IsValid() || e.Addr.IsUnspecified() {
		return false
	}
	addrs := []netip.Addr{e.Addr.Unmap().WithZone("")}
	if e.Addr6.Is6() && !e.Addr6.Is4In6() {
		addrs = append(addrs, e.Addr6.WithZone(""))
	}
	container := Label(e.Container)
	network := Label(e.Network)

	var owners []string    // names answering the address
	var srvOwners []string // names under which ports are published
	if container != "" {
		owners = append(owners, container+"."+b.zone)
		srvOwners = append(srvOwners, container+"."+b.zone)
		if network != "" {
			owners = append(owners, container+"."+network+"."+b.zone)
		}
	}
	for _, svc := range e.Services {
		s := ServiceName(svc)
		if s == "" {
			continue
		}
		owners = append(owners, s+"."+b.zone)
		if !e.VIP {
			owners = append(owners, "tasks."+s+"."+b.zone)
		}
		srvOwners = append(srvOwners, s+"."+b.zone)
		if network != "" {
			owners = append(owners, s+"."+network+"."+b.zone)
			srvOwners = append(srvOwners, s+"."+network+"."+b.zone)
		}
	}
	for _, svc := range e.TaskServices {
		if s := ServiceName(svc); s != "" {
			owners = append(owners, "tasks."+s+"."+b.zone)
		}
	}
	owners = slices.DeleteFunc(owners, func(o string) bool { return !isName(o) })
	if len(owners) == 0 {
		return false
	}
	views := b.views(e)
	for _, addr := range addrs {
		for _, vs := range views {
			for _, o := range owners {
				addTo(vs.addrs, o, addr)
			}
		}
		if len(views) > 1 {
			addBare(views[1], e, addr, container)
		}
	}

	// The PTR and SRV target is the name that is this endpoint alone when
	// there is one: its container; else its first published name.
	target := ""
	if container != "" && isName(container+"."+b.zone) {
		target = container + "." + b.zone
	} else {
		target = owners[0]
	}
	for _, addr := range addrs {
		if rev, err := dns.ReverseAddr(addr.String()); err == nil {
			for _, vs := range views {
				addTo(vs.ptrs, rev, target)
			}
		}
	}

	for _, p := range e.Ports {
		proto := Label(p.Proto)
		if proto == "" || p.Port == 0 {
			continue
		}
		labels := []string{"_" + strconv.Itoa(int(p.Port))}
		if n := Label(p.Name); n != "" {
			labels = append(labels, "_"+n)
		}
		for _, o := range srvOwners {
			for _, l := range labels {
				name := l + "._" + proto + "." + o
				if !isName(name) {
					continue
				}
				for _, vs := range views {
					addTo(vs.srvs, name, srvTarget{port: p.Port, target: target})
				}
			}
		}
	}
	return true
}

// addBare indexes the entry's container name, services and aliases as
// bare names of its network, as Docker's resolver knows them there.
func addBare(vs *viewSets, e *Entry, addr netip.Addr, container string) {
	labels := []string{container}
	for _, svc := range e.Services {
		labels = append(labels, Label(svc))
	}
	for _, l := range labels {
		if l != "" {
			addTo(vs.bare, l+".", addr)
		}
	}
}

// freeze turns the sets into a view and adds the empty non-terminals:
// every name between an owner and the apex exists (RFC 8020: answering
// NXDOMAIN for "app.meshnet." while "api.app.meshnet." exists would let
// resolvers cache that nothing below it exists).
func (vs *viewSets) freeze(zone string) *zoneView {
	v := &zoneView{names: make(map[string]*node), reverse: make(map[string]*node), bare: make(map[string]*node)}
	get := func(name string) *node {
		n := v.names[name]
		if n == nil {
			n = new(node)
			v.names[name] = n
			for p := parent(name); p != "" && inZone(p, zone); p = parent(p) {
				if _, ok := v.names[p]; ok {
					break
				}
				v.names[p] = new(node)
			}
		}
		return n
	}
	get(zone)
	for name, set := range vs.addrs {
		get(name).setAddrs(set)
	}
	for name, set := range vs.bare {
		n := new(node)
		n.setAddrs(set)
		v.bare[name] = n
	}
	for name, set := range vs.srvs {
		get(name).srv.items = sortedKeys(set, func(a, b srvTarget) int {
			return cmp.Or(strings.Compare(a.target, b.target), cmp.Compare(a.port, b.port))
		})
	}
	for rev, set := range vs.ptrs {
		v.reverse[rev] = &node{ptr: sortedKeys(set, strings.Compare)}
	}
	return v
}

// absorb adds what v holds to the sets (views merged for a client on
// several networks).
func (vs *viewSets) absorb(v *zoneView) {
	addrs := func(m map[string]map[netip.Addr]struct{}, name string, n *node) {
		for _, set := range [][]net.IP{n.v4.items, n.v6.items} {
			for _, ip := range set {
				a, _ := netip.AddrFromSlice(ip)
				addTo(m, name, a.Unmap())
			}
		}
	}
	for name, n := range v.names {
		if len(n.v4.items)+len(n.v6.items) > 0 {
			addrs(vs.addrs, name, n)
		}
		for _, s := range n.srv.items {
			addTo(vs.srvs, name, s)
		}
	}
	for name, n := range v.bare {
		addrs(vs.bare, name, n)
	}
	for rev, n := range v.reverse {
		for _, tg := range n.ptr {
			addTo(vs.ptrs, rev, tg)
		}
	}
}

// view returns the zone as a client on the scope's networks sees it; nil
// scope: every entry.
func (t *Table) view(sc *Scope) *zoneView {
	switch {
	case sc == nil:
		return t.all
	case len(sc.subnets) == 1:
		if v := t.nets[sc.subnets[0]]; v != nil {
			return v
		}
		return t.empty
	}
	if v, ok := t.merged.Load(sc.key); ok {
		return v.(*zoneView)
	}
	vs := newViewSets()
	for _, s := range sc.subnets {
		if v := t.nets[s]; v != nil {
			vs.absorb(v)
		}
	}
	v, _ := t.merged.LoadOrStore(sc.key, vs.freeze(t.zone))
	return v.(*zoneView)
}

// sourceView is the view of a client known by its address alone (the
// shared server on the DNS address): its network's when the address lies
// in a meshnet network's subnet, else every entry's (the host, and
// containers on no meshnet network).
func (t *Table) sourceView(src netip.Addr) *zoneView {
	for _, s := range t.subnets {
		if s.Contains(src) {
			return t.nets[s]
		}
	}
	return t.all
}

// setAddrs fills the node's address sets from set, sorted.
func (n *node) setAddrs(set map[netip.Addr]struct{}) {
	for _, a := range sortedKeys(set, netip.Addr.Compare) {
		if a.Is4() {
			n.v4.items = append(n.v4.items, net.IP(a.AsSlice()))
		} else {
			n.v6.items = append(n.v6.items, net.IP(a.AsSlice()))
		}
	}
}

func sortedKeys[K comparable](m map[K]struct{}, compare func(a, b K) int) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compare)
	return keys
}

// parent returns name without its first label ("" for the root).
func parent(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return ""
	}
	return name[i+1:]
}

// result is what the table says about one question.
type result struct {
	// authoritative is false when the name is not ours (outside the zone,
	// or a reverse name of an address we do not know): the server forwards
	// it or refuses.
	authoritative bool
	rcode         int
	answer        []dns.RR
	extra         []dns.RR
	// negative: NXDOMAIN or NODATA, so the zone's SOA goes into the
	// authority section (RFC 2308) to let resolvers cache the negative answer.
	negative bool
	// cacheable: the reply may be replayed (see replyCache) with rot, when
	// not nil, as the one record set the answer rotates over. SRV and ANY
	// answers rotate several sets and are built every time.
	cacheable bool
	rot       *rotating[net.IP]
}

// Lookup answers name (case-insensitive, with or without the trailing dot)
// and qtype from the table alone, with the default TTL, as the server
// would: NOERROR with records; NOERROR with none (NODATA: the name exists,
// not with that type); NXDOMAIN (no such name in the zone). Names the table
// is not authoritative for (outside the zone, reverse names of unknown
// addresses) return RcodeRefused: the server would forward those.
func (t *Table) Lookup(name string, qtype uint16) (answers []dns.RR, rcode int) {
	q := dns.Question{Name: dns.Fqdn(name), Qtype: qtype, Qclass: dns.ClassINET}
	res := t.resolve(q, t.all, uint32(DefaultTTL/time.Second))
	if !res.authoritative {
		return nil, dns.RcodeRefused
	}
	return res.answer, res.rcode
}

// resolve answers q. Owner names in the answer are q.Name as asked, so a
// resolver using 0x20 case randomisation sees its own spelling back.
func (t *Table) resolve(q dns.Question, v *zoneView, ttl uint32) result {
	name := lowerASCII(q.Name)
	if !inZone(name, t.zone) {
		if q.Qtype == dns.TypePTR {
			if n := v.reverse[name]; n != nil {
				return result{authoritative: true, rcode: dns.RcodeSuccess, answer: ptrRRs(q.Name, n.ptr, ttl), cacheable: true}
			}
		}
		return result{}
	}
	n := v.names[name]
	if n == nil {
		return result{authoritative: true, rcode: dns.RcodeNameError, negative: true, cacheable: true}
	}
	res := result{authoritative: true, rcode: dns.RcodeSuccess, cacheable: true}
	switch q.Qtype {
	case dns.TypeA:
		res.answer, res.rot = addrRRs(nil, q.Name, &n.v4, ttl), &n.v4
	case dns.TypeAAAA:
		res.answer, res.rot = addrRRs(nil, q.Name, &n.v6, ttl), &n.v6
	case dns.TypeSRV:
		res.cacheable = len(n.srv.items) == 0
		res.answer, res.extra = t.srvRRs(q.Name, v, n, ttl)
	case dns.TypeSOA:
		if name == t.zone {
			res.answer = []dns.RR{t.soa(ttl)}
		}
	case dns.TypeNS:
		if name == t.zone {
			res.answer = []dns.RR{t.ns(ttl)}
		}
	case dns.TypeANY:
		res.cacheable = false
		res.answer = addrRRs(nil, q.Name, &n.v4, ttl)
		res.answer = addrRRs(res.answer, q.Name, &n.v6, ttl)
		srv, _ := t.srvRRs(q.Name, v, n, ttl)
		res.answer = append(res.answer, srv...)
		if name == t.zone {
			res.answer = append(res.answer, t.soa(ttl), t.ns(ttl))
		}
	}
	res.negative = len(res.answer) == 0
	return res
}

// addrRRs appends the A or AAAA records of set to dst, rotated.
func addrRRs(dst []dns.RR, owner string, set *rotating[net.IP], ttl uint32) []dns.RR {
	n := len(set.items)
	if n == 0 {
		return dst
	}
	first := set.start()
	if dst == nil {
		dst = make([]dns.RR, 0, n)
	}
	if len(set.items[0]) == net.IPv4len {
		rrs := make([]dns.A, n) // one allocation for the whole set
		for i := range rrs {
			rrs[i] = dns.A{Hdr: hdr(owner, dns.TypeA, ttl), A: set.items[(first+i)%n]}
			dst = append(dst, &rrs[i])
		}
		return dst
	}
	rrs := make([]dns.AAAA, n)
	for i := range rrs {
		rrs[i] = dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, ttl), AAAA: set.items[(first+i)%n]}
		dst = append(dst, &rrs[i])
	}
	return dst
}

// srvRRs returns the SRV records of n, rotated, and the addresses of their
// targets for the additional section, so clients need no second query.
func (t *Table) srvRRs(owner string, v *zoneView, n *node, ttl uint32) (answer, extra []dns.RR) {
	cnt := len(n.srv.items)
	if cnt == 0 {
		return nil, nil
	}
	first := n.srv.start()
	seen := make(map[string]bool, cnt)
	for i := range cnt {
		s := n.srv.items[(first+i)%cnt]
		answer = append(answer, &dns.SRV{
			Hdr: hdr(owner, dns.TypeSRV, ttl), Priority: 0, Weight: 10, Port: s.port, Target: s.target,
		})
		if seen[s.target] {
			continue
		}
		seen[s.target] = true
		if tn := v.names[s.target]; tn != nil {
			extra = addrRRs(extra, s.target, &tn.v4, ttl)
			extra = addrRRs(extra, s.target, &tn.v6, ttl)
		}
	}
	return answer, extra
}

func ptrRRs(owner string, targets []string, ttl uint32) []dns.RR {
	rrs := make([]dns.RR, len(targets))
	for i, tg := range targets {
		rrs[i] = &dns.PTR{Hdr: hdr(owner, dns.TypePTR, ttl), Ptr: tg}
	}
	return rrs
}

// soa is the zone's SOA. Its minimum (the negative-caching TTL, RFC 2308)
// is the record TTL: a name that appears must resolve within seconds.
func (t *Table) soa(ttl uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     hdr(t.zone, dns.TypeSOA, ttl),
		Ns:      "ns." + t.zone,
		Mbox:    "hostmaster." + t.zone,
		Serial:  t.serial,
		Refresh: 60,
		Retry:   30,
		Expire:  3600,
		Minttl:  ttl,
	}
}

func (t *Table) ns(ttl uint32) *dns.NS {
	return &dns.NS{Hdr: hdr(t.zone, dns.TypeNS, ttl), Ns: "ns." + t.zone}
}

func hdr(owner string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}
