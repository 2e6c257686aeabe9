package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
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
	Error string `json:"error"`
}

// Throughput is one iperf3 run's outcome.
type Throughput struct {
	Gbps        float64 `json:"gbit_per_s"`
	Retransmits int     `json:"retransmits"`
	ClientCPU   float64 `json:"client_cpu_percent"`
	ServerCPU   float64 `json:"server_cpu_percent"`
}

// runIperf runs an iperf3 TCP client from p's client to its server for d (plus one omitted
// second of slow start), with streams parallel streams, and returns what the receiver got.
func runIperf(ctx context.Context, p *Path, streams int, d time.Duration) (Throughput, error) {
	args := InNS(p.Client, "iperf3", "-c", p.Server.IP.String(), "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(int(d.Seconds())), "-O", "1", "-P", strconv.Itoa(streams), "-J")
	var out string
	var err error
	for try := 0; try < 5; try++ {
		out, err = p.Client.Host.Exec(ctx, args...)
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
	return Throughput{
		Gbps:        r.End.SumReceived.BitsPerSecond / 1e9,
		Retransmits: r.End.SumSent.Retransmits,
		ClientCPU:   r.End.CPU.HostTotal,
		ServerCPU:   r.End.CPU.RemoteTotal,
	}, nil
}

// Latency is one request/response run (see netprobe rr).
type Latency struct {
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
