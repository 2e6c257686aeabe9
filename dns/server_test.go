package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// runServer starts s on its configured address and stops it when the test
// ends, failing the test if Run returned an error.
func runServer(t *testing.T, s *Server) netip.AddrPort {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return s.Addr()
}

func exchange(t *testing.T, net string, addr netip.AddrPort, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr.String())
	if err != nil {
		t.Fatalf("%s query %s: %v", net, m.Question[0].Name, err)
	}
	return r
}

// TestTruncation: an answer too large for the client's UDP size comes back
// cut with TC; over TCP (or with a large enough EDNS size) it comes whole.
func TestTruncation(t *testing.T) {
	const replicas = 200 // about 3.2 KB of A records
	var entries []Entry
	for i := range replicas {
		entries = append(entries, Entry{
			Container: fmt.Sprintf("big-%d", i), Services: []string{"big"},
			Addr: netip.AddrFrom4([4]byte{10, 50, byte(i / 250), byte(1 + i%250)}),
		})
	}
	s := testServer(t, Config{AllowRecursion: netip.Addr.IsLoopback, Listeners: 2})
	s.SetTable(NewTable("meshnet", entries))
	addr := runServer(t, s)

	for _, tc := range []struct {
		name     string
		net      string
		edns     uint16 // 0: no EDNS
		maxBytes int
		full     bool
	}{
		{"udp without EDNS", "udp", 0, 512, false},
		{"udp EDNS 1232", "udp", 1232, 1232, false},
		{"udp EDNS 4096", "udp", 4096, 4096, true},
		{"tcp", "tcp", 0, dns.MaxMsgSize, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := query("big.meshnet.", dns.TypeA)
			if tc.edns != 0 {
				q.SetEdns0(tc.edns, false)
			}
			r := exchange(t, tc.net, addr, q)
			if r.Rcode != dns.RcodeSuccess {
				t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
			}
			r.Compress = true // as sent
			if size := r.Len(); size > tc.maxBytes {
				t.Errorf("reply is %d bytes, over the client's %d", size, tc.maxBytes)
			}
			if tc.full {
				if r.Truncated || len(r.Answer) != replicas {
					t.Errorf("TC=%v with %d answers, want the whole %d", r.Truncated, len(r.Answer), replicas)
				}
			} else if !r.Truncated || len(r.Answer) >= replicas {
				t.Errorf("TC=%v with %d answers, want TC and fewer than %d", r.Truncated, len(r.Answer), replicas)
			}
		})
	}
}

// TestServerUDPMalformed sends raw packets to a running server: a bad
// message with a header gets FORMERR, garbage shorter than a header and
// responses get nothing, and the server keeps answering.
func TestServerUDPMalformed(t *testing.T) {
	s := testServer(t, Config{AllowRecursion: netip.Addr.IsLoopback})
	addr := runServer(t, s)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	roundTrip := func(b []byte, wait time.Duration) []byte {
		t.Helper()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			return nil
		}
		return buf[:n]
	}
	// A header claiming one question, then a label running off the end.
	bad := []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 63, 'a', 'b'}
	reply := roundTrip(bad, 5*time.Second)
	m := new(dns.Msg)
	if err := m.Unpack(reply); err != nil {
		t.Fatalf("reply to a bad message: %v (%x)", err, reply)
	}
	if m.Id != 0xbeef || m.Rcode != dns.RcodeFormatError || !m.Response || !m.RecursionDesired {
		t.Errorf("reply %v, want FORMERR for id 0xbeef with RD echoed", m.MsgHdr)
	}
	// No reply: a short read deadline is enough, a late reply is still caught
	// by the next read below (its ID would not match).
	if r := roundTrip([]byte{1, 2, 3}, 200*time.Millisecond); r != nil {
		t.Errorf("replied %x to 3 bytes", r)
	}
	resp := query("api.meshnet.", dns.TypeA)
	resp.Response = true
	b, _ := resp.Pack()
	if r := roundTrip(b, 200*time.Millisecond); r != nil {
		t.Errorf("replied %x to a response", r)
	}
	good := query("api.meshnet.", dns.TypeA)
	b, _ = good.Pack()
	m = new(dns.Msg)
	if err := m.Unpack(roundTrip(b, 5*time.Second)); err != nil || m.Id != good.Id || len(m.Answer) != 2 {
		t.Errorf("after garbage: reply %v err %v, want the answer to id %d", m, err, good.Id)
	}
}

func TestListenErrors(t *testing.T) {
	t.Run("address not on this host", func(t *testing.T) {
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); strings.TrimSpace(string(b)) == "1" {
			t.Skip("net.ipv4.ip_nonlocal_bind=1: any address binds")
		}
		s := NewServer(Config{Addr: "192.0.2.53:0", Upstreams: []string{}}, nil)
		err := s.Run(context.Background())
		if !errors.Is(err, syscall.EADDRNOTAVAIL) || !strings.Contains(err.Error(), "ip addr add 192.0.2.53/32 dev lo") {
			t.Errorf("Run: %v; want EADDRNOTAVAIL saying to add the address to lo", err)
		}
	})
	t.Run("address in use", func(t *testing.T) {
		a := testServer(t, Config{})
		addr := runServer(t, a)
		b := NewServer(Config{Addr: addr.String(), Upstreams: []string{}}, nil)
		err := b.Listen()
		if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "another process") {
			t.Errorf("second server on %s: %v; want EADDRINUSE, not a shared port", addr, err)
		}
	})
	t.Run("not an IP", func(t *testing.T) {
		s := NewServer(Config{Addr: "localhost:53", Upstreams: []string{}}, nil)
		if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "want IP:port") {
			t.Errorf("Listen: %v; want a complaint about the address", err)
		}
	})
	t.Run("bad upstream", func(t *testing.T) {
		s := NewServer(Config{Addr: "127.0.0.1:0", Upstreams: []string{"dns.example"}}, nil)
		if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "dns.example") {
			t.Errorf("Listen: %v; want a complaint about the upstream", err)
		}
	})
}

// TestRunStops: Run returns when its context ends, closes its sockets and
// leaves no goroutine behind; the server cannot run again.
func TestRunStops(t *testing.T) {
	before := runtime.NumGoroutine()
	s := testServer(t, Config{Listeners: 3})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if n := len(s.lis.udp); n != 3 {
		t.Errorf("%d UDP sockets, want 3 (Listeners)", n)
	}
	go func() { done <- s.Run(ctx) }()
	exchange(t, "udp", addr, query("api.meshnet.", dns.TypeA))
	exchange(t, "tcp", addr, query("api.meshnet.", dns.TypeA))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if _, err := net.Dial("tcp", addr.String()); err == nil {
		t.Error("TCP still accepting after Run returned")
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Run, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
