package dns

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// deadUpstream reads queries and never answers; it counts them.
func deadUpstream(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var n atomic.Int32
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return pc.LocalAddr().String(), &n
}

// fakeUpstream answers every A query with addr (or with rcode when set)
// and counts queries.
func fakeUpstream(t *testing.T, addr string, rcode int) (string, *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			n.Add(1)
			m := new(dns.Msg)
			m.SetRcode(r, rcode)
			m.RecursionAvailable = true
			if rcode == dns.RcodeSuccess {
				m.Answer = []dns.RR{&dns.A{Hdr: hdr(r.Question[0].Name, dns.TypeA, 300), A: net.ParseIP(addr)}}
			}
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String(), &n
}

// TestForwardFailover: the first upstream is dead; queries are answered
// by the second, the dead one is tried once only, and the answer arrives
// through a running server (the asynchronous forward path).
func TestForwardFailover(t *testing.T) {
	dead, deadN := deadUpstream(t)
	live, liveN := fakeUpstream(t, "192.0.2.1", dns.RcodeSuccess)
	s := testServer(t, Config{
		Upstreams:      []string{dead, live},
		ForwardTimeout: 300 * time.Millisecond,
		AllowRecursion: netip.Addr.IsLoopback,
	})
	addr := runServer(t, s)

	for i := range 4 {
		q := query("example.org.", dns.TypeA)
		r := exchange(t, "udp", addr, q)
		if r.Id != q.Id || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 ||
			r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Fatalf("query %d: %v, want the live upstream's answer", i, r)
		}
	}
	if d, l := deadN.Load(), liveN.Load(); d != 1 || l != 4 {
		t.Errorf("dead upstream saw %d queries, live %d; want 1 and 4 (the live one is remembered)", d, l)
	}
	if st := s.Stats(); st.Forwarded != 4 {
		t.Errorf("stats %+v, want 4 forwarded", st)
	}
}

// TestForwardErrorRcode: an upstream answering SERVFAIL is passed over.
func TestForwardErrorRcode(t *testing.T) {
	bad, badN := fakeUpstream(t, "", dns.RcodeServerFailure)
	good, goodN := fakeUpstream(t, "192.0.2.7", dns.RcodeSuccess)
	s := testServer(t, Config{Upstreams: []string{bad, good}, AllowRecursion: netip.Addr.IsLoopback})
	w := newRecorder("127.0.0.1", true)
	s.ServeDNS(w, query("example.net.", dns.TypeA))
	m := w.only(t)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || badN.Load() != 1 || goodN.Load() != 1 {
		t.Errorf("reply %v (bad saw %d, good %d); want the good upstream's answer", m, badN.Load(), goodN.Load())
	}

	// Only bad upstreams: their answer is passed on, not replaced.
	s = testServer(t, Config{Upstreams: []string{bad}, AllowRecursion: netip.Addr.IsLoopback})
	w = newRecorder("127.0.0.1", true)
	s.ServeDNS(w, query("example.net.", dns.TypeA))
	if m := w.only(t); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
}

// TestForwardRefusedSource: a source outside meshnet networks is refused
// and nothing reaches the upstream.
func TestForwardRefusedSource(t *testing.T) {
	up, upN := fakeUpstream(t, "192.0.2.1", dns.RcodeSuccess)
	s := testServer(t, Config{Upstreams: []string{up}})
	w := newRecorder(outsideSrc, true)
	s.ServeDNS(w, query("example.org.", dns.TypeA))
	if m := w.only(t); m.Rcode != dns.RcodeRefused || m.RecursionAvailable {
		t.Errorf("reply %v, want REFUSED without RA", m.MsgHdr)
	}
	if n := upN.Load(); n != 0 {
		t.Errorf("upstream saw %d queries from a refused source", n)
	}
}

// TestForwardCancelled: stopping the server aborts a forward waiting on a
// dead upstream instead of leaving it to time out.
func TestForwardCancelled(t *testing.T) {
	dead, _ := deadUpstream(t)
	s := testServer(t, Config{Upstreams: []string{dead}, ForwardTimeout: time.Hour, AllowRecursion: netip.Addr.IsLoopback})
	done := make(chan *dns.Msg)
	go func() {
		w := newRecorder("127.0.0.1", true)
		s.ServeDNS(w, query("example.org.", dns.TypeA))
		done <- w.msgs[0]
	}()
	time.Sleep(50 * time.Millisecond) // let the forward start; the test holds either way
	s.Close()
	select {
	case m := <-done:
		if m.Rcode != dns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("forward not aborted by Close")
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	conf := write("resolv.conf", `# generated
nameserver 169.254.53.53
nameserver 127.0.0.11
nameserver 10.255.255.53
nameserver 2001:db8::53
nameserver 10.255.255.53
options ndots:0
`)
	self := netip.MustParseAddrPort("169.254.53.53:53")
	got, err := UpstreamsFromResolvConf(conf, self)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.255.255.53:53", "[2001:db8::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("upstreams %v, want %v (not ourselves, not Docker's resolver, no duplicates)", got, want)
	}

	// Listening on a wildcard address: loopback resolvers on our port are us.
	loop := write("loop.conf", "nameserver 127.0.0.1\nnameserver 198.18.0.1\n")
	got, _ = UpstreamsFromResolvConf(loop, netip.MustParseAddrPort("0.0.0.0:53"))
	if want := []string{"198.18.0.1:53"}; !slices.Equal(got, want) {
		t.Errorf("upstreams %v, want %v", got, want)
	}

	// systemd-resolved's stub is replaced by its real upstreams.
	old := resolvedUpstreams
	t.Cleanup(func() { resolvedUpstreams = old })
	resolvedUpstreams = write("resolved.conf", "nameserver 198.18.0.2\nnameserver 169.254.53.53\n")
	stub := write("stub.conf", "nameserver 127.0.0.53\n")
	got, _ = UpstreamsFromResolvConf(stub, self)
	if want := []string{"198.18.0.2:53"}; !slices.Equal(got, want) {
		t.Errorf("upstreams %v, want %v", got, want)
	}

	if _, err := UpstreamsFromResolvConf(filepath.Join(dir, "missing"), self); err == nil {
		t.Error("no error for a missing file")
	}
}

// TestDefaultUpstreams: a server made with nil Upstreams reads ResolvConf.
func TestDefaultUpstreams(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 198.18.0.53\nnameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := NewServer(Config{Addr: "0.0.0.0:53", ResolvConf: p}, nil)
	if f, ok := s.fwd.(*forwarder); !ok || !slices.Equal(f.upstreams, []string{"198.18.0.53:53"}) {
		t.Errorf("upstreams %v, want [198.18.0.53:53] from %s", s.fwd, p)
	}
}
