package bench

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// DNSFigures is one dnsperf run.
type DNSFigures struct {
	// Round is the round of the run (1-based; 0 for runs outside rounds).
	Round        int     `json:"round,omitempty"`
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
	// Rounds: meshnet's and Docker's resolver are measured this often, in turn.
	Rounds  int
	WorkDir string // for the query files (the hosts share the machine's file system)
	Log     *slog.Logger
}

// MeasureDNS runs dnsperf where each resolver is asked in practice: in the meshnet vxlan
// container on host A against 127.0.0.11, which meshnetd answers in the container's own
// namespace, for `<service>.meshnet` (both replicas, one per host); and in a container on a
// user-defined Docker bridge on host A against 127.0.0.11, Docker's embedded resolver, for a
// container name it knows (the container's own). Same host, same dnsperf settings, the two
// in turn for o.Rounds rounds.
func MeasureDNS(ctx context.Context, e *Env, o DNSOptions) map[string][]DNSFigures {
	out := map[string][]DNSFigures{}
	p := e.Paths[PathMeshVXLAN]
	if p == nil || p.Err != nil {
		err := "the meshnet vxlan path is unavailable"
		out["meshnet"] = []DNSFigures{{Err: err}}
		out["docker"] = []DNSFigures{{Err: err}}
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
	peer, perr := dockerBridgeClient(ctx, e)
	for round := 1; round <= max(o.Rounds, 1); round++ {
		var m, d DNSFigures
		if werr != nil {
			m = DNSFigures{Server: "127.0.0.11", Query: svc, Err: "never answered both replicas: " + werr.Error()}
		} else {
			m = runDNSPerf(ctx, p.Client, "127.0.0.11", svc, o)
		}
		if perr != nil {
			d = DNSFigures{Server: "127.0.0.11", Err: perr.Error()}
		} else {
			d = runDNSPerf(ctx, peer, "127.0.0.11", peer.Container, o)
		}
		m.Round, d.Round = round, round
		out["meshnet"] = append(out["meshnet"], m)
		out["docker"] = append(out["docker"], d)
		for k, f := range map[string]DNSFigures{"meshnet": m, "docker": d} {
			o.Log.Info("dnsperf", "resolver", k, "round", round, "server", f.Server, "query", f.Query, "qps", f.QPS, "lost", f.Lost, "err", f.Err)
		}
	}
	return out
}

// MedianDNS is the run of runs with the median queries per second (the first failed run
// when none succeeded).
func MedianDNS(runs []DNSFigures) DNSFigures {
	var ok []DNSFigures
	for _, f := range runs {
		if f.Err == "" {
			ok = append(ok, f)
		}
	}
	if len(ok) == 0 {
		if len(runs) == 0 {
			return DNSFigures{Err: "not measured"}
		}
		return runs[0]
	}
	slices.SortFunc(ok, func(a, b DNSFigures) int { return cmp.Compare(a.QPS, b.QPS) })
	return ok[len(ok)/2]
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

// DNSRows compares queries per second (target ≥ 2× Docker) and average latency, each the
// median of the rounds' own ratios.
func DNSRows(figs map[string][]DNSFigures) []Row {
	byRound := func(key string, get func(DNSFigures) float64) (map[int]float64, error) {
		var ok []DNSFigures
		var errs []string
		for _, f := range figs[key] {
			if f.Err != "" {
				errs = append(errs, f.Err)
				continue
			}
			ok = append(ok, f)
		}
		out := perRound(ok, get)
		if len(out) == 0 {
			return nil, fmt.Errorf("no dnsperf run answered: %s", strings.Join(errs, "; "))
		}
		return out, nil
	}
	row := func(metric, unit string, better Better, get func(DNSFigures) float64, t *Target) Row {
		m, merr := byRound("meshnet", get)
		d, derr := byRound("docker", get)
		return CompareRounds("dns", metric, unit, better, m, merr, "docker", d, derr, t)
	}
	qps := row("dnsperf queries/s at a container's 127.0.0.11: a meshnet service vs a container name on a Docker bridge", "q/s", Higher,
		func(f DNSFigures) float64 { return f.QPS }, AtLeast(2.0, "≥ 2.00×"))
	lost := func(key string) (lost, sent int) {
		for _, f := range figs[key] {
			lost, sent = lost+f.Lost, sent+f.Sent
		}
		return lost, sent
	}
	ml, ms := lost("meshnet")
	dl, ds := lost("docker")
	qps.Note = fmt.Sprintf("one client container on host A each, dnsperf defaults (100 outstanding), %d rounds in turn; meshnet answers in the container's namespace (no rate limit there), Docker's resolver in its; lost queries: meshnet %d of %d, docker %d of %d",
		len(figs["meshnet"]), ml, ms, dl, ds)
	lat := row("dnsperf average latency", "ms", Lower, func(f DNSFigures) float64 { return f.AvgLatencyMS }, nil)
	return []Row{qps, lat}
}
