package dns

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// allow reports whether src's query is admitted (take's other verdicts spend the
// second budget, which these bucket tests do not look at).
func (l *limiter) allow(src netip.Addr) bool { return l.take(src) == admit }

func TestLimiterBucket(t *testing.T) {
	l := newLimiter(RateLimit{QPS: 2, Burst: 3})
	var now int64
	l.now = func() int64 { return now }
	a := netip.MustParseAddr("10.42.0.1")
	b := netip.MustParseAddr("10.42.0.2")

	for i := range 3 {
		if !l.allow(a) {
			t.Fatalf("query %d within the burst refused", i)
		}
	}
	if l.allow(a) {
		t.Fatal("query over the burst allowed")
	}
	if !l.allow(b) {
		t.Fatal("another source limited by the first one's bucket")
	}
	now += int64(time.Second) // 2 QPS: two tokens back
	if !l.allow(a) || !l.allow(a) {
		t.Fatal("tokens not refilled after a second")
	}
	if l.allow(a) {
		t.Fatal("more than QPS×1s tokens after a second")
	}
	now += int64(time.Hour)
	for i := range 3 {
		if !l.allow(a) {
			t.Fatalf("after a long pause, query %d refused: the bucket should be full", i)
		}
	}
	if l.allow(a) {
		t.Fatal("bucket grew past its burst during a long pause")
	}
	if newLimiter(RateLimit{}) != nil || !(*limiter)(nil).allow(a) {
		t.Error("zero RateLimit should mean no limit")
	}
}

// Over the rate a source's queries are truncated, as many as the rate again;
// past that they are dropped. Both budgets refill at the rate.
func TestLimiterVerdicts(t *testing.T) {
	l := newLimiter(RateLimit{QPS: 2, Burst: 3})
	var now int64
	l.now = func() int64 { return now }
	a := netip.MustParseAddr("10.42.0.1")
	verdicts := func(n int) string {
		var b []byte
		for range n {
			b = append(b, "atd"[l.take(a)])
		}
		return string(b)
	}
	if got := verdicts(8); got != "aaatttdd" {
		t.Errorf("a burst of 8 at a 3-query bucket: %s, want aaatttdd (a admitted, t truncated, d dropped)", got)
	}
	now += int64(time.Second) // two of each back
	if got := verdicts(5); got != "aattd" {
		t.Errorf("a second later: %s, want aattd", got)
	}
	// A client at 1.5 times the rate is never dropped: its surplus is truncated.
	now += int64(time.Hour)
	dropped := 0
	for range 3000 {
		now += int64(time.Second) / 3 // 3 q/s against 2 q/s
		if l.take(a) == drop {
			dropped++
		}
	}
	if dropped != 0 {
		t.Errorf("a client at 1.5× the rate lost %d of 3000 queries", dropped)
	}
}

// TestLimiterBounded: a flood of distinct (spoofed) sources does not grow
// the limiter past MaxSources, and a steady source keeps its bucket.
func TestLimiterBounded(t *testing.T) {
	const maxSources = 1024
	l := newLimiter(RateLimit{QPS: 1, Burst: 1, MaxSources: maxSources})
	l.now = func() int64 { return 0 } // no refill: a kept bucket stays empty
	steady := netip.MustParseAddr("10.42.0.1")
	if !l.allow(steady) {
		t.Fatal("first query refused")
	}
	for i := range 200_000 {
		l.allow(netip.AddrFrom4([4]byte{198, byte(i >> 16), byte(i >> 8), byte(i)}))
		if i%100 == 0 && l.allow(steady) {
			t.Fatalf("steady source got a fresh bucket after %d spoofed sources", i)
		}
	}
	if n := l.size(); n > maxSources {
		t.Errorf("tracking %d sources, bound is %d", n, maxSources)
	}
}

// TestServerRateLimit: over the limit, UDP queries are answered truncated
// (header and question, TC set, nothing else) so the client retries over
// TCP, where the source has a bucket of its own; over that too, REFUSED.
// Past twice the limit UDP queries get nothing: a flood. Other sources are
// not affected.
func TestServerRateLimit(t *testing.T) {
	s := testServer(t, Config{RateLimit: RateLimit{QPS: 1e-9, Burst: 5}})
	answered, truncated := 0, 0
	for range 9 {
		w := newRecorder(overlaySrc, true)
		s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
		m := w.only(t)
		switch {
		case m.Truncated && len(m.Answer) == 0 && m.Rcode == dns.RcodeSuccess && len(m.Question) == 1 && m.Question[0].Name == "api.meshnet.":
			truncated++
		case !m.Truncated && len(m.Answer) == 2:
			answered++
		default:
			t.Fatalf("unexpected reply %v", m)
		}
	}
	if answered != 5 || truncated != 4 {
		t.Errorf("answered %d, truncated %d of 9 UDP queries; want the burst of 5 answered, 4 truncated", answered, truncated)
	}
	// The raw UDP path limits before parsing: a query's bytes are answered
	// truncated (the fifth and last truncated answer of the burst)...
	q := query("api.meshnet.", dns.TypeAAAA)
	raw, _ := q.Pack()
	w := newRecorder(overlaySrc, true)
	s.handlePacket(raw, w, netip.MustParseAddr(overlaySrc), false, nil)
	if m := w.only(t); !m.Truncated || len(m.Answer) != 0 || m.Id != q.Id || m.Question[0].Qtype != dns.TypeAAAA {
		t.Errorf("raw query over the limit: %v, want it truncated", m)
	}
	// ...and past twice the limit nothing is answered, on either path.
	for _, serve := range []func(w *recorder){
		func(w *recorder) { s.handlePacket(raw, w, netip.MustParseAddr(overlaySrc), false, nil) },
		func(w *recorder) { s.ServeDNS(w, query("api.meshnet.", dns.TypeA)) },
		func(w *recorder) {
			s.handlePacket([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, w, netip.MustParseAddr(overlaySrc), false, nil)
		},
	} {
		w := newRecorder(overlaySrc, true)
		serve(w)
		if len(w.raw) != 0 || len(w.msgs) != 0 {
			t.Errorf("answered a source past twice its limit: %x %v", w.raw, w.msgs)
		}
	}
	// The retries over TCP are answered: TCP's bucket is its own.
	for i := range 6 {
		w := newRecorder(overlaySrc, false)
		s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
		m := w.only(t)
		if i < 5 && len(m.Answer) != 2 {
			t.Errorf("TCP query %d: %v, want its answer", i, m)
		}
		if i == 5 && m.Rcode != dns.RcodeRefused {
			t.Errorf("TCP over its own limit: %s, want REFUSED", dns.RcodeToString[m.Rcode])
		}
	}
	w = newRecorder("10.42.0.10", true)
	s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
	if m := w.only(t); len(m.Answer) != 2 {
		t.Errorf("another source got %v, want its answer", m)
	}
	if st := s.Stats(); st.Dropped != 9 {
		t.Errorf("over the limit %d, want 9 (5 truncated, 3 dropped, 1 refused)", st.Dropped)
	}
}

// truncatedReply keeps the query's ID, opcode, RD and question, sets QR and
// TC, and drops everything else (an EDNS OPT included); it is never longer
// than the query, and refuses what is not a one-question query.
func TestTruncatedReply(t *testing.T) {
	q := query("db.prod.meshnet.", dns.TypeSRV)
	q.RecursionDesired = true
	q.SetEdns0(4096, true)
	raw, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	b, ok := truncatedReply(raw)
	if !ok || len(b) > len(raw) {
		t.Fatalf("truncatedReply: %v, %d bytes of %d", ok, len(b), len(raw))
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	if !m.Response || !m.Truncated || !m.RecursionDesired || m.Authoritative || m.Id != q.Id || m.Rcode != dns.RcodeSuccess ||
		len(m.Question) != 1 || m.Question[0] != q.Question[0] || len(m.Answer)+len(m.Ns)+len(m.Extra) != 0 {
		t.Errorf("got %v", m)
	}
	resp := new(dns.Msg)
	resp.SetReply(q)
	rraw, _ := resp.Pack()
	for name, bad := range map[string][]byte{"short": raw[:11], "cut name": raw[:15], "a response": rraw,
		"compressed name": append(append([]byte{}, raw[:12]...), 0xC0, 0x0C, 0, 1, 0, 1)} {
		if _, ok := truncatedReply(bad); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
