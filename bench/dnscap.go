package bench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/meshnet/meshnet/dns"
)

// DNSCapacity is meshnet's DNS server measured on its own: in this process, on loopback,
// without the per-source rate limit, with a CPU profile of the run. It says what the server
// can do when the limit is not what binds, and where its time goes.
type DNSCapacity struct {
	Limited   DNSFigures `json:"with_default_rate_limit"`
	Unlimited DNSFigures `json:"without_rate_limit"`
	// Top is `go tool pprof -top` of the unlimited run (the server's goroutines and dnsperf's
	// share of the machine are not in it: dnsperf is another process).
	Top     string `json:"profile_top,omitempty"`
	Profile string `json:"profile_path,omitempty"`
	Err     string `json:"error,omitempty"`
}

// MeasureDNSCapacity runs dnsperf from the machine against an in-process meshnet DNS server
// on 127.0.0.1, once with the daemon's default rate limit and once without, querying the
// same `<service>.meshnet` with two replicas as the container run.
func MeasureDNSCapacity(ctx context.Context, d time.Duration, outDir string, log *slog.Logger) DNSCapacity {
	var c DNSCapacity
	entries := []dns.Entry{
		{Container: "bench-vx-a", Services: []string{meshService + "-vxlan"}, Network: "bench-vx", Addr: netip.MustParseAddr("10.62.0.2")},
		{Container: "bench-vx-b", Services: []string{meshService + "-vxlan"}, Network: "bench-vx", Addr: netip.MustParseAddr("10.62.0.66")},
	}
	qname := meshService + "-vxlan.meshnet"
	for _, limited := range []bool{true, false} {
		cfg := dns.Config{Addr: "127.0.0.1:0", Upstreams: []string{}}
		if limited {
			cfg.RateLimit = dns.DefaultConfig().RateLimit
		}
		srv := dns.NewServer(cfg, log)
		srv.SetTable(dns.NewTable("meshnet", entries))
		if err := srv.Listen(); err != nil {
			c.Err = fmt.Sprintf("listening on loopback: %v", err)
			return c
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Run(rctx) }()
		var prof bytes.Buffer
		if !limited {
			_ = pprof.StartCPUProfile(&prof)
		}
		f := dnsperfLocal(ctx, srv.Addr(), qname, d, outDir)
		if !limited {
			pprof.StopCPUProfile()
			c.Profile = filepath.Join(outDir, "dns-server.pprof")
			if err := os.WriteFile(c.Profile, prof.Bytes(), 0o644); err == nil {
				c.Top = pprofTop(ctx, c.Profile)
			}
		}
		cancel()
		<-done
		if limited {
			c.Limited = f
		} else {
			c.Unlimited = f
		}
		log.Info("dnsperf in process", "rate_limited", limited, "qps", f.QPS, "lost", f.Lost, "err", f.Err)
	}
	return c
}

func dnsperfLocal(ctx context.Context, addr netip.AddrPort, qname string, d time.Duration, dir string) DNSFigures {
	f := DNSFigures{Server: addr.String(), Query: qname}
	qfile := filepath.Join(dir, "dnsperf-local.txt")
	if err := os.WriteFile(qfile, []byte(qname+" A\n"), 0o644); err != nil {
		f.Err = err.Error()
		return f
	}
	out, err := exec.CommandContext(ctx, "dnsperf", "-s", addr.Addr().String(), "-p", strconv.Itoa(int(addr.Port())),
		"-d", qfile, "-l", strconv.Itoa(int(d.Seconds()))).CombinedOutput()
	if err != nil {
		f.Err = fmt.Sprintf("dnsperf: %v: %s", err, lastLineOf(string(out)))
		return f
	}
	parseDNSPerf(string(out), &f)
	return f
}

// pprofTop returns the 12 heaviest functions of a CPU profile, cumulative.
func pprofTop(ctx context.Context, path string) string {
	out, err := exec.CommandContext(ctx, goBin(), "tool", "pprof", "-top", "-cum", "-nodecount", "14", path).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			return strings.Join(lines[i:], "\n")
		}
	}
	return string(out)
}

func lastLineOf(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// DNSCapacityRows reports the in-process server without the limit against Docker's figure
// from the container run (different conditions, said in the note), and with the limit.
func DNSCapacityRows(c DNSCapacity, docker DNSFigures) []Row {
	fig := func(f DNSFigures) Figure {
		if c.Err != "" {
			return Unavailable(fmt.Errorf("%s", c.Err))
		}
		if f.Err != "" {
			return Unavailable(fmt.Errorf("%s", f.Err))
		}
		return Val(f.QPS)
	}
	dock := Unavailable(fmt.Errorf("not measured"))
	if docker.Err == "" && docker.QPS > 0 {
		dock = Val(docker.QPS)
	}
	un := Compare("dns", "dnsperf queries/s, meshnet server alone, no rate limit (in process, loopback)", "q/s", Higher, fig(c.Unlimited), "docker", dock, nil)
	un.Note = "what the server does when its per-source limit does not bind; loopback from the machine, not from a container, so only indicative against Docker's figure; CPU profile in build/bench/dns-server.pprof"
	lim := Compare("dns", "dnsperf queries/s, meshnet server alone, default limit (in process, loopback)", "q/s", Higher, fig(c.Limited), "docker", dock, nil)
	lim.Note = fmt.Sprintf("the daemon's default: %.0f queries/s per source, burst %d; lost %d of %d",
		dns.DefaultConfig().RateLimit.QPS, dns.DefaultConfig().RateLimit.Burst, c.Limited.Lost, c.Limited.Sent)
	return []Row{un, lim}
}
