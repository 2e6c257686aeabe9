package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/meshnet/meshnet/dns"
)

// The measurement behind the DNS server's default per-source rate limit (issue 18): what a
// flooding source costs a legitimate one, with the limit off and at a few settings. The
// server runs in this process on loopback; the flood comes from 127.0.0.2 at full speed, the
// legitimate client is dnsperf from 127.0.0.3 at a fixed, busy rate. A good default leaves
// the legitimate client's latency and losses where they are without a flood, and never limits
// that client itself. The flood is not dnsperf: dnsperf keeps a bounded number of queries
// outstanding and waits out each lost one, so a limit that drops would throttle the flood for
// it, which a real flood does not allow. flood sends without waiting.

// DNSFloodCase is one limit setting, measured.
type DNSFloodCase struct {
	LimitQPS float64    `json:"limit_qps"` // 0: off
	Flood    DNSFigures `json:"flood"`
	Client   DNSFigures `json:"client"`
	// ClientLimited is how many of the client's queries were over the limit
	// (answered truncated or dropped) when the client ran alone at this limit:
	// above 0, the limit binds a legitimate client.
	ClientLimited uint64 `json:"client_limited_alone"`
}

// DNSFlood is the whole measurement: the client alone first, then beside a flood per limit.
type DNSFlood struct {
	ClientQPS float64        `json:"client_target_qps"`
	Seconds   float64        `json:"seconds"` // of each run
	Alone     DNSFigures     `json:"client_alone"`
	Cases     []DNSFloodCase `json:"cases"`
	Err       string         `json:"error,omitempty"`
}

// MeasureDNSFlood runs the client alone (limit off), then client and flood together with
// each limit in limits (queries per second per source; 0 = off, bursts of twice the limit).
func MeasureDNSFlood(ctx context.Context, d time.Duration, clientQPS float64, limits []float64, outDir string, log *slog.Logger) DNSFlood {
	out := DNSFlood{ClientQPS: clientQPS, Seconds: d.Seconds()}
	entries := []dns.Entry{
		{Container: "bench-vx-a", Services: []string{meshService + "-vxlan"}, Network: "bench-vx", Addr: netip.MustParseAddr("10.62.0.2")},
		{Container: "bench-vx-b", Services: []string{meshService + "-vxlan"}, Network: "bench-vx", Addr: netip.MustParseAddr("10.62.0.66")},
	}
	qname := meshService + "-vxlan.meshnet"
	qfile := filepath.Join(outDir, "dnsflood.txt")
	if err := os.WriteFile(qfile, []byte(qname+" A\n"), 0o644); err != nil {
		out.Err = err.Error()
		return out
	}
	// serve runs fn against a fresh server with limit and returns how many
	// queries were over the limit.
	serve := func(limit float64, fn func(addr netip.AddrPort)) (uint64, error) {
		cfg := dns.Config{Addr: "127.0.0.1:0", Upstreams: []string{}}
		if limit > 0 {
			cfg.RateLimit = dns.RateLimit{QPS: limit, Burst: int(2 * limit)}
		}
		srv := dns.NewServer(cfg, log)
		srv.SetTable(dns.NewTable("meshnet", entries))
		if err := srv.Listen(); err != nil {
			return 0, fmt.Errorf("listening on loopback: %w", err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Run(rctx) }()
		fn(srv.Addr())
		cancel()
		<-done
		return srv.Counts().RateLimited(), nil
	}
	perf := func(addr netip.AddrPort, from string, qps float64) DNSFigures {
		f := DNSFigures{Server: addr.String(), Query: qname}
		args := []string{"-s", addr.Addr().String(), "-p", strconv.Itoa(int(addr.Port())), "-a", from,
			"-d", qfile, "-l", strconv.Itoa(int(d.Seconds()))}
		if qps > 0 {
			args = append(args, "-Q", strconv.Itoa(int(qps)))
		}
		res, err := exec.CommandContext(ctx, "dnsperf", args...).CombinedOutput()
		if err != nil {
			f.Err = fmt.Sprintf("dnsperf: %v: %s", err, lastLineOf(string(res)))
			return f
		}
		parseDNSPerf(string(res), &f)
		return f
	}
	if _, err := serve(0, func(addr netip.AddrPort) { out.Alone = perf(addr, "127.0.0.3", clientQPS) }); err != nil {
		out.Err = err.Error()
		return out
	}
	for _, limit := range limits {
		c := DNSFloodCase{LimitQPS: limit}
		limited, err := serve(limit, func(addr netip.AddrPort) { perf(addr, "127.0.0.3", clientQPS) })
		if err != nil {
			out.Err = err.Error()
			return out
		}
		c.ClientLimited = limited
		_, err = serve(limit, func(addr netip.AddrPort) {
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Flood = flood(ctx, addr, "127.0.0.2", qname, d)
			}()
			c.Client = perf(addr, "127.0.0.3", clientQPS)
			wg.Wait()
		})
		if err != nil {
			out.Err = err.Error()
			return out
		}
		log.Info("dns flood", "limit", limit, "client_qps", c.Client.QPS, "client_ms", c.Client.AvgLatencyMS, "client_lost", c.Client.Lost, "flood_qps", c.Flood.QPS)
		out.Cases = append(out.Cases, c)
	}
	return out
}

// DNSFloodRows report, per limit, the legitimate client's latency and losses beside the
// flood against the same client alone (the peer column): a ratio near 1 means the flood
// cost it nothing.
func DNSFloodRows(f DNSFlood) []Row {
	if f.Err != "" {
		return []Row{Compare("dns", "a client beside a flood (in process, loopback)", "ms", Lower, Unavailable(fmt.Errorf("%s", f.Err)), "alone", Unavailable(fmt.Errorf("not measured")), nil)}
	}
	fig := func(g DNSFigures, v float64) Figure {
		if g.Err != "" {
			return Unavailable(fmt.Errorf("%s", g.Err))
		}
		return Val(v)
	}
	var rows []Row
	for _, c := range f.Cases {
		limit := "no limit"
		if c.LimitQPS > 0 {
			limit = fmt.Sprintf("limit %.0f/s per source", c.LimitQPS)
		}
		lat := Compare("dns", fmt.Sprintf("latency of a client at %.0f q/s beside a flood, %s", f.ClientQPS, limit), "ms", Lower,
			fig(c.Client, c.Client.AvgLatencyMS), "alone", fig(f.Alone, f.Alone.AvgLatencyMS), nil)
		lat.Note = fmt.Sprintf("client lost %d of %d (alone: %d of %d); alone at this limit %d of its queries were over it (truncated or dropped); the flood sent %.0f queries/s and got %.0f answers/s (truncated ones included: it does not retry over TCP)",
			c.Client.Lost, c.Client.Sent, f.Alone.Lost, f.Alone.Sent, c.ClientLimited, float64(c.Flood.Sent)/f.Seconds, c.Flood.QPS)
		rows = append(rows, lat)
	}
	return rows
}

// flood sends the query for qname from the address from to addr as fast as one socket
// can for d, without waiting for answers, and counts the answers that come back. Its
// figures: Sent, Completed (answers) and QPS (answers per second).
func flood(ctx context.Context, addr netip.AddrPort, from, qname string, d time.Duration) DNSFigures {
	f := DNSFigures{Server: addr.String(), Query: qname}
	conn, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(from), 0)), net.UDPAddrFromAddrPort(addr))
	if err != nil {
		f.Err = fmt.Sprintf("flood socket: %v", err)
		return f
	}
	defer conn.Close()
	m := new(mdns.Msg)
	m.SetQuestion(qname+".", mdns.TypeA)
	q, err := m.Pack()
	if err != nil {
		f.Err = err.Error()
		return f
	}
	var answers atomic.Int64
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				return // closed at the end
			}
			answers.Add(1)
		}
	}()
	end := time.Now().Add(d)
	for i := 0; ctx.Err() == nil; i++ {
		if i%1024 == 0 && time.Now().After(end) {
			break
		}
		binary.BigEndian.PutUint16(q, uint16(i))
		if _, err := conn.Write(q); err == nil {
			f.Sent++
		}
	}
	time.Sleep(100 * time.Millisecond) // the last answers
	f.Completed = int(answers.Load())
	f.Lost = f.Sent - f.Completed
	f.QPS = float64(f.Completed) / d.Seconds()
	return f
}
