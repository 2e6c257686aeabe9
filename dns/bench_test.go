package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// discard is a ResponseWriter that packs like the UDP writer and drops
// the bytes: ServeDNS's cost including the wire encoding.
type discard struct {
	remote *net.UDPAddr
	buf    []byte
}

func (w *discard) WriteMsg(m *dns.Msg) error {
	b, err := m.PackBuffer(w.buf)
	w.buf = b[:cap(b)]
	return err
}
func (w *discard) Write(b []byte) (int, error) { return len(b), nil }
func (w *discard) LocalAddr() net.Addr         { return w.remote }
func (w *discard) RemoteAddr() net.Addr        { return w.remote }
func (w *discard) TsigStatus() error           { return nil }
func (w *discard) TsigTimersOnly(bool)         {}
func (w *discard) Hijack()                     {}
func (w *discard) Close() error                { return nil }

func benchTable(services, replicas int) *Table {
	var entries []Entry
	for s := range services {
		for r := range replicas {
			entries = append(entries, Entry{
				Container: fmt.Sprintf("svc%d-%d", s, r), Services: []string{fmt.Sprintf("svc%d", s)},
				Network: "app", Addr: netip.AddrFrom4([4]byte{10, byte(s >> 8), byte(s), byte(r + 1)}),
			})
		}
	}
	return NewTable("meshnet", entries)
}

// BenchmarkServeDNS measures the query path (table lookup, rotation, reply
// built and packed) from parallel goroutines, 1000 services × 5 replicas.
func BenchmarkServeDNS(b *testing.B) {
	s := NewServer(Config{Upstreams: []string{}, AllowRecursion: allowOverlay}, nil)
	s.SetTable(benchTable(1000, 5))
	for _, bc := range []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"service-A", "svc42.meshnet.", dns.TypeA},
		{"container-A", "svc42-3.meshnet.", dns.TypeA},
		{"NXDOMAIN", "nope.meshnet.", dns.TypeA},
		{"PTR", "3.42.0.10.in-addr.arpa.", dns.TypePTR},
		{"refused", "example.com.", dns.TypeA},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := query(bc.qname, bc.qtype)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &discard{remote: &net.UDPAddr{IP: net.IPv4(10, 42, 0, 9), Port: 5353}, buf: make([]byte, 4096)}
				if bc.name == "refused" {
					w.remote.IP = net.IPv4(198, 18, 0, 1)
				}
				for pb.Next() {
					s.ServeDNS(w, r)
				}
			})
		})
	}
	// The whole UDP path from raw bytes: rate limit, header, unpack, answer, pack.
	b.Run("packet-service-A", func(b *testing.B) {
		s := NewServer(Config{Upstreams: []string{}, AllowRecursion: allowOverlay,
			RateLimit: RateLimit{QPS: 1e12, Burst: 1 << 30}}, nil)
		s.SetTable(benchTable(1000, 5))
		raw, _ := query("svc42.meshnet.", dns.TypeA).Pack()
		src := netip.MustParseAddr("10.42.0.9")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := &discard{remote: &net.UDPAddr{IP: net.IPv4(10, 42, 0, 9), Port: 5353}, buf: make([]byte, 4096)}
			for pb.Next() {
				s.handlePacket(raw, w, src, false, nil)
			}
		})
	})
	// The same with a listener's reply cache: after the first query, a hit.
	b.Run("packet-service-A-cached", func(b *testing.B) {
		s := NewServer(Config{Upstreams: []string{}, AllowRecursion: allowOverlay,
			RateLimit: RateLimit{QPS: 1e12, Burst: 1 << 30}}, nil)
		s.SetTable(benchTable(1000, 5))
		raw, _ := query("svc42.meshnet.", dns.TypeA).Pack()
		src := netip.MustParseAddr("10.42.0.9")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := &discard{remote: &net.UDPAddr{IP: net.IPv4(10, 42, 0, 9), Port: 5353}, buf: make([]byte, 4096)}
			c := newReplyCache() // one per listener goroutine
			for pb.Next() {
				s.handlePacket(raw, w, src, false, c)
			}
		})
	})
}

// BenchmarkServerUDP measures queries over loopback UDP against a running
// server: each parallel goroutine is one client socket waiting for each
// answer (like dnsperf with one outstanding query per socket).
func BenchmarkServerUDP(b *testing.B) {
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
	b.SetParallelism(8)
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
		for pb.Next() {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(raw); err != nil {
				b.Error(err)
				return
			}
			if _, err := c.Read(buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
}
