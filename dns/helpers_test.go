package dns

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// recorder is a dns.ResponseWriter that keeps what was written, after a
// round trip through the wire format (so a reply that does not pack, or
// does not parse back, is caught).
type recorder struct {
	udp    bool
	remote netip.AddrPort
	raw    [][]byte
	msgs   []*dns.Msg
	errs   []error
}

func newRecorder(src string, udp bool) *recorder {
	return &recorder{udp: udp, remote: netip.AddrPortFrom(netip.MustParseAddr(src), 40000)}
}

func (w *recorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		w.errs = append(w.errs, err)
		return err
	}
	_, err = w.Write(b)
	return err
}

func (w *recorder) Write(b []byte) (int, error) {
	w.raw = append(w.raw, append([]byte(nil), b...))
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		w.errs = append(w.errs, err)
		m = nil
	}
	w.msgs = append(w.msgs, m)
	return len(b), nil
}

func (w *recorder) LocalAddr() net.Addr {
	if w.udp {
		return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
}

func (w *recorder) RemoteAddr() net.Addr {
	if w.udp {
		return net.UDPAddrFromAddrPort(w.remote)
	}
	return net.TCPAddrFromAddrPort(w.remote)
}

func (w *recorder) TsigStatus() error   { return nil }
func (w *recorder) TsigTimersOnly(bool) {}
func (w *recorder) Hijack()             {}
func (w *recorder) Close() error        { return nil }

// only returns the single reply written, failing the test otherwise.
func (w *recorder) only(t testing.TB) *dns.Msg {
	t.Helper()
	if len(w.errs) > 0 {
		t.Fatalf("reply did not survive the wire: %v", w.errs)
	}
	if len(w.msgs) != 1 {
		t.Fatalf("got %d replies, want 1", len(w.msgs))
	}
	return w.msgs[0]
}

var (
	overlaySrc = "10.42.0.9"   // inside a meshnet network: may recurse
	outsideSrc = "198.18.0.77" // an underlay address: may not
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func allowOverlay(a netip.Addr) bool {
	return netip.MustParsePrefix("10.0.0.0/8").Contains(a)
}

func testEntries() []Entry {
	ip := netip.MustParseAddr
	return []Entry{
		{Container: "/web-1", Services: []string{"api"}, Network: "app", Addr: ip("10.42.0.2"), Node: "n1",
			Ports: []Port{{Proto: "tcp", Port: 8080, Name: "http"}}},
		{Container: "web-2", Services: []string{"api", "API"}, Network: "app", Addr: ip("10.42.1.3"), Node: "n2",
			Ports: []Port{{Proto: "TCP", Port: 8080, Name: "http"}}},
		// The same endpoint reported twice: one address, not two.
		{Container: "web-2", Services: []string{"api"}, Network: "app", Addr: ip("10.42.1.3"), Node: "n2"},
		// Docker names with '_' and '.'.
		{Container: "my_app.1", Services: []string{"Data_Base"}, Network: "app", Addr: ip("10.42.0.4"), Node: "n1"},
		{Container: "six", Services: []string{"v6svc"}, Network: "app", Addr: ip("fd00:42::5"), Node: "n1"},
		// A dual-stack endpoint: both families under every name.
		{Container: "dual", Services: []string{"ds"}, Network: "app", Addr: ip("10.42.0.9"), Addr6: ip("fd42::9"), Node: "n2"},
		// One container on two networks.
		{Container: "edge", Services: []string{"proxy"}, Network: "front", Addr: ip("10.43.0.2"), Node: "n3"},
		{Container: "edge", Services: []string{"proxy"}, Network: "back", Addr: ip("10.44.0.2"), Node: "n3"},
		// Unusable entries are skipped, not fatal.
		{Container: "ghost", Services: []string{"api"}},
		{Container: "___", Addr: ip("10.42.9.9")},
	}
}

func testServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Upstreams == nil {
		cfg.Upstreams = []string{}
	}
	if cfg.AllowRecursion == nil {
		cfg.AllowRecursion = allowOverlay
	}
	s := NewServer(cfg, nil)
	s.SetTable(NewTable(cfg.Domain, testEntries()))
	return s
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// rrStrings renders records as "owner ttl class type rdata", one space
// apart, sorted: the comparison is order-insensitive.
func rrStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	slices.Sort(out)
	return out
}

func rrTypes(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, dns.TypeToString[rr.Header().Rrtype])
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
