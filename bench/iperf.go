package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// iperfPort and rrPort are where the servers listen in the server's namespace.
const (
	iperfPort = 5201
	rrPort    = 7100
)

// servers are the iperf3 and netprobe servers of one path, started in the server's namespace
// and stopped by PID.
type servers struct {
	procs []*harness.Process
}

func startServers(ctx context.Context, p *Path, netprobe string) (*servers, error) {
	s := &servers{}
	h := p.Server.Host
	for name, args := range map[string][]string{
		"bench-iperf3":   {"iperf3", "-s", "-p", strconv.Itoa(iperfPort)},
		"bench-netprobe": {netprobe, "serve", "-addr", ":" + strconv.Itoa(rrPort)},
	} {
		proc, err := h.Start(ctx, name, InNS(p.Server, args...)...)
		if err != nil {
			s.stop()
			return nil, err
		}
		s.procs = append(s.procs, proc)
	}
	// Both bind at once; a connection refused below is retried anyway.
	time.Sleep(300 * time.Millisecond)
	return s, nil
}

func (s *servers) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range s.procs {
		_ = p.Stop(ctx, 2*time.Second)
	}
}

// iperfResult is the part of `iperf3 -J` the report uses.
type iperfResult struct {
	End struct {
		SumSent struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		CPU struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
	// Intervals are the client's per-second sums, the omitted slow-start second included:
	// every byte sent while the CPU was counted.
	Intervals []struct {
		Sum struct {
			Bytes float64 `json:"bytes"`
		} `json:"sum"`
	} `json:"intervals"`
	Error string `json:"error"`
}

// Throughput is one iperf3 run's outcome.
type Throughput struct {
	// Round is the round of the run (1-based), which pairs it with the other paths' runs of
	// the same round.
	Round       int     `json:"round"`
	Gbps        float64 `json:"gbit_per_s"`
	Retransmits int     `json:"retransmits"`
	ClientCPU   float64 `json:"client_cpu_percent"`
	ServerCPU   float64 `json:"server_cpu_percent"`
	// CPUSecondsPerGB is the machine's busy CPU time (every core, /proc/stat) while iperf3
	// ran, per GB it sent: both hosts, the tunnel and every daemon share this machine's
	// kernel, so it is the whole cost of carrying the bytes, both ends.
	CPUSecondsPerGB float64 `json:"cpu_seconds_per_gb"`
}

// runIperf runs an iperf3 TCP client from p's client to its server for d (plus one omitted
// second of slow start), with streams parallel streams, and returns what the receiver got.
func runIperf(ctx context.Context, p *Path, streams int, d time.Duration) (Throughput, error) {
	args := InNS(p.Client, "iperf3", "-c", p.Server.IP.String(), "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(int(d.Seconds())), "-O", "1", "-P", strconv.Itoa(streams), "-J")
	var out string
	var err error
	var busy float64
	for try := 0; try < 5; try++ {
		before, cerr := busyCPUSeconds()
		if cerr != nil {
			return Throughput{}, cerr
		}
		out, err = p.Client.Host.Exec(ctx, args...)
		after, cerr := busyCPUSeconds()
		if cerr != nil {
			return Throughput{}, cerr
		}
		busy = after - before
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond) // the server may still be binding
	}
	var r iperfResult
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		if err != nil {
			return Throughput{}, fmt.Errorf("iperf3 over %s: %s", p.Name, lastLine(err))
		}
		return Throughput{}, fmt.Errorf("parsing iperf3 -J over %s: %w", p.Name, jerr)
	}
	if r.Error != "" {
		return Throughput{}, fmt.Errorf("iperf3 over %s: %s", p.Name, r.Error)
	}
	return r.throughput(busy), nil
}

// throughput is what the run measured; busy is the CPU seconds spent while it ran, for its
// cost per GB sent.
func (r iperfResult) throughput(busy float64) Throughput {
	t := Throughput{
		Gbps:        r.End.SumReceived.BitsPerSecond / 1e9,
		Retransmits: r.End.SumSent.Retransmits,
		ClientCPU:   r.End.CPU.HostTotal,
		ServerCPU:   r.End.CPU.RemoteTotal,
	}
	var sent float64
	for _, iv := range r.Intervals {
		sent += iv.Sum.Bytes
	}
	if sent > 0 {
		t.CPUSecondsPerGB = busy / (sent / 1e9)
	}
	return t
}

// busyCPUSeconds is the machine's CPU time spent not idle since boot, every core summed
// (the "cpu" line of /proc/stat: user, nice, system, irq, softirq, steal; guest time is
// inside user already).
func busyCPUSeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("reading CPU time: %w", err)
	}
	return parseBusyCPU(string(b))
}

// parseBusyCPU reads busy seconds from /proc/stat's text (USER_HZ is 100 on Linux).
func parseBusyCPU(stat string) (float64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: no cpu line in %q", line)
	}
	var busy float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: field %d of %q: %w", i, line, err)
		}
		busy += v
	}
	return busy / 100, nil
}

// Latency is one request/response run (see netprobe rr).
type Latency struct {
	// Round is the round of the run (1-based), as Throughput's.
	Round        int     `json:"round"`
	Transactions int     `json:"transactions"`
	PerSecond    float64 `json:"per_second"`
	MeanUS       float64 `json:"mean_us"`
	P50US        float64 `json:"p50_us"`
	P90US        float64 `json:"p90_us"`
	P99US        float64 `json:"p99_us"`
	MaxUS        float64 `json:"max_us"`
}

// runRR runs netprobe rr (1-byte request, 1-byte response, one outstanding) for d.
func runRR(ctx context.Context, p *Path, netprobe string, d time.Duration) (Latency, error) {
	return runNetprobe(ctx, p, netprobe, "rr", d)
}

// runConn runs netprobe conn (a new connection per 1-byte round trip) for d.
func runConn(ctx context.Context, p *Path, netprobe string, d time.Duration) (Latency, error) {
	return runNetprobe(ctx, p, netprobe, "conn", d)
}

func runNetprobe(ctx context.Context, p *Path, netprobe, mode string, d time.Duration) (Latency, error) {
	args := InNS(p.Client, netprobe, mode, "-addr", fmt.Sprintf("%s:%d", p.Server.IP, rrPort), "-duration", d.String())
	var out string
	var err error
	for try := 0; try < 5; try++ {
		if out, err = p.Client.Host.Exec(ctx, args...); err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		return Latency{}, fmt.Errorf("netprobe %s over %s: %s", mode, p.Name, lastLine(err))
	}
	var l Latency
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return Latency{}, fmt.Errorf("parsing netprobe %s over %s: %w: %s", mode, p.Name, err, out)
	}
	return l, nil
}
