package dns

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// Scope is what one client sees beyond the zone: the networks it is on.
// A server with a scope (one per container, see Server.SetScope) answers
// the names Docker users write without a domain, "api", a container name,
// a network alias, with every healthy endpoint of that name on those
// networks across the cluster, as Docker's own resolver answers them for
// the local host only. Names it does not know go to Config.Forward.
type Scope struct {
	subnets []netip.Prefix
	key     string // the subnets, for the table's merged views
}

// NewScope makes the scope of a client on the networks with these subnets.
func NewScope(subnets []netip.Prefix) *Scope {
	s := &Scope{}
	for _, p := range subnets {
		if p.IsValid() && !slices.Contains(s.subnets, p.Masked()) {
			s.subnets = append(s.subnets, p.Masked())
		}
	}
	slices.SortFunc(s.subnets, netip.Prefix.Compare)
	for _, p := range s.subnets {
		s.key += p.String() + " "
	}
	return s
}

// Subnets lists the scope's networks.
func (s *Scope) Subnets() []netip.Prefix { return slices.Clone(s.subnets) }

// resolveBare answers a single-label name ("api.") from the bare names of
// the client's networks (v is their view); not authoritative when none
// has it, so that the server forwards it. A name on several of the
// client's networks answers the addresses of all of them.
func (t *Table) resolveBare(q dns.Question, v *zoneView, ttl uint32) result {
	name := lowerASCII(q.Name)
	if strings.IndexByte(name, '.') != len(name)-1 {
		return result{}
	}
	// Docker names may hold '_' where a label has '-' (compose v1's
	// shop_api_1): the query goes through the same mapping as the names.
	n := v.bare[Label(name[:len(name)-1])+"."]
	if n == nil {
		return result{}
	}
	res := result{authoritative: true, rcode: dns.RcodeSuccess, cacheable: true}
	switch q.Qtype {
	case dns.TypeA:
		res.answer, res.rot = addrRRs(nil, q.Name, &n.v4, ttl), &n.v4
	case dns.TypeAAAA:
		res.answer, res.rot = addrRRs(nil, q.Name, &n.v6, ttl), &n.v6
	case dns.TypeANY:
		res.cacheable = false
		res.answer = addrRRs(nil, q.Name, &n.v4, ttl)
		res.answer = addrRRs(res.answer, q.Name, &n.v6, ttl)
	}
	// NODATA (an AAAA for an IPv4-only name) carries no SOA: the name is
	// not in the zone whose SOA the server has.
	return res
}
