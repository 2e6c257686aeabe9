package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// profiledPaths are the paths whose CPU time is sampled during a 1-stream iperf3 run: the
// ones that carry a throughput target, and their peers.
var profiledPaths = []string{PathSwarm, PathMeshVXLAN, PathMeshWG, PathWireGuardGo}

// ProfilePath samples every CPU with perf (cpu-clock, kernel and user symbols) while one
// iperf3 stream runs over p, and returns the heaviest entries by process and symbol. It
// answers "where does the time go" for a path that misses its target: encapsulation,
// netfilter, bridging, copies, or a userspace tunnel.
func ProfilePath(ctx context.Context, p *Path, netprobe string, d time.Duration, dir string) (string, error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return "", fmt.Errorf("perf is not installed (Debian: linux-perf)")
	}
	s, err := startServers(ctx, p, netprobe)
	if err != nil {
		return "", err
	}
	defer s.stop()
	data := filepath.Join(dir, "perf-"+strings.ReplaceAll(p.Name, " ", "-")+".data")
	rec := exec.CommandContext(ctx, perf, "record", "-q", "-a", "-e", "cpu-clock", "-o", data, "--",
		"sleep", strconv.Itoa(int(d.Seconds())))
	if err := rec.Start(); err != nil {
		return "", fmt.Errorf("starting perf record: %w", err)
	}
	if _, err := runIperf(ctx, p, 1, d); err != nil {
		_ = rec.Wait()
		return "", err
	}
	if err := rec.Wait(); err != nil {
		return "", fmt.Errorf("perf record: %w", err)
	}
	// Only the processes that carry the traffic (meshnetd holds the embedded WireGuard
	// device): the machine may be shared, and other processes' samples say nothing about
	// this path. Softirq work runs in their context or in ksoftirqd.
	out, err := exec.CommandContext(ctx, perf, "report", "-i", data, "--stdio", "--no-children",
		"--comms", "iperf3,wireguard-go,meshnetd,ksoftirqd/0,ksoftirqd/1,ksoftirqd/2,ksoftirqd/3",
		"--percentage", "relative", "--sort", "symbol").Output()
	if err != nil {
		return "", fmt.Errorf("perf report: %w", err)
	}
	return summarizePerf(string(out)), nil
}

// perfCategories group kernel and user symbols by what they do, so two paths' profiles
// compare at a glance (netfilter is what a bridged overlay in the host namespace adds).
var perfCategories = []struct {
	name     string
	prefixes []string
}{
	{"netfilter/conntrack", []string{"nf_", "nft_", "ipt_", "ip6t_", "br_nf", "xt_", "__nf_", "nf_conntrack", "ipv4_conntrack", "iptable_", "ebt_"}},
	{"bridge", []string{"br_", "__br_"}},
	{"vxlan/udp tunnel", []string{"vxlan_", "udp_tunnel", "__udp4_lib", "udp_queue_rcv", "udp_rcv", "udp4_"}},
	{"copies", []string{"_copy_", "copy_", "memcpy", "memmove", "runtime.memmove"}},
	{"crypto", []string{"golang.org/x/crypto", "chacha", "poly1305"}},
	{"tun", []string{"tun_", "golang.zx2c4.com/wireguard/tun"}},
}

// summarizePerf turns `perf report --sort symbol` into one line of category shares and the
// eight heaviest symbols.
func summarizePerf(out string) string {
	type sym struct {
		pct  float64
		name string
	}
	var syms []sym
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || strings.HasPrefix(f[0], "#") || !strings.HasSuffix(f[0], "%") {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err != nil {
			continue
		}
		// "12.3%  [k] name" or "12.3%  [.] name"
		syms = append(syms, sym{pct, f[2]})
	}
	if len(syms) == 0 {
		return "no samples of iperf3, wireguard-go or ksoftirqd"
	}
	var cats []string
	for _, c := range perfCategories {
		var sum float64
		for _, s := range syms {
			for _, p := range c.prefixes {
				if strings.HasPrefix(s.name, p) {
					sum += s.pct
					break
				}
			}
		}
		if sum >= 0.5 {
			cats = append(cats, fmt.Sprintf("%s %.1f%%", c.name, sum))
		}
	}
	lines := []string{"by kind: " + strings.Join(cats, ", ")}
	for i, s := range syms {
		if i == 8 {
			break
		}
		lines = append(lines, fmt.Sprintf("%5.1f%% %s", s.pct, s.name))
	}
	return strings.Join(lines, "\n")
}
