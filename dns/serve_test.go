package dns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// TestServeDNS is the behaviour table, CoreDNS style: a question, and the
// reply expected over UDP from an overlay source unless src says otherwise.
func TestServeDNS(t *testing.T) {
	soa := []string{"SOA"}
	tests := []struct {
		qname  string
		qtype  uint16
		qclass uint16 // default IN
		src    string // default overlaySrc
		rcode  int
		answer []string
		ns     []string // types in the authority section
		extra  []string
		notAA  bool // not an authoritative answer (refused, forwarded…)
	}{
		// Services: every replica, deduplicated.
		{qname: "api.meshnet.", qtype: dns.TypeA, answer: []string{
			"api.meshnet. 5 IN A 10.42.0.2", "api.meshnet. 5 IN A 10.42.1.3"}},
		{qname: "tasks.api.meshnet.", qtype: dns.TypeA, answer: []string{
			"tasks.api.meshnet. 5 IN A 10.42.0.2", "tasks.api.meshnet. 5 IN A 10.42.1.3"}},
		{qname: "api.app.meshnet.", qtype: dns.TypeA, answer: []string{
			"api.app.meshnet. 5 IN A 10.42.0.2", "api.app.meshnet. 5 IN A 10.42.1.3"}},
		// Case-insensitive, answered with the spelling asked.
		{qname: "Api.MeshNet.", qtype: dns.TypeA, answer: []string{
			"Api.MeshNet. 5 IN A 10.42.0.2", "Api.MeshNet. 5 IN A 10.42.1.3"}},
		// Containers, and Docker names turned into labels.
		{qname: "web-1.meshnet.", qtype: dns.TypeA, answer: []string{"web-1.meshnet. 5 IN A 10.42.0.2"}},
		{qname: "web-1.app.meshnet.", qtype: dns.TypeA, answer: []string{"web-1.app.meshnet. 5 IN A 10.42.0.2"}},
		{qname: "my-app-1.meshnet.", qtype: dns.TypeA, answer: []string{"my-app-1.meshnet. 5 IN A 10.42.0.4"}},
		{qname: "data-base.meshnet.", qtype: dns.TypeA, answer: []string{"data-base.meshnet. 5 IN A 10.42.0.4"}},
		{qname: "edge.meshnet.", qtype: dns.TypeA, answer: []string{
			"edge.meshnet. 5 IN A 10.43.0.2", "edge.meshnet. 5 IN A 10.44.0.2"}},
		{qname: "proxy.front.meshnet.", qtype: dns.TypeA, answer: []string{"proxy.front.meshnet. 5 IN A 10.43.0.2"}},
		// IPv6 endpoints answer AAAA; IPv4 names have no AAAA: NODATA, not NXDOMAIN.
		{qname: "v6svc.meshnet.", qtype: dns.TypeAAAA, answer: []string{"v6svc.meshnet. 5 IN AAAA fd00:42::5"}},
		{qname: "v6svc.meshnet.", qtype: dns.TypeA, ns: soa},
		{qname: "api.meshnet.", qtype: dns.TypeAAAA, ns: soa},
		{qname: "ds.meshnet.", qtype: dns.TypeA, answer: []string{"ds.meshnet. 5 IN A 10.42.0.9"}},
		{qname: "ds.meshnet.", qtype: dns.TypeAAAA, answer: []string{"ds.meshnet. 5 IN AAAA fd42::9"}},
		{qname: "tasks.ds.meshnet.", qtype: dns.TypeAAAA, answer: []string{"tasks.ds.meshnet. 5 IN AAAA fd42::9"}},
		{qname: "dual.app.meshnet.", qtype: dns.TypeAAAA, answer: []string{"dual.app.meshnet. 5 IN AAAA fd42::9"}},
		{qname: "9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.d.f.ip6.arpa.", qtype: dns.TypePTR,
			answer: []string{"9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.d.f.ip6.arpa. 5 IN PTR dual.meshnet."}},
		{qname: "9.0.42.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"9.0.42.10.in-addr.arpa. 5 IN PTR dual.meshnet."}},
		{qname: "api.meshnet.", qtype: dns.TypeMX, ns: soa},
		{qname: "api.meshnet.", qtype: dns.TypeANY, answer: []string{
			"api.meshnet. 5 IN A 10.42.0.2", "api.meshnet. 5 IN A 10.42.1.3"}},
		// Unknown names: NXDOMAIN; empty non-terminals: NODATA.
		{qname: "nope.meshnet.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{qname: "x.api.meshnet.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{qname: "ghost.meshnet.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{qname: "app.meshnet.", qtype: dns.TypeA, ns: soa},
		{qname: "tasks.meshnet.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa}, // not a parent of tasks.api.meshnet.
		{qname: "_tcp.api.meshnet.", qtype: dns.TypeSRV, ns: soa},
		// The apex.
		{qname: "meshnet.", qtype: dns.TypeNS, answer: []string{"meshnet. 5 IN NS ns.meshnet."}},
		{qname: "MESHNET.", qtype: dns.TypeSOA, answer: nil, ns: nil}, // checked below: one SOA
		{qname: "meshnet.", qtype: dns.TypeA, ns: soa},
		// SRV by port name and by number, targets in the additional section.
		{qname: "_http._tcp.api.meshnet.", qtype: dns.TypeSRV, answer: []string{
			"_http._tcp.api.meshnet. 5 IN SRV 0 10 8080 web-1.meshnet.",
			"_http._tcp.api.meshnet. 5 IN SRV 0 10 8080 web-2.meshnet."}, extra: []string{
			"web-1.meshnet. 5 IN A 10.42.0.2", "web-2.meshnet. 5 IN A 10.42.1.3"}},
		{qname: "_8080._tcp.web-2.meshnet.", qtype: dns.TypeSRV, answer: []string{
			"_8080._tcp.web-2.meshnet. 5 IN SRV 0 10 8080 web-2.meshnet."}, extra: []string{
			"web-2.meshnet. 5 IN A 10.42.1.3"}},
		{qname: "_http._udp.api.meshnet.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, ns: soa},
		// PTR for known addresses, IPv4 and IPv6.
		{qname: "2.0.42.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{
			"2.0.42.10.in-addr.arpa. 5 IN PTR web-1.meshnet."}},
		{qname: "2.0.43.10.IN-ADDR.ARPA.", qtype: dns.TypePTR, answer: []string{
			"2.0.43.10.IN-ADDR.ARPA. 5 IN PTR edge.meshnet."}},
		{qname: "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.0.0.0.0.d.f.ip6.arpa.", qtype: dns.TypePTR,
			answer: []string{"5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.4.0.0.0.0.d.f.ip6.arpa. 5 IN PTR six.meshnet."}},
		// PTR of unknown addresses and other names are not ours: forwarded
		// for overlay sources (no upstream here: SERVFAIL), refused for others.
		{qname: "9.9.42.10.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeServerFailure, notAA: true},
		{qname: "9.9.42.10.in-addr.arpa.", qtype: dns.TypePTR, src: outsideSrc, rcode: dns.RcodeRefused, notAA: true},
		{qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeServerFailure, notAA: true},
		{qname: "example.com.", qtype: dns.TypeA, src: outsideSrc, rcode: dns.RcodeRefused, notAA: true},
		{qname: "meshnet.example.", qtype: dns.TypeA, src: outsideSrc, rcode: dns.RcodeRefused, notAA: true},
		{qname: "xmeshnet.", qtype: dns.TypeA, src: outsideSrc, rcode: dns.RcodeRefused, notAA: true},
		// The zone itself answers anyone.
		{qname: "api.meshnet.", qtype: dns.TypeA, src: outsideSrc, answer: []string{
			"api.meshnet. 5 IN A 10.42.0.2", "api.meshnet. 5 IN A 10.42.1.3"}},
		// Other classes and zone transfers: refused.
		{qname: "api.meshnet.", qtype: dns.TypeA, qclass: dns.ClassCHAOS, rcode: dns.RcodeRefused, notAA: true},
		{qname: "meshnet.", qtype: dns.TypeAXFR, rcode: dns.RcodeRefused, notAA: true},
	}
	s := testServer(t, Config{})
	for _, tc := range tests {
		src := cmpOr(tc.src, overlaySrc)
		t.Run(fmt.Sprintf("%s/%s/%s", tc.qname, dns.TypeToString[tc.qtype], src), func(t *testing.T) {
			r := query(tc.qname, tc.qtype)
			if tc.qclass != 0 {
				r.Question[0].Qclass = tc.qclass
			}
			w := newRecorder(src, true)
			s.ServeDNS(w, r)
			m := w.only(t)

			if m.Id != r.Id || !m.Response {
				t.Errorf("id %d response %v, want id %d and a response", m.Id, m.Response, r.Id)
			}
			if m.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
			}
			// RA tells whether this source may recurse; never on REFUSED.
			wantRA := allowOverlay(netip.MustParseAddr(src)) && m.Rcode != dns.RcodeRefused
			if m.RecursionAvailable != wantRA {
				t.Errorf("RA %v, want %v", m.RecursionAvailable, wantRA)
			}
			if m.Authoritative == tc.notAA {
				t.Errorf("AA %v, want %v", m.Authoritative, !tc.notAA)
			}
			if len(m.Question) != 1 || m.Question[0].Name != tc.qname {
				t.Errorf("question %v, want %s echoed as asked", m.Question, tc.qname)
			}
			if tc.qtype == dns.TypeSOA {
				if len(m.Answer) != 1 || m.Answer[0].Header().Rrtype != dns.TypeSOA || m.Answer[0].Header().Name != "meshnet." {
					t.Errorf("answer %v, want the zone's SOA", m.Answer)
				}
				return
			}
			if got, want := rrStrings(m.Answer), sorted(tc.answer); !slices.Equal(got, want) {
				t.Errorf("answer\n got %q\nwant %q", got, want)
			}
			if got, want := rrTypes(m.Ns), tc.ns; !slices.Equal(got, want) {
				t.Errorf("authority types %v, want %v", got, want)
			}
			if got, want := rrStrings(m.Extra), sorted(tc.extra); !slices.Equal(got, want) {
				t.Errorf("additional\n got %q\nwant %q", got, want)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestNegativeSOA checks what resolvers cache a negative answer by: the
// SOA's TTL and minimum are the short TTL, not hours.
func TestNegativeSOA(t *testing.T) {
	s := testServer(t, Config{TTL: 7e9})
	w := newRecorder(overlaySrc, true)
	s.ServeDNS(w, query("nope.meshnet.", dns.TypeA))
	m := w.only(t)
	if len(m.Ns) != 1 {
		t.Fatalf("authority %v, want one SOA", m.Ns)
	}
	soa, ok := m.Ns[0].(*dns.SOA)
	if !ok || soa.Hdr.Name != "meshnet." || soa.Hdr.Ttl != 7 || soa.Minttl != 7 {
		t.Errorf("authority %v, want meshnet. SOA with TTL and minimum 7", m.Ns[0])
	}
}

func TestMalformedQueries(t *testing.T) {
	s := testServer(t, Config{})
	two := query("api.meshnet.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	none := query("api.meshnet.", dns.TypeA)
	none.Question = nil
	update := query("api.meshnet.", dns.TypeA)
	update.Opcode = dns.OpcodeUpdate
	ednsV1 := query("api.meshnet.", dns.TypeA)
	ednsV1.SetEdns0(1232, false)
	ednsV1.IsEdns0().SetVersion(1)
	for _, tc := range []struct {
		name  string
		r     *dns.Msg
		rcode int
	}{
		{"two questions", two, dns.RcodeFormatError},
		{"no question", none, dns.RcodeFormatError},
		{"update", update, dns.RcodeNotImplemented},
		{"edns version 1", ednsV1, dns.RcodeBadVers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newRecorder(overlaySrc, true)
			s.ServeDNS(w, tc.r)
			m := w.only(t)
			if m.Rcode != tc.rcode || m.Id != tc.r.Id || len(m.Answer) != 0 {
				t.Errorf("rcode %s id %d answers %d, want %s id %d none",
					dns.RcodeToString[m.Rcode], m.Id, len(m.Answer), dns.RcodeToString[tc.rcode], tc.r.Id)
			}
		})
	}
	t.Run("response", func(t *testing.T) {
		r := query("api.meshnet.", dns.TypeA)
		r.Response = true
		w := newRecorder(overlaySrc, true)
		s.ServeDNS(w, r)
		if len(w.raw) != 0 {
			t.Errorf("answered a response: %v", w.msgs)
		}
	})
}

func TestEDNS(t *testing.T) {
	s := testServer(t, Config{MaxUDPSize: 1400})
	r := query("api.meshnet.", dns.TypeA)
	r.SetEdns0(65000, true)
	w := newRecorder(overlaySrc, true)
	s.ServeDNS(w, r)
	opt := w.only(t).IsEdns0()
	if opt == nil || opt.UDPSize() != 1400 || !opt.Do() || opt.Version() != 0 {
		t.Errorf("OPT %v, want size 1400 (our cap), DO echoed, version 0", opt)
	}

	w = newRecorder(overlaySrc, true)
	s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
	if opt := w.only(t).IsEdns0(); opt != nil {
		t.Errorf("OPT %v in the reply to a query without one", opt)
	}
}

// TestRotation: over 3n queries for a name with n replicas, each replica
// comes first exactly 3 times, and every answer is the whole set in the
// same cyclic order.
func TestRotation(t *testing.T) {
	const n = 5
	var entries []Entry
	for i := range n {
		entries = append(entries, Entry{
			Container: fmt.Sprintf("api-%d", i), Services: []string{"api"},
			Addr: netip.AddrFrom4([4]byte{10, 42, byte(i), 7}),
		})
	}
	s := testServer(t, Config{})
	s.SetTable(NewTable("meshnet", entries))

	var ring []string // the cyclic order, from the first answer
	first := map[string]int{}
	for i := range 3 * n {
		w := newRecorder(overlaySrc, true)
		s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
		var order []string
		for _, rr := range w.only(t).Answer {
			order = append(order, rr.(*dns.A).A.String())
		}
		if len(order) != n {
			t.Fatalf("query %d: %d answers, want %d", i, len(order), n)
		}
		if ring == nil {
			ring = order
		}
		checkRotation(t, i, order, ring)
		first[order[0]]++
	}
	for _, a := range ring {
		if first[a] != 3 {
			t.Errorf("%s came first %d times in %d queries, want 3 (all: %v)", a, first[a], 3*n, first)
		}
	}
}

// TestTableLookup checks the API meshctl uses against the same table.
func TestTableLookup(t *testing.T) {
	tbl := NewTable("MeshNet.", testEntries())
	if tbl.Zone() != "meshnet." {
		t.Errorf("zone %q, want meshnet.", tbl.Zone())
	}
	if tbl.Len() != 8 {
		t.Errorf("indexed %d entries, want 8 (two unusable)", tbl.Len())
	}
	for _, tc := range []struct {
		name   string
		qtype  uint16
		rcode  int
		answer int
	}{
		{"api.meshnet", dns.TypeA, dns.RcodeSuccess, 2},
		{"API.meshnet.", dns.TypeA, dns.RcodeSuccess, 2},
		{"api.meshnet", dns.TypeAAAA, dns.RcodeSuccess, 0},
		{"nope.meshnet", dns.TypeA, dns.RcodeNameError, 0},
		{"example.com", dns.TypeA, dns.RcodeRefused, 0},
		{"2.0.42.10.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, 1},
		{"9.9.42.10.in-addr.arpa", dns.TypePTR, dns.RcodeRefused, 0},
	} {
		ans, rcode := tbl.Lookup(tc.name, tc.qtype)
		if rcode != tc.rcode || len(ans) != tc.answer {
			t.Errorf("Lookup(%s, %s) = %d answers, %s; want %d, %s", tc.name, dns.TypeToString[tc.qtype],
				len(ans), dns.RcodeToString[rcode], tc.answer, dns.RcodeToString[tc.rcode])
		}
	}
}

// TestSetTableConcurrent swaps tables while queries run (for -race), and
// checks every answer comes whole from one table or the other.
func TestSetTableConcurrent(t *testing.T) {
	s := testServer(t, Config{})
	a := NewTable("meshnet", []Entry{{Container: "c", Services: []string{"svc"}, Addr: netip.MustParseAddr("10.1.0.1")}})
	b := NewTable("meshnet", []Entry{
		{Container: "d", Services: []string{"svc"}, Addr: netip.MustParseAddr("10.2.0.1")},
		{Container: "e", Services: []string{"svc"}, Addr: netip.MustParseAddr("10.2.0.2")},
	})
	s.SetTable(a)
	stop := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				s.SetTable(a)
			} else {
				s.SetTable(b)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				w := newRecorder(overlaySrc, true)
				s.ServeDNS(w, query("svc.meshnet.", dns.TypeA))
				if len(w.msgs) != 1 || w.msgs[0] == nil {
					errs <- fmt.Errorf("no reply")
					return
				}
				var got []string
				for _, rr := range w.msgs[0].Answer {
					got = append(got, rr.(*dns.A).A.String())
				}
				slices.Sort(got)
				if s := strings.Join(got, ","); s != "10.1.0.1" && s != "10.2.0.1,10.2.0.2" {
					errs <- fmt.Errorf("answer %s mixes tables", s)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-swapped
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// checkRotation fails the test unless order (the answers to query i) is
// ring, the first answer's order, rotated.
func checkRotation(t *testing.T, i int, order, ring []string) {
	t.Helper()
	k := slices.Index(ring, order[0])
	if want := append(slices.Clone(ring[k:]), ring[:k]...); !slices.Equal(order, want) {
		t.Fatalf("query %d: order %v is not a rotation of %v", i, order, ring)
	}
}
