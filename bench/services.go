package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// ServiceFigures are a VIP's spread over two replicas (one per host) and its failover when
// one is stopped (issue 16's bench row; its throughput and connection rate are the
// PathMeshVIP rows).
type ServiceFigures struct {
	Err string `json:"unavailable,omitempty"`
	// Spread: connections per replica over a run of new connections from host A.
	Spread       map[string]int `json:"spread"`
	SpreadFailed int            `json:"spread_failed"`
	// FailoverSeconds: from `docker stop` of the replica on host B to the last new
	// connection it got (0: none after the stop); FailoverFailed: connections that failed
	// meanwhile.
	FailoverSeconds float64 `json:"failover_seconds"`
	FailoverFailed  int     `json:"failover_failed"`
}

// ServiceOptions bound the service measurement.
type ServiceOptions struct {
	Duration time.Duration // of the spread run
	Netprobe string
	Log      *slog.Logger
}

const whoPort = 7101

// MeasureServices runs a service of two replicas in vip mode, one on each host, on the vxlan
// path's network, with netprobe whoserve in each; netprobe spread from the vxlan client on
// host A connects to the VIP one connection after another: the share each replica gets, then
// the time from `docker stop` of host B's replica (its stop signal: meshnet takes it out at
// once) to the last connection that still reached it.
func MeasureServices(ctx context.Context, e *Env, o ServiceOptions) ServiceFigures {
	var f ServiceFigures
	vx := e.Paths[PathMeshVXLAN]
	if vx == nil || vx.Err != nil {
		f.Err = "needs the " + PathMeshVXLAN + " path"
		return f
	}
	network := e.Networks[PathMeshVXLAN]
	replicas := map[string]*harness.SimHost{"bench-spread-a": e.A, "bench-spread-b": e.B}
	var procs []*harness.Process
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, p := range procs {
			_ = p.Stop(sctx, 2*time.Second)
		}
	}()
	for name, h := range replicas {
		if err := harness.RunContainer(ctx, h, name, network, "--label", "meshnet.service=benchspread",
			"--label", "meshnet.endpoint-mode=vip"); err != nil {
			f.Err = fmt.Sprintf("docker run on %s: %s", h.Name(), lastLine(err))
			return f
		}
		ep, err := containerEndpoint(ctx, h, name, network)
		if err != nil {
			f.Err = err.Error()
			return f
		}
		p, err := h.Start(ctx, "bench-who-"+name, InNS(ep, o.Netprobe, "whoserve", "-name", name, "-addr", fmt.Sprintf(":%d", whoPort))...)
		if err != nil {
			f.Err = err.Error()
			return f
		}
		procs = append(procs, p)
	}
	vip, err := e.serviceVIP(ctx, "benchspread", 2)
	if err != nil {
		f.Err = err.Error()
		return f
	}
	target := netip.AddrPortFrom(vip, whoPort).String()
	run := func(d time.Duration, interval time.Duration) (spreadOut, error) {
		var out spreadOut
		s, err := e.A.Exec(ctx, InNS(vx.Client, o.Netprobe, "spread", "-addr", target, "-duration", d.String(), "-interval", interval.String())...)
		if err != nil {
			return out, fmt.Errorf("netprobe spread: %s", lastLine(err))
		}
		if err := json.Unmarshal([]byte(s), &out); err != nil {
			return out, fmt.Errorf("parsing netprobe spread: %w: %s", err, s)
		}
		return out, nil
	}
	sp, err := run(o.Duration, 0)
	if err != nil {
		f.Err = err.Error()
		return f
	}
	f.Spread, f.SpreadFailed = sp.Counts, sp.Failed
	o.Log.Info("VIP spread", "counts", sp.Counts, "failed", sp.Failed)

	// Failover: connections every 5 ms for 6 s; host B's replica stopped after 2.
	done := make(chan struct{})
	var fo spreadOut
	var foErr error
	go func() { defer close(done); fo, foErr = run(6*time.Second, 5*time.Millisecond) }()
	time.Sleep(2 * time.Second)
	stopped := time.Now()
	if _, err := harness.Docker(ctx, e.B, "stop", "-t", "10", "bench-spread-b"); err != nil {
		f.Err = "docker stop: " + lastLine(err)
		<-done
		return f
	}
	<-done
	if foErr != nil {
		f.Err = foErr.Error()
		return f
	}
	if last, ok := fo.LastUnixNano["bench-spread-b"]; ok && last > stopped.UnixNano() {
		f.FailoverSeconds = time.Duration(last - stopped.UnixNano()).Seconds()
	}
	f.FailoverFailed = fo.Failed
	o.Log.Info("VIP failover", "seconds", f.FailoverSeconds, "failed", fo.Failed, "counts", fo.Counts)
	return f
}

type spreadOut struct {
	Counts       map[string]int   `json:"counts"`
	Failed       int              `json:"failed"`
	LastUnixNano map[string]int64 `json:"last_unix_nano"`
}

// serviceVIP waits until meshctl on host A shows one VIP for service with replicas healthy
// replicas, and returns it.
func (e *Env) serviceVIP(ctx context.Context, service string, replicas int) (netip.Addr, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := e.C.Meshctl(ctx, e.A, "-o", "json", "services")
		var svcs []struct {
			Name     string            `json:"name"`
			Replicas []json.RawMessage `json:"replicas"`
			VIPs     []struct {
				Addr string `json:"addr"`
			} `json:"vips"`
		}
		if err == nil && json.Unmarshal([]byte(out), &svcs) == nil {
			for _, s := range svcs {
				if s.Name == service && len(s.VIPs) == 1 && len(s.Replicas) >= replicas {
					if a, err := netip.ParseAddr(s.VIPs[0].Addr); err == nil {
						return a, nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("no VIP for %s with %d replicas within 60 s (meshctl services: %v)", service, replicas, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ServiceRows: the spread as the larger replica's share against an even 50% (target: within
// 5 points, as the e2e suite's), and the failover time (target: 1 s, issue 16's bound).
func ServiceRows(f ServiceFigures) []Row {
	if f.Err != "" {
		err := fmt.Errorf("%s", f.Err)
		return []Row{
			Alone("services", "VIP spread over 2 replicas: the larger share", "%", Lower, Unavailable(err), nil, nil),
			Alone("services", "VIP failover: docker stop to the last new connection reaching the stopped replica", "s", Lower, Unavailable(err), nil, nil),
		}
	}
	total, largest := f.SpreadFailed, 0
	for _, n := range f.Spread {
		total += n
		largest = max(largest, n)
	}
	var spread Figure = Unavailable(fmt.Errorf("no connection answered"))
	var ratio *float64
	if total > 0 && len(f.Spread) > 0 {
		share := 100 * float64(largest) / float64(total)
		spread, ratio = Val(share), ptr(share/50)
	}
	return []Row{
		Alone("services", fmt.Sprintf("VIP spread over 2 replicas: the larger share (%d connections, %d failed)", total, f.SpreadFailed),
			"%", Lower, spread, ratio, AtMost(1.1, "≤ 55%")),
		Alone("services", fmt.Sprintf("VIP failover: docker stop to the last new connection reaching the stopped replica (%d failed)", f.FailoverFailed),
			"s", Lower, Val(f.FailoverSeconds), ptr(f.FailoverSeconds), AtMost(1, "≤ 1 s")),
	}
}
