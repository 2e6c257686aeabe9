package dns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// scopeEntries: "api" on two networks, a replica per host, and a name that
// exists only on the other network.
func scopeEntries() []Entry {
	app, other := netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("10.50.0.0/16")
	ip := netip.MustParseAddr
	return []Entry{
		{Container: "shop_api_1", Services: []string{"api"}, Subnet: app, Addr: ip("10.42.0.2"), Node: "n1"},
		{Container: "shop_api_2", Services: []string{"api", "backend"}, Subnet: app, Addr: ip("10.42.1.2"), Node: "n2"},
		{Container: "shop_api_3", Services: []string{"api"}, Subnet: app, Addr: ip("10.42.2.2"), Node: "n3"},
		{Container: "db", Services: []string{"api"}, Subnet: other, Addr: ip("10.50.0.9"), Node: "n1"},
		{Container: "secret", Subnet: other, Addr: ip("10.50.0.10"), Node: "n2"},
		// An entry without a subnet has no bare names.
		{Container: "old", Services: []string{"api"}, Addr: ip("10.42.3.3"), Node: "n3"},
	}
}

// TestScopedServer: a container's server answers bare names of its own
// networks with every replica in the cluster, hands every other name to
// Forward, and still answers the zone.
func TestScopedServer(t *testing.T) {
	var forwarded []string
	s := NewServer(Config{Forward: func(_ context.Context, r *dns.Msg, tcp bool) (*dns.Msg, error) {
		forwarded = append(forwarded, r.Question[0].Name)
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		return m, nil
	}}, nil)
	s.SetTable(NewTable("", scopeEntries()))
	s.SetScope(NewScope([]netip.Prefix{netip.MustParsePrefix("10.42.0.9/16")}))

	tests := []struct {
		qname     string
		qtype     uint16
		rcode     int
		answer    []string
		forwarded bool
	}{
		{qname: "api.", qtype: dns.TypeA, answer: []string{
			"api. 5 IN A 10.42.0.2", "api. 5 IN A 10.42.1.2", "api. 5 IN A 10.42.2.2"}},
		{qname: "API.", qtype: dns.TypeA, answer: []string{
			"API. 5 IN A 10.42.0.2", "API. 5 IN A 10.42.1.2", "API. 5 IN A 10.42.2.2"}},
		{qname: "backend.", qtype: dns.TypeA, answer: []string{"backend. 5 IN A 10.42.1.2"}},
		// Compose v1 container names, as written.
		{qname: "shop_api_3.", qtype: dns.TypeA, answer: []string{"shop_api_3. 5 IN A 10.42.2.2"}},
		// IPv4-only: NODATA, so the client does not wait for AAAA elsewhere.
		{qname: "api.", qtype: dns.TypeAAAA},
		// The other network's names are not this container's.
		{qname: "secret.", qtype: dns.TypeA, rcode: dns.RcodeNameError, forwarded: true},
		{qname: "db.", qtype: dns.TypeA, rcode: dns.RcodeNameError, forwarded: true},
		// Names with dots are Docker's or the world's, except the zone.
		{qname: "api.example.", qtype: dns.TypeA, rcode: dns.RcodeNameError, forwarded: true},
		// The zone too is the container's networks' only: the other
		// network's "api" label (db) does not join this network's service.
		{qname: "api.meshnet.", qtype: dns.TypeA, answer: []string{
			"api.meshnet. 5 IN A 10.42.0.2", "api.meshnet. 5 IN A 10.42.1.2", "api.meshnet. 5 IN A 10.42.2.2"}},
		{qname: "secret.meshnet.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{qname: "10.0.50.10.in-addr.arpa.", qtype: dns.TypePTR, rcode: dns.RcodeNameError, forwarded: true},
		{qname: "2.2.42.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"2.2.42.10.in-addr.arpa. 5 IN PTR shop-api-3.meshnet."}},
	}
	for _, tt := range tests {
		forwarded = nil
		w := newRecorder("127.0.0.1", true)
		s.ServeDNS(w, query(tt.qname, tt.qtype))
		m := w.only(t)
		if m.Rcode != tt.rcode || !slices.Equal(rrStrings(m.Answer), sorted(tt.answer)) {
			t.Errorf("%s %s: rcode %s answer %v, want %s %v", tt.qname, dns.TypeToString[tt.qtype],
				dns.RcodeToString[m.Rcode], rrStrings(m.Answer), dns.RcodeToString[tt.rcode], sorted(tt.answer))
		}
		if got := len(forwarded) > 0; got != tt.forwarded {
			t.Errorf("%s: forwarded %v, want %v", tt.qname, got, tt.forwarded)
		}
	}

	// On both networks: both networks' names, merged.
	s.SetScope(NewScope([]netip.Prefix{netip.MustParsePrefix("10.50.0.0/16"), netip.MustParsePrefix("10.42.0.0/16")}))
	for _, q := range []string{"api.", "api.meshnet."} {
		w := newRecorder("127.0.0.1", true)
		s.ServeDNS(w, query(q, dns.TypeA))
		if got := len(w.only(t).Answer); got != 4 {
			t.Errorf("%s on both networks: %d answers, want 4", q, got)
		}
	}

	// Without a scope (the shared server on the DNS address) bare names
	// are not ours.
	s.SetScope(nil)
	forwarded = nil
	w := newRecorder("127.0.0.1", true)
	s.ServeDNS(w, query("api.", dns.TypeA))
	if m := w.only(t); len(m.Answer) != 0 || len(forwarded) != 1 {
		t.Errorf("unscoped api.: answer %v forwarded %v, want forwarded", rrStrings(m.Answer), forwarded)
	}
}

// TestSharedServerScopesBySource: the shared server tells a client's
// network by its address; the host (and a client on no meshnet network)
// sees every network's names.
func TestSharedServerScopesBySource(t *testing.T) {
	s := NewServer(Config{Upstreams: []string{}, AllowRecursion: allowOverlay}, nil)
	s.SetTable(NewTable("", scopeEntries()))
	tests := []struct {
		src  string
		want int
	}{
		{"10.42.7.7", 3},  // app: its three replicas
		{"10.50.7.7", 1},  // other: db, labelled api there
		{"127.0.0.1", 5},  // the host: everything
		{"172.17.0.2", 5}, // a container on docker0
	}
	for _, tt := range tests {
		w := newRecorder(tt.src, true)
		s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
		if got := len(w.only(t).Answer); got != tt.want {
			t.Errorf("api.meshnet. from %s: %d answers, want %d", tt.src, got, tt.want)
		}
	}
	w := newRecorder("10.42.7.7", true)
	s.ServeDNS(w, query("secret.meshnet.", dns.TypeA))
	if m := w.only(t); m.Rcode != dns.RcodeNameError {
		t.Errorf("another network's container from app: %s, want NXDOMAIN", dns.RcodeToString[m.Rcode])
	}
}

// TestScopedServerOverSockets drives the batched UDP path with its reply
// cache: answers rotate over every replica, and a scope change is seen at
// once (the cache belongs to one table and one scope).
func TestScopedServerOverSockets(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Config{Forward: func(_ context.Context, r *dns.Msg, _ bool) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		return m, nil
	}}, nil)
	if err := s.UseConns(pc, ln); err != nil {
		t.Fatal(err)
	}
	s.SetTable(NewTable("", scopeEntries()))
	s.SetScope(NewScope([]netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	first := map[string]int{}
	for range 30 {
		m, _, err := c.Exchange(query("api.", dns.TypeA), pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Answer) != 3 {
			t.Fatalf("api.: %v, want 3 replicas", rrStrings(m.Answer))
		}
		first[m.Answer[0].(*dns.A).A.String()]++
	}
	for _, a := range []string{"10.42.0.2", "10.42.1.2", "10.42.2.2"} {
		if first[a] != 10 {
			t.Errorf("replica %s came first %d times of 30, want 10 (rotation): %v", a, first[a], first)
		}
	}
	s.SetScope(NewScope([]netip.Prefix{netip.MustParsePrefix("10.50.0.0/16")}))
	m, _, err := c.Exchange(query("api.", dns.TypeA), pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got := rrStrings(m.Answer); !slices.Equal(got, []string{"api. 5 IN A 10.50.0.9"}) {
		t.Errorf("after the scope changed, api. = %v, want the other network's replica", got)
	}
	tc := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	if m, _, err := tc.Exchange(query("db.", dns.TypeA), ln.Addr().String()); err != nil || len(m.Answer) != 1 {
		t.Errorf("db. over TCP: %v %v, want one answer", m, err)
	}
}
