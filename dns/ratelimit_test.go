package dns

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

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

// TestServerRateLimit: over the limit, UDP queries get no reply at all and
// TCP queries get REFUSED; other sources are not affected.
func TestServerRateLimit(t *testing.T) {
	s := testServer(t, Config{RateLimit: RateLimit{QPS: 1e-9, Burst: 5}})
	answered := 0
	for range 20 {
		w := newRecorder(overlaySrc, true)
		s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
		answered += len(w.raw)
	}
	if answered != 5 {
		t.Errorf("answered %d of 20 UDP queries, want the burst of 5", answered)
	}
	w := newRecorder(overlaySrc, false)
	s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
	if m := w.only(t); m.Rcode != dns.RcodeRefused {
		t.Errorf("TCP over the limit: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
	// The raw UDP path limits before parsing: garbage counts too.
	w = newRecorder(overlaySrc, true)
	s.handlePacket([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, w, netip.MustParseAddr(overlaySrc), false, nil)
	if len(w.raw) != 0 {
		t.Errorf("replied to a limited source: %x", w.raw)
	}
	w = newRecorder("10.42.0.10", true)
	s.ServeDNS(w, query("api.meshnet.", dns.TypeA))
	if m := w.only(t); len(m.Answer) != 2 {
		t.Errorf("another source got %v, want its answer", m)
	}
	if st := s.Stats(); st.Dropped != 17 {
		t.Errorf("dropped %d, want 17", st.Dropped)
	}
}
