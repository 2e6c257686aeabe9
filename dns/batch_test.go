package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestBatchAnswersEveryQuery queues queries from several clients on the
// listener's socket before it reads, so that its first reads are batches,
// and checks every query gets exactly its own answer: table answers (hits
// and misses of the reply cache), NXDOMAIN, SERVFAIL for a name it would
// forward, FORMERR for a bad message; and nothing for garbage. The same
// with a batch that starts at one slot and grows (a container's server):
// its reads fill, so it doubles to 8 while the queue lasts.
func TestBatchAnswersEveryQuery(t *testing.T) {
	t.Run("64 slots", func(t *testing.T) {
		testBatchAnswers(t, Config{Listeners: 1, AllowRecursion: netip.Addr.IsLoopback})
	})
	t.Run("growing from 1 to 8", func(t *testing.T) {
		testBatchAnswers(t, Config{Listeners: 1, AllowRecursion: netip.Addr.IsLoopback, UDPBatch: 1, UDPBatchMax: 8})
	})
}

func testBatchAnswers(t *testing.T, cfg Config) {
	s := testServer(t, cfg)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()

	type want struct {
		rcode   int
		answers int
	}
	const clients, perClient = 4, 30 // 120 queries: two batches and some
	conns := make([]*net.UDPConn, clients)
	wants := make([]map[uint16]want, clients)
	for i := range conns {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], wants[i] = c, map[uint16]want{}
		for j := range perClient {
			id := uint16(i*1000 + j)
			var b []byte
			switch j % 5 {
			case 0, 1:
				q := query("api.meshnet.", dns.TypeA)
				q.Id = id
				b, _ = q.Pack()
				wants[i][id] = want{dns.RcodeSuccess, 2}
			case 2:
				q := query(fmt.Sprintf("nope-%d.meshnet.", j), dns.TypeA)
				q.Id = id
				b, _ = q.Pack()
				wants[i][id] = want{dns.RcodeNameError, 0}
			case 3:
				q := query("example.org.", dns.TypeA)
				q.Id = id
				b, _ = q.Pack()
				wants[i][id] = want{dns.RcodeServerFailure, 0} // no upstream
			case 4:
				b = []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 63, 'a', 'b'}
				wants[i][id] = want{dns.RcodeFormatError, 0}
			}
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Write([]byte{1, 2, 3}); err != nil { // no answer
			t.Fatal(err)
		}
	}
	runServer(t, s)

	for i, c := range conns {
		buf := make([]byte, 4096)
		for len(wants[i]) > 0 {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("client %d: %d queries unanswered: %v", i, len(wants[i]), err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(buf[:n]); err != nil {
				t.Fatalf("client %d: reply does not parse: %v", i, err)
			}
			w, ok := wants[i][m.Id]
			if !ok {
				t.Fatalf("client %d: reply to id %d, not asked or answered twice", i, m.Id)
			}
			delete(wants[i], m.Id)
			if m.Rcode != w.rcode || len(m.Answer) != w.answers {
				t.Errorf("client %d id %d: %s with %d answers, want %s with %d", i, m.Id,
					dns.RcodeToString[m.Rcode], len(m.Answer), dns.RcodeToString[w.rcode], w.answers)
			}
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			t.Errorf("client %d: extra reply %x", i, buf[:n])
		}
	}
	st := s.Stats()
	if st.Answered != clients*perClient*3/5 || st.Malformed != clients*(perClient/5+1) {
		t.Errorf("stats %+v, want %d answered and %d malformed", st, clients*perClient*3/5, clients*(perClient/5+1))
	}
}

// TestOversizedQuery: a query larger than the listener's read buffer
// arrives cut and gets FORMERR, and the server goes on.
func TestOversizedQuery(t *testing.T) {
	s := testServer(t, Config{})
	addr := runServer(t, s)
	q := query("api.meshnet.", dns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, maxUDPQuery)})
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil || m.Id != q.Id || m.Rcode != dns.RcodeFormatError {
		t.Errorf("reply %v (%v), want FORMERR to id %d", m, err, q.Id)
	}
	if r := exchange(t, "udp", addr, query("api.meshnet.", dns.TypeA)); len(r.Answer) != 2 {
		t.Errorf("after an oversized query: %v", r)
	}
}

// cachedPacket sends q through the UDP path with cache c, as from src.
func cachedPacket(t *testing.T, s *Server, c *replyCache, q *dns.Msg, src string) *dns.Msg {
	t.Helper()
	raw, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	w := newRecorder(src, true)
	s.handlePacket(raw, w, mustAddr(src), false, c)
	return w.only(t)
}

// TestCacheRotation: answers from the reply cache still rotate per query,
// on the same counter as the uncached path: over 3n queries, alternately
// cached and not, each replica comes first 3 times, every answer the
// whole set in one cyclic order.
func TestCacheRotation(t *testing.T) {
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
	c := newReplyCache()
	q := query("api.meshnet.", dns.TypeA)

	var ring []string
	first := map[string]int{}
	for i := range 3 * n {
		var m *dns.Msg
		if i%3 == 2 {
			w := newRecorder(overlaySrc, true)
			s.ServeDNS(w, q)
			m = w.only(t)
		} else {
			m = cachedPacket(t, s, c, q, overlaySrc)
		}
		var order []string
		for _, rr := range m.Answer {
			order = append(order, rr.(*dns.A).A.String())
		}
		if len(order) != n || m.Id != q.Id {
			t.Fatalf("query %d: id %d with %d answers, want id %d with %d", i, m.Id, len(order), q.Id, n)
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
	if c.hits != 2*n-1 {
		t.Errorf("%d answers from the reply cache, want %d", c.hits, 2*n-1)
	}
}

// TestCacheTableChange: a new table empties the cache; answers, NXDOMAIN
// included, come from the new table at once.
func TestCacheTableChange(t *testing.T) {
	s := testServer(t, Config{})
	c := newReplyCache()
	ip := netip.MustParseAddr
	for range 2 {
		if m := cachedPacket(t, s, c, query("api.meshnet.", dns.TypeA), overlaySrc); len(m.Answer) != 2 {
			t.Fatalf("api: %v", m.Answer)
		}
		if m := cachedPacket(t, s, c, query("new.meshnet.", dns.TypeA), overlaySrc); m.Rcode != dns.RcodeNameError {
			t.Fatalf("new: %s", dns.RcodeToString[m.Rcode])
		}
	}
	if c.hits != 2 {
		t.Fatalf("%d cache hits, want 2", c.hits)
	}
	s.SetTable(NewTable("meshnet", []Entry{
		{Container: "a", Services: []string{"api"}, Addr: ip("10.9.0.1")},
		{Container: "b", Services: []string{"new"}, Addr: ip("10.9.0.2")},
	}))
	m := cachedPacket(t, s, c, query("api.meshnet.", dns.TypeA), overlaySrc)
	if got := rrStrings(m.Answer); !slices.Equal(got, []string{"api.meshnet. 5 IN A 10.9.0.1"}) {
		t.Errorf("api after SetTable: %v", got)
	}
	m = cachedPacket(t, s, c, query("new.meshnet.", dns.TypeA), overlaySrc)
	if got := rrStrings(m.Answer); m.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{"new.meshnet. 5 IN A 10.9.0.2"}) {
		t.Errorf("new after SetTable: %s %v", dns.RcodeToString[m.Rcode], got)
	}
	if c.hits != 2 {
		t.Errorf("%d cache hits, want still 2: the old table's answers were served", c.hits)
	}
}

// TestCacheMatchesServeDNS: for queries differing in what the reply
// depends on (spelling, source and its RA bit, EDNS, DO, size, RD, class,
// type), the cached path answers byte for byte as ServeDNS does, the
// first time and from the cache (rotated answers: the same records, the
// same size).
func TestCacheMatchesServeDNS(t *testing.T) {
	s := testServer(t, Config{MaxUDPSize: 1232})
	var qs []*dns.Msg
	for _, name := range []string{"api.meshnet.", "API.MeshNet.", "nope.meshnet.", "web-1.meshnet.", "meshnet.",
		"2.0.42.10.in-addr.arpa.", "_http._tcp.api.meshnet.", "v6svc.meshnet."} {
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSOA, dns.TypePTR, dns.TypeSRV, dns.TypeANY} {
			q := query(name, qtype)
			qs = append(qs, q)
			e := query(name, qtype)
			e.SetEdns0(4000, true)
			e.RecursionDesired = false
			qs = append(qs, e)
			ch := query(name, qtype)
			ch.Question[0].Qclass = dns.ClassCHAOS
			qs = append(qs, ch)
		}
	}
	c := newReplyCache()
	for _, src := range []string{overlaySrc, outsideSrc} {
		for round := range 2 {
			for _, q := range qs {
				q.Id++
				want := newRecorder(src, true)
				s.ServeDNS(want, q)
				raw, _ := q.Pack()
				w := newRecorder(src, true)
				s.handlePacket(raw, w, mustAddr(src), false, c)
				got, wm := w.only(t), want.only(t)
				same := slices.Equal(w.raw[0], want.raw[0])
				if len(got.Answer) > 1 {
					same = len(w.raw[0]) == len(want.raw[0])
				}
				if !same || got.Id != q.Id || got.MsgHdr != wm.MsgHdr ||
					!slices.Equal(rrStrings(got.Answer), rrStrings(wm.Answer)) ||
					!slices.Equal(rrStrings(got.Ns), rrStrings(wm.Ns)) ||
					!slices.Equal(rrStrings(got.Extra), rrStrings(wm.Extra)) ||
					fmt.Sprint(got.IsEdns0()) != fmt.Sprint(wm.IsEdns0()) {
					t.Fatalf("round %d from %s, %s %s:\ncached path: %v\nServeDNS: %v",
						round, src, q.Question[0].Name, dns.TypeToString[q.Question[0].Qtype], got, wm)
				}
			}
		}
	}
	if c.hits == 0 {
		t.Error("the reply cache never answered")
	}
}

// TestCacheBounded: distinct queries do not grow the cache past its bound.
func TestCacheBounded(t *testing.T) {
	s := testServer(t, Config{})
	c := newReplyCache()
	for i := range 3 * cacheMaxEntries {
		cachedPacket(t, s, c, query(fmt.Sprintf("n%d.meshnet.", i), dns.TypeA), overlaySrc)
		if n := c.count; n > cacheMaxEntries || c.bytes > cacheMaxBytes {
			t.Fatalf("after %d queries: %d entries, %d bytes", i+1, n, c.bytes)
		}
	}
}

// TestCacheRateLimited: the limit is checked before the cache is.
func TestCacheRateLimited(t *testing.T) {
	s := testServer(t, Config{RateLimit: RateLimit{QPS: 1e-9, Burst: 1}})
	c := newReplyCache()
	cachedPacket(t, s, c, query("api.meshnet.", dns.TypeA), overlaySrc)
	raw, _ := query("api.meshnet.", dns.TypeA).Pack()
	w := newRecorder(overlaySrc, true)
	s.handlePacket(raw, w, mustAddr(overlaySrc), false, c)
	if m := w.only(t); !m.Truncated || len(m.Answer) != 0 || c.hits != 0 {
		t.Errorf("a limited source got %v (%d from the cache), want a truncated answer", m, c.hits)
	}
}

// BenchmarkServerUDPBatch is BenchmarkServerUDP with each client keeping
// 16 queries outstanding, as dnsperf does, so the listener reads batches.
func BenchmarkServerUDPBatch(b *testing.B) {
	s := NewServer(Config{Addr: "127.0.0.1:0", Upstreams: []string{}}, nil)
	s.SetTable(benchTable(1000, 5))
	if err := s.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	raw, _ := query("svc42.meshnet.", dns.TypeA).Pack()
	const outstanding = 16
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.Addr()))
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		inflight := 0
		for {
			more := pb.Next()
			if more {
				if _, err := c.Write(raw); err != nil {
					b.Error(err)
					return
				}
				inflight++
			}
			for inflight > 0 && (inflight >= outstanding || !more) {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(buf); err != nil {
					b.Error(err)
					return
				}
				inflight--
			}
			if !more {
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
}

// TestCacheTruncation: the cached path truncates as the uncached one (TC,
// within the client's size); the whole answer of 200 replicas is replayed
// from the cache with its rotation, cut answers are built every time.
func TestCacheTruncation(t *testing.T) {
	const replicas = 200
	var entries []Entry
	for i := range replicas {
		entries = append(entries, Entry{
			Container: fmt.Sprintf("big-%d", i), Services: []string{"big"},
			Addr: netip.AddrFrom4([4]byte{10, 50, byte(i / 250), byte(1 + i%250)}),
		})
	}
	s := testServer(t, Config{})
	s.SetTable(NewTable("meshnet", entries))
	c := newReplyCache()
	for _, tc := range []struct {
		edns     uint16
		maxBytes int
		full     bool
	}{{0, 512, false}, {1232, 1232, false}, {4096, 4096, true}} {
		var firsts []string
		for round := range 3 {
			q := query("big.meshnet.", dns.TypeA)
			if tc.edns != 0 {
				q.SetEdns0(tc.edns, false)
			}
			raw, _ := q.Pack()
			w := newRecorder(overlaySrc, true)
			s.handlePacket(raw, w, mustAddr(overlaySrc), false, c)
			r := w.only(t)
			if len(w.raw[0]) > tc.maxBytes {
				t.Errorf("EDNS %d round %d: %d bytes, over the client's %d", tc.edns, round, len(w.raw[0]), tc.maxBytes)
			}
			if tc.full != !r.Truncated || tc.full != (len(r.Answer) == replicas) || len(r.Answer) == 0 {
				t.Errorf("EDNS %d round %d: TC=%v with %d answers", tc.edns, round, r.Truncated, len(r.Answer))
			}
			firsts = append(firsts, r.Answer[0].(*dns.A).A.String())
		}
		if firsts[0] == firsts[1] || firsts[1] == firsts[2] {
			t.Errorf("EDNS %d: first answers %v, want rotated per query", tc.edns, firsts)
		}
	}
	if c.hits != 2 {
		t.Errorf("%d answers from the cache, want 2 (the whole answer, after its first time)", c.hits)
	}
}
