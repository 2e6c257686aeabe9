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

// ReachRun is one measurement of time to reachability.
type ReachRun struct {
	Seconds float64 `json:"seconds"`
	// DockerRunSeconds is how long `docker run -d` took to return on host B: the part of
	// the figure that is the engine's, the same for both networks.
	DockerRunSeconds float64 `json:"docker_run_seconds"`
	// FixedIP is false when the network refused `--ip` and the address was read after
	// `docker run` returned (then the figure cannot be below DockerRunSeconds).
	FixedIP bool   `json:"fixed_ip"`
	Err     string `json:"error,omitempty"`
}

// ReachOptions bound the reachability measurement.
type ReachOptions struct {
	Runs     int
	Netprobe string
	Log      *slog.Logger
}

// MeasureReach starts a container on host B and takes the time until a container on host A
// first gets an ICMP echo reply from it, for meshnet vxlan and Swarm's overlay, the two
// interleaved run by run. The prober (netprobe reach) sends an echo every 10 ms from before
// `docker run` starts, to an address fixed with --ip, so the figure is precise to 10 ms and
// includes everything an operator waits for: the engine, IPAM, the driver, and the other
// host learning the endpoint.
func MeasureReach(ctx context.Context, e *Env, o ReachOptions) map[string][]ReachRun {
	out := map[string][]ReachRun{}
	nets := []string{PathMeshVXLAN, PathSwarm}
	for _, name := range nets {
		// The probe asks for the address before it exists, so the pinger's ARP entry fails
		// and is retried every retrans_time (1 s by default): the figure would measure that
		// timer, the same for both networks. 10 ms retries make the probe as fine as its
		// interval. Only the pinger container's own namespace is changed.
		if p := e.Paths[name]; p != nil && p.Err == nil {
			if _, err := e.A.Exec(ctx, InNS(p.Client, "sysctl", "-qw", "net.ipv4.neigh.eth0.retrans_time_ms=10")...); err != nil {
				o.Log.Warn("shortening the pinger's ARP retry", "path", name, "err", lastLine(err))
			}
		}
	}
	for i := 0; i < o.Runs; i++ {
		for _, name := range nets {
			p := e.Paths[name]
			if p == nil || p.Err != nil {
				continue
			}
			r := reachOnce(ctx, e, p, e.Networks[name], i, o)
			o.Log.Info("reachability", "path", name, "run", i, "seconds", r.Seconds, "docker_run", r.DockerRunSeconds, "err", r.Err)
			out[name] = append(out[name], r)
		}
	}
	return out
}

func reachOnce(ctx context.Context, e *Env, p *Path, network string, i int, o ReachOptions) ReachRun {
	name := fmt.Sprintf("reach-%s-%d", network, i)
	// Beside the resident server container: in host B's own address block for meshnet's IPAM.
	ip := addN(p.Server.IP, 16+i)
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = harness.Docker(rctx, e.B, "rm", "-f", name)
	}()
	type probe struct {
		at  time.Time
		err error
	}
	startProbe := func(target netip.Addr) chan probe {
		ch := make(chan probe, 1)
		go func() {
			out, err := e.A.Exec(ctx, InNS(p.Client, o.Netprobe, "reach", "-target", target.String(), "-timeout", "30s")...)
			if err != nil {
				ch <- probe{err: fmt.Errorf("no reply from %s: %s", target, lastLine(err))}
				return
			}
			var r struct {
				At int64 `json:"first_reply_unix_nano"`
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				ch <- probe{err: fmt.Errorf("parsing netprobe reach: %w: %s", err, out)}
				return
			}
			ch <- probe{at: time.Unix(0, r.At)}
		}()
		return ch
	}
	run := ReachRun{FixedIP: true}
	ch := startProbe(ip)
	time.Sleep(200 * time.Millisecond) // the prober is sending before the container exists
	t0 := time.Now()
	_, err := harness.Docker(ctx, e.B, "run", "-d", "--label", harness.Label, "--network", network, "--ip", ip.String(),
		"--name", name, harness.Image, "sleep", "3600")
	run.DockerRunSeconds = time.Since(t0).Seconds()
	if err != nil {
		// The network would not give that address: measure from docker run to a reply,
		// probing only once the address is known.
		o.Log.Info("docker run --ip refused; probing after docker run", "network", network, "err", lastLine(err))
		_, _ = harness.Docker(ctx, e.B, "rm", "-f", name)
		run.FixedIP = false
		t0 = time.Now()
		if _, err := harness.Docker(ctx, e.B, "run", "-d", "--label", harness.Label, "--network", network,
			"--name", name, harness.Image, "sleep", "3600"); err != nil {
			run.Err = fmt.Sprintf("docker run: %s", lastLine(err))
			return run
		}
		run.DockerRunSeconds = time.Since(t0).Seconds()
		got, err := harness.ContainerIP(ctx, e.B, name, network)
		if err != nil {
			run.Err = err.Error()
			return run
		}
		ch = startProbe(got)
	}
	pr := <-ch
	if pr.err != nil {
		run.Err = pr.err.Error()
		return run
	}
	run.Seconds = pr.at.Sub(t0).Seconds()
	return run
}

// addN returns a + n (IPv4).
func addN(a netip.Addr, n int) netip.Addr {
	for ; n > 0; n-- {
		a = a.Next()
	}
	return a
}

// ReachRows compares the median and the worst run.
func ReachRows(runs map[string][]ReachRun) []Row {
	fig := func(name string, agg func([]float64) float64) (Figure, int, int) {
		var s []float64
		var errs []string
		fixed := 0
		for _, r := range runs[name] {
			if r.Err != "" {
				errs = append(errs, r.Err)
				continue
			}
			s = append(s, r.Seconds)
			if r.FixedIP {
				fixed++
			}
		}
		if len(s) == 0 {
			return Unavailable(fmt.Errorf("no successful run %v", errs)), 0, len(errs)
		}
		return Val(agg(s)), fixed, len(errs)
	}
	mMed, mFixed, mErr := fig(PathMeshVXLAN, Median)
	sMed, sFixed, sErr := fig(PathSwarm, Median)
	mMax, _, _ := fig(PathMeshVXLAN, Max)
	sMax, _, _ := fig(PathSwarm, Max)
	med := Compare("reachability", "container start on B → first ping reply on A, median", "s", Lower, mMed, PathSwarm, sMed, AtMost(1.0, "≤ 1.00×"))
	dr := func(name string) float64 {
		return Median(mapf(runs[name], func(r ReachRun) float64 { return r.DockerRunSeconds }))
	}
	med.Note = fmt.Sprintf("%d runs each, interleaved; %d/%d meshnet and %d/%d swarm runs with --ip (probe from before docker run); failed runs: meshnet %d, swarm %d; docker run itself took %.2f s (meshnet) and %.2f s (swarm), median",
		len(runs[PathMeshVXLAN]), mFixed, len(runs[PathMeshVXLAN]), sFixed, len(runs[PathSwarm]), mErr, sErr, dr(PathMeshVXLAN), dr(PathSwarm))
	worst := Compare("reachability", "container start on B → first ping reply on A, worst", "s", Lower, mMax, PathSwarm, sMax, nil)
	return []Row{med, worst}
}
