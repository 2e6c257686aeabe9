package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// PathFigures are one path's measurements over every round.
type PathFigures struct {
	Err  string       `json:"unavailable,omitempty"`
	TCP1 []Throughput `json:"tcp_1_stream,omitempty"`
	TCP4 []Throughput `json:"tcp_4_streams,omitempty"`
	RR   []Latency    `json:"request_response,omitempty"`
	// Conn: a new connection per round trip (netprobe conn).
	Conn   []Latency `json:"new_connections,omitempty"`
	Errors []string  `json:"errors,omitempty"`
	// Profile is perf's heaviest process/symbol pairs during one extra 1-stream run.
	Profile string `json:"profile,omitempty"`
	Summary struct {
		TCP1Gbps float64 `json:"tcp_1_stream_gbit_per_s"`
		TCP4Gbps float64 `json:"tcp_4_streams_gbit_per_s"`
		RRP50US  float64 `json:"rr_p50_us"`
		RRP99US  float64 `json:"rr_p99_us"`
		RRPerSec float64 `json:"rr_per_s"`
		// ConnPerSec: new connections (connect, 1-byte round trip, close) per second.
		ConnPerSec float64 `json:"new_connections_per_s"`
		// CPU seconds (every core) per GB carried, 1 and 4 streams.
		TCP1CPUPerGB float64 `json:"tcp_1_stream_cpu_s_per_gb"`
		TCP4CPUPerGB float64 `json:"tcp_4_streams_cpu_s_per_gb"`
	} `json:"summary"`
}

// DataplaneOptions bound the dataplane measurements.
type DataplaneOptions struct {
	Rounds   int           // each path measured this often, paths interleaved within a round
	Duration time.Duration // of one iperf3 run (plus one omitted second)
	RRTime   time.Duration // of one request/response run
	Netprobe string
	// ProfileDir, when set, makes perf profiles of profiledPaths (one extra run each).
	ProfileDir string
	Log        *slog.Logger
}

// pathOrder is the order paths are measured in within a round.
var pathOrder = []string{PathUnderlay, PathSwarm, PathMeshVXLAN, PathMeshVIP, PathMeshWG, PathWireGuardGo}

// MeasurePaths runs iperf3 (1 and 4 streams) and netprobe rr over every available path,
// round after round with the paths interleaved, so a burst of load from elsewhere touches
// every path alike rather than one; the summary is the median over rounds.
func MeasurePaths(ctx context.Context, e *Env, o DataplaneOptions) map[string]*PathFigures {
	out := map[string]*PathFigures{}
	for _, name := range pathOrder {
		out[name] = &PathFigures{}
		if p := e.Paths[name]; p == nil {
			out[name].Err = "not set up"
		} else if p.Err != nil {
			out[name].Err = p.Err.Error()
		}
	}
	for round := 1; round <= o.Rounds; round++ {
		for _, name := range pathOrder {
			f := out[name]
			if f.Err != "" {
				continue
			}
			p := e.Paths[name]
			start := time.Now()
			if err := measureOnce(ctx, p, f, round, o); err != nil {
				f.Errors = append(f.Errors, err.Error())
				o.Log.Warn("measuring a path", "path", name, "round", round, "err", err)
			}
			o.Log.Info("path measured", "path", name, "round", round, "took", time.Since(start).Round(time.Millisecond))
		}
	}
	if o.ProfileDir != "" {
		for _, name := range profiledPaths {
			if f := out[name]; f.Err == "" {
				prof, err := ProfilePath(ctx, e.Paths[name], o.Netprobe, o.Duration, o.ProfileDir)
				if err != nil {
					prof = "no profile: " + err.Error()
				}
				f.Profile = prof
			}
		}
	}
	for _, f := range out {
		if f.Err == "" && len(f.TCP1) == 0 && len(f.Errors) > 0 {
			f.Err = f.Errors[0]
		}
		f.Summary.TCP1Gbps = Median(mapf(f.TCP1, func(t Throughput) float64 { return t.Gbps }))
		f.Summary.TCP4Gbps = Median(mapf(f.TCP4, func(t Throughput) float64 { return t.Gbps }))
		f.Summary.RRP50US = Median(mapf(f.RR, func(l Latency) float64 { return l.P50US }))
		f.Summary.RRP99US = Median(mapf(f.RR, func(l Latency) float64 { return l.P99US }))
		f.Summary.RRPerSec = Median(mapf(f.RR, func(l Latency) float64 { return l.PerSecond }))
		f.Summary.ConnPerSec = Median(mapf(f.Conn, func(l Latency) float64 { return l.PerSecond }))
		f.Summary.TCP1CPUPerGB = Median(mapf(f.TCP1, func(t Throughput) float64 { return t.CPUSecondsPerGB }))
		f.Summary.TCP4CPUPerGB = Median(mapf(f.TCP4, func(t Throughput) float64 { return t.CPUSecondsPerGB }))
	}
	return out
}

func measureOnce(ctx context.Context, p *Path, f *PathFigures, round int, o DataplaneOptions) error {
	s, err := startServers(ctx, p, o.Netprobe)
	if err != nil {
		return err
	}
	defer s.stop()
	t1, err := runIperf(ctx, p, 1, o.Duration)
	if err != nil {
		return err
	}
	t1.Round = round
	f.TCP1 = append(f.TCP1, t1)
	t4, err := runIperf(ctx, p, 4, o.Duration)
	if err != nil {
		return err
	}
	t4.Round = round
	f.TCP4 = append(f.TCP4, t4)
	l, err := runRR(ctx, p, o.Netprobe, o.RRTime)
	if err != nil {
		return err
	}
	l.Round = round
	f.RR = append(f.RR, l)
	cn, err := runConn(ctx, p, o.Netprobe, o.RRTime)
	if err != nil {
		return err
	}
	cn.Round = round
	f.Conn = append(f.Conn, cn)
	return nil
}

// DataplaneRows compares the paths as the issues ask: meshnet vxlan against Swarm's overlay
// and the underlay, meshnet wireguard against standalone wireguard-go, and a service VIP
// against the same replica addressed directly (what the kernel balancing costs). Each ratio
// is the median of the rounds' own ratios (both paths of a pair measured in the same round,
// minutes apart at most), with their range.
func DataplaneRows(figs map[string]*PathFigures) []Row {
	type cmp struct {
		mesh, peer string
		target     float64 // on throughput; 0: none
		cpuTarget  float64 // on CPU seconds per GB; 0: none
	}
	cmps := []cmp{
		{PathMeshVXLAN, PathSwarm, 1.0, 1.0},
		{PathMeshVXLAN, PathUnderlay, 0.85, 0},
		{PathMeshWG, PathWireGuardGo, 1.0, 1.0},
		{PathMeshVIP, PathMeshVXLAN, 0.95, 0},
	}
	// rounds returns a path's figure per round, or why there is none.
	rounds := func(path string, get func(*PathFigures) map[int]float64) (map[int]float64, error) {
		f := figs[path]
		switch {
		case f == nil:
			return nil, fmt.Errorf("not measured")
		case f.Err != "":
			return nil, fmt.Errorf("%s", f.Err)
		}
		v := get(f)
		if len(v) == 0 {
			return nil, fmt.Errorf("no successful run: %v", f.Errors)
		}
		return v, nil
	}
	row := func(group, metric, unit string, better Better, c cmp, get func(*PathFigures) map[int]float64, t *Target) Row {
		m, merr := rounds(c.mesh, get)
		p, perr := rounds(c.peer, get)
		return CompareRounds(group, metric, unit, better, m, merr, c.peer, p, perr, t)
	}
	tput := func(sel func(*PathFigures) []Throughput, val func(Throughput) float64) func(*PathFigures) map[int]float64 {
		return func(f *PathFigures) map[int]float64 { return perRound(sel(f), val) }
	}
	lat := func(sel func(*PathFigures) []Latency, val func(Latency) float64) func(*PathFigures) map[int]float64 {
		return func(f *PathFigures) map[int]float64 { return perRound(sel(f), val) }
	}
	gbps := func(t Throughput) float64 { return t.Gbps }
	cpu := func(t Throughput) float64 { return t.CPUSecondsPerGB }
	var rows []Row
	for _, streams := range []int{1, 4} {
		sel := func(f *PathFigures) []Throughput { return f.TCP1 }
		if streams == 4 {
			sel = func(f *PathFigures) []Throughput { return f.TCP4 }
		}
		for _, c := range cmps {
			var t *Target
			if c.target > 0 {
				t = AtLeast(c.target, fmt.Sprintf("≥ %.2f×", c.target))
			}
			metric := fmt.Sprintf("TCP %d stream%s, %s", streams, plural(streams), c.mesh)
			rows = append(rows, row("throughput", metric, "Gbit/s", Higher, c, tput(sel, gbps), t))
		}
		for _, c := range cmps {
			var t *Target
			if c.cpuTarget > 0 {
				t = AtMost(c.cpuTarget, fmt.Sprintf("≤ %.2f×", c.cpuTarget))
			}
			metric := fmt.Sprintf("CPU seconds per GB, TCP %d stream%s, %s", streams, plural(streams), c.mesh)
			rows = append(rows, row("cpu", metric, "s/GB", Lower, c, tput(sel, cpu), t))
		}
	}
	conn := func(f *PathFigures) []Latency { return f.Conn }
	rr := func(f *PathFigures) []Latency { return f.RR }
	for _, c := range cmps {
		rows = append(rows, row("connections", "new TCP connections/s (1-byte round trip each), "+c.mesh, "conn/s", Higher, c,
			lat(conn, func(l Latency) float64 { return l.PerSecond }), nil))
	}
	for _, c := range cmps {
		rows = append(rows,
			row("latency", "TCP round trip p50, "+c.mesh, "µs", Lower, c, lat(rr, func(l Latency) float64 { return l.P50US }), nil),
			row("latency", "TCP round trip p99, "+c.mesh, "µs", Lower, c, lat(rr, func(l Latency) float64 { return l.P99US }), nil))
	}
	return rows
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func mapf[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}
