package bench

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/meshnet/meshnet/dns"
)

// DNSScaleFigures is the query latency of meshnet's DNS server with a table of Records
// endpoints, as one container's server sees it (scoped to its network), measured by
// clients that each keep one query outstanding.
type DNSScaleFigures struct {
	Records  int     `json:"records"`
	Networks int     `json:"networks"`
	Queries  int     `json:"queries"`
	Failed   int     `json:"failed"`
	P50US    float64 `json:"p50_us"`
	P99US    float64 `json:"p99_us"`
	Err      string  `json:"error,omitempty"`
}

// dnsScaleClients is how many clients query at once: enough to keep both cores busy, few
// enough that the latency is the server's, not a queue's.
const dnsScaleClients = 4

// MeasureDNSScale measures the query latency at each table size, the sizes taken in turn
// `rounds` times after a warm-up (so that drift on a shared machine spreads over all of them),
// and reports per size the round with the median p99. The table is built as the daemon builds it
// (dns.NewTable from every endpoint of the cluster), 100 endpoints per network and 5 replicas
// per service; the server is scoped to the first network as a container's is, and queries
// cycle over that network's bare service names, their `<service>.<domain>` form and its
// containers' names, so a larger table means more names asked as well as more names held.
func MeasureDNSScale(ctx context.Context, sizes []int, rounds int, d time.Duration, log *slog.Logger) []DNSScaleFigures {
	runs := make([][]DNSScaleFigures, len(sizes))
	// A first short run of each size warms the machine (CPU frequency, allocator, caches) so
	// that it is not counted against whichever size comes first.
	for _, n := range sizes {
		dnsScaleRun(ctx, n, min(d, time.Second))
	}
	for range rounds {
		for i, n := range sizes {
			f := dnsScaleRun(ctx, n, d)
			log.Info("dns latency by table size", "records", n, "p50_us", f.P50US, "p99_us", f.P99US, "queries", f.Queries, "err", f.Err)
			runs[i] = append(runs[i], f)
		}
	}
	out := make([]DNSScaleFigures, len(sizes))
	for i, rs := range runs {
		// Failed rounds sort last, the others by p99.
		slices.SortFunc(rs, func(a, b DNSScaleFigures) int {
			if c := cmp.Compare(boolInt(a.Err != ""), boolInt(b.Err != "")); c != 0 {
				return c
			}
			return cmp.Compare(a.P99US, b.P99US)
		})
		out[i] = rs[len(rs)/2]
	}
	return out
}

// dnsScaleEntries makes n endpoints, 100 per network (10.70.<net>.0/24), 5 per service.
func dnsScaleEntries(n int) (entries []dns.Entry, nets int, names []string) {
	for i := range n {
		net, host := i/100, i%100
		e := dns.Entry{
			Container: fmt.Sprintf("scale-n%d-c%d", net, host),
			Services:  []string{fmt.Sprintf("svc%d", host/5)},
			Network:   fmt.Sprintf("scale-n%d", net),
			Subnet:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 70, byte(net), 0}), 24),
			Addr:      netip.AddrFrom4([4]byte{10, 70, byte(net), byte(host + 2)}),
		}
		entries = append(entries, e)
		if net == 0 {
			names = append(names, e.Container+".")
			if host%5 == 0 {
				names = append(names, e.Services[0]+".", e.Services[0]+".meshnet.")
			}
		}
	}
	return entries, (n + 99) / 100, names
}

func dnsScaleRun(ctx context.Context, n int, d time.Duration) DNSScaleFigures {
	entries, nets, names := dnsScaleEntries(n)
	f := DNSScaleFigures{Records: n, Networks: nets}
	srv := dns.NewServer(dns.Config{Addr: "127.0.0.1:0", Upstreams: []string{}}, nil)
	srv.SetTable(dns.NewTable("meshnet", entries))
	srv.SetScope(dns.NewScope([]netip.Prefix{entries[0].Subnet}))
	if err := srv.Listen(); err != nil {
		f.Err = fmt.Sprintf("listening on loopback: %v", err)
		return f
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	defer func() { cancel(); <-done }()

	var (
		mu      sync.Mutex
		lat     []time.Duration
		failed  int
		firstEr error
		wg      sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	for c := range dnsScaleClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine, bad, err := dnsScaleClient(srv.Addr(), names, c, deadline)
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			failed += bad
			if err != nil && firstEr == nil {
				firstEr = err
			}
		}()
	}
	wg.Wait()
	if firstEr != nil {
		f.Err = firstEr.Error()
		return f
	}
	if len(lat) == 0 {
		f.Err = "no query answered"
		return f
	}
	slices.Sort(lat)
	f.Queries, f.Failed = len(lat), failed
	f.P50US = float64(lat[len(lat)/2].Nanoseconds()) / 1e3
	f.P99US = float64(lat[len(lat)*99/100].Nanoseconds()) / 1e3
	return f
}

// dnsScaleClient asks names in turn (starting at an offset of its own) until the deadline,
// one query outstanding, and returns the latency of each answered query; a query not
// answered within a second, or answered with anything but NOERROR and an answer, counts as
// failed.
func dnsScaleClient(addr netip.AddrPort, names []string, offset int, deadline time.Time) ([]time.Duration, int, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, 0, fmt.Errorf("dialing the server: %w", err)
	}
	defer conn.Close()
	var (
		lat    []time.Duration
		failed int
		buf    = make([]byte, 4096)
		q      = new(mdns.Msg)
		r      = new(mdns.Msg)
	)
	for i := offset; time.Now().Before(deadline); i++ {
		q.SetQuestion(names[i%len(names)], mdns.TypeA)
		q.Id = uint16(i)
		wire, err := q.Pack()
		if err != nil {
			return nil, 0, fmt.Errorf("packing a query: %w", err)
		}
		start := time.Now()
		if _, err := conn.Write(wire); err != nil {
			return nil, 0, fmt.Errorf("sending a query: %w", err)
		}
		_ = conn.SetReadDeadline(start.Add(time.Second))
		for {
			nr, err := conn.Read(buf)
			if err != nil {
				failed++
				break
			}
			if r.Unpack(buf[:nr]) != nil || r.Id != q.Id {
				continue // a late answer to an earlier query
			}
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) == 0 {
				failed++
			} else {
				lat = append(lat, time.Since(start))
			}
			break
		}
	}
	return lat, failed, nil
}

// DNSScaleRows compares the largest table's p99 (and p50) with the smallest's: the target is
// that the cluster's size does not show in a query's latency.
func DNSScaleRows(figs []DNSScaleFigures) []Row {
	if len(figs) < 2 {
		return nil
	}
	small, large := figs[0], figs[len(figs)-1]
	fig := func(f DNSScaleFigures, v float64) Figure {
		if f.Err != "" {
			return Unavailable(fmt.Errorf("%s", f.Err))
		}
		return Val(v)
	}
	peer := fmt.Sprintf("%d records", small.Records)
	p99 := Compare("dns", fmt.Sprintf("query latency p99, %d records (in process, one container's scoped server)", large.Records), "µs", Lower,
		fig(large, large.P99US), peer, fig(small, small.P99US), AtMost(1.2, "≤ 1.20×"))
	p99.Note = fmt.Sprintf("%d clients with one query outstanding each, names of the client's network in turn; %d and %d queries answered, %d and %d failed; median round of the sizes taken in turn",
		dnsScaleClients, large.Queries, small.Queries, large.Failed, small.Failed)
	p50 := Compare("dns", fmt.Sprintf("query latency p50, %d records (same runs)", large.Records), "µs", Lower,
		fig(large, large.P50US), peer, fig(small, small.P50US), nil)
	return []Row{p99, p50}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
