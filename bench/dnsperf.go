package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// DNSFigures is one dnsperf run.
type DNSFigures struct {
	Server       string  `json:"server"`
	Query        string  `json:"query"`
	QPS          float64 `json:"queries_per_second"`
	AvgLatencyMS float64 `json:"avg_latency_ms"`
	Sent         int     `json:"queries_sent"`
	Completed    int     `json:"queries_completed"`
	Lost         int     `json:"queries_lost"`
	Err          string  `json:"error,omitempty"`
}

// DNSOptions bound the DNS measurement.
type DNSOptions struct {
	Duration time.Duration
	WorkDir  string // for the query files (the hosts share the machine's file system)
	Log      *slog.Logger
}

// MeasureDNS runs dnsperf where each resolver is asked in practice: in the meshnet vxlan
// container on host A against 127.0.0.11, which meshnetd answers in the container's own
// namespace, for `<service>.meshnet` (both replicas, one per host); and in a container on a
// user-defined Docker bridge on host A against 127.0.0.11, Docker's embedded resolver, for a
// container name it knows (the container's own). Same host, same dnsperf settings.
func MeasureDNS(ctx context.Context, e *Env, o DNSOptions) map[string]DNSFigures {
	out := map[string]DNSFigures{}
	p := e.Paths[PathMeshVXLAN]
	if p == nil || p.Err != nil {
		err := "the meshnet vxlan path is unavailable"
		out["meshnet"] = DNSFigures{Err: err}
		out["docker"] = DNSFigures{Err: err}
		return out
	}
	svc := meshService + "-vxlan.meshnet"
	// meshnet's answer must hold both replicas before it is measured.
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	werr := harness.Poll(waitCtx, func() error {
		ans, err := e.A.Exec(waitCtx, InNS(p.Client, "dig", "+short", "+time=1", "+tries=1", "@127.0.0.11", svc)...)
		if err != nil {
			return err
		}
		if n := len(strings.Fields(ans)); n < 2 {
			return fmt.Errorf("%s has %d answers, want 2: %q", svc, n, ans)
		}
		return nil
	})
	cancel()
	if werr != nil {
		out["meshnet"] = DNSFigures{Server: "127.0.0.11", Query: svc, Err: "never answered both replicas: " + werr.Error()}
	} else {
		out["meshnet"] = runDNSPerf(ctx, p.Client, "127.0.0.11", svc, o)
	}
	peer, err := dockerBridgeClient(ctx, e)
	if err != nil {
		out["docker"] = DNSFigures{Server: "127.0.0.11", Err: err.Error()}
	} else {
		out["docker"] = runDNSPerf(ctx, peer, "127.0.0.11", peer.Container, o)
	}
	for _, k := range []string{"meshnet", "docker"} {
		f := out[k]
		o.Log.Info("dnsperf", "resolver", k, "server", f.Server, "query", f.Query, "qps", f.QPS, "lost", f.Lost, "err", f.Err)
	}
	return out
}

// dockerBridgeClient runs a container on a user-defined Docker bridge network on host A: its
// 127.0.0.11 is Docker's embedded resolver alone.
func dockerBridgeClient(ctx context.Context, e *Env) (Endpoint, error) {
	const network, name = "bench-dnspeer", "bench-dnspeer-a"
	if _, err := harness.Docker(ctx, e.A, "network", "create", "--label", harness.Label, network); err != nil {
		return Endpoint{}, fmt.Errorf("docker network create %s: %s", network, lastLine(err))
	}
	if err := harness.RunContainer(ctx, e.A, name, network); err != nil {
		return Endpoint{}, fmt.Errorf("docker run on %s: %s", e.A.Name(), lastLine(err))
	}
	return containerEndpoint(ctx, e.A, name, network)
}

var (
	reQPS  = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	reLat  = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
	reSent = regexp.MustCompile(`Queries sent:\s+([0-9]+)`)
	reDone = regexp.MustCompile(`Queries completed:\s+([0-9]+)`)
	reLost = regexp.MustCompile(`Queries lost:\s+([0-9]+)`)
)

func runDNSPerf(ctx context.Context, ep Endpoint, server, qname string, o DNSOptions) DNSFigures {
	f := DNSFigures{Server: server, Query: qname}
	qfile := filepath.Join(o.WorkDir, "dnsperf-"+strings.ReplaceAll(server, ".", "_")+".txt")
	if err := os.WriteFile(qfile, []byte(qname+" A\n"), 0o644); err != nil {
		f.Err = err.Error()
		return f
	}
	// dnsperf's defaults otherwise: one client socket, 100 queries outstanding, 5 s timeout.
	out, err := ep.Host.Exec(ctx, InNS(ep, "dnsperf", "-s", server, "-d", qfile, "-l", strconv.Itoa(int(o.Duration.Seconds())))...)
	if err != nil {
		f.Err = "dnsperf: " + lastLine(err)
		return f
	}
	parseDNSPerf(out, &f)
	return f
}

// parseDNSPerf reads dnsperf's summary into f.
func parseDNSPerf(out string, f *DNSFigures) {
	num := func(re *regexp.Regexp) float64 {
		m := re.FindStringSubmatch(out)
		if m == nil {
			return 0
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	f.QPS, f.AvgLatencyMS = num(reQPS), num(reLat)*1000
	f.Sent, f.Completed, f.Lost = int(num(reSent)), int(num(reDone)), int(num(reLost))
	if f.QPS == 0 {
		f.Err = "dnsperf reported no answered query:\n" + out
	}
}

// DNSRows compares queries per second (target ≥ 2× Docker) and average latency.
func DNSRows(figs map[string]DNSFigures) []Row {
	fig := func(key string, get func(DNSFigures) float64) Figure {
		f := figs[key]
		if f.Err != "" {
			return Unavailable(fmt.Errorf("%s", f.Err))
		}
		return Val(get(f))
	}
	qps := Compare("dns", "dnsperf queries/s at a container's 127.0.0.11: a meshnet service vs a container name on a Docker bridge", "q/s", Higher,
		fig("meshnet", func(f DNSFigures) float64 { return f.QPS }), "docker",
		fig("docker", func(f DNSFigures) float64 { return f.QPS }), AtLeast(2.0, "≥ 2.00×"))
	m, d := figs["meshnet"], figs["docker"]
	qps.Note = fmt.Sprintf("one client container on host A each, dnsperf defaults (100 outstanding); meshnet answers in the container's namespace (no rate limit there), Docker's resolver in its; lost queries: meshnet %d of %d, docker %d of %d",
		m.Lost, m.Sent, d.Lost, d.Sent)
	lat := Compare("dns", "dnsperf average latency", "ms", Lower,
		fig("meshnet", func(f DNSFigures) float64 { return f.AvgLatencyMS }), "docker",
		fig("docker", func(f DNSFigures) float64 { return f.AvgLatencyMS }), nil)
	return []Row{qps, lat}
}
