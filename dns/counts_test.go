package dns

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Two servers sharing one Counts add into it, over the listeners' cached
// and uncached paths and over TCP; a forwarded query lands in the latency
// histogram; a query over the rate limit is counted as dropped.
func TestCountsByTypeAndRcode(t *testing.T) {
	counts := new(Counts)
	fwd := func(ctx context.Context, r *dns.Msg, tcp bool) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		return m, nil
	}
	a := testServer(t, Config{Domain: "meshnet", Counts: counts, Forward: fwd, AllowRecursion: netip.Addr.IsLoopback})
	b := testServer(t, Config{Domain: "meshnet", Counts: counts, RateLimit: RateLimit{QPS: 1, Burst: 1}})
	aa, ba := runServer(t, a), runServer(t, b)

	for range 3 { // the second and third come from the reply cache
		if r := exchange(t, "udp", aa, query("api.meshnet.", dns.TypeA)); r.Rcode != dns.RcodeSuccess {
			t.Fatalf("api.meshnet A: %s", dns.RcodeToString[r.Rcode])
		}
	}
	exchange(t, "tcp", aa, query("nothing.meshnet.", dns.TypeAAAA))
	exchange(t, "udp", aa, query("example.org.", dns.TypeMX))
	exchange(t, "udp", ba, query("api.meshnet.", dns.TypeCAA)) // the one query b's limit lets through

	got := map[[2]string]uint64{}
	for _, r := range counts.Replies() {
		got[[2]string{r.Type, r.Rcode}] = r.N
	}
	want := map[[2]string]uint64{
		{"A", "NOERROR"}:     3,
		{"AAAA", "NXDOMAIN"}: 1,
		{"MX", "NXDOMAIN"}:   1, // the upstream's answer
		{"other", "NOERROR"}: 1, // CAA is not counted by name: NODATA
	}
	if len(got) != len(want) {
		t.Errorf("replies %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("replies %v: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if h := counts.Forwards(); h.Count != 1 || h.Cumulative[len(h.Cumulative)-1] > 1 || len(h.Bounds) != len(h.Cumulative) {
		t.Errorf("forward histogram %+v, want one forward", h)
	}

	// Over b's limit: answered truncated over UDP, counted.
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	for range 3 {
		_, _, _ = c.Exchange(query("api.meshnet.", dns.TypeA), ba.String())
	}
	if counts.RateLimited() == 0 {
		t.Error("queries over the rate limit were not counted")
	}
}

func TestQtypeOf(t *testing.T) {
	m := query("a.b.meshnet.", dns.TypeSRV)
	raw, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if got := qtypeOf(raw); got != dns.TypeSRV {
		t.Errorf("qtypeOf = %d, want SRV", got)
	}
	for _, bad := range [][]byte{nil, raw[:12], raw[:len(raw)-3]} {
		if got := qtypeOf(bad); got != 0 {
			t.Errorf("qtypeOf(%d bytes) = %d, want 0", len(bad), got)
		}
	}
}
