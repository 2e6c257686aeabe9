package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/e2e/harness"
)

// metricsAddr is where each host's meshnetd serves metrics: the host's own loopback (every
// simulated host has its own network namespace).
const metricsAddr = "127.0.0.1:9464"

// TestMetrics: meshnetd with --metrics-addr on 3 hosts, containers on a vxlan network on each;
// a scrape on every host passes `promtool check metrics`, and its peers, endpoints, address
// allocations and FDB/neighbour entries agree with `meshctl -o json peers/endpoints/status` on
// that host; /healthz and /readyz answer 200; the start-up log gives no advice to add the DNS
// address by hand (meshnetd adds it).
func TestMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (scripts/install-deps.sh does)")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	for _, h := range hosts {
		if _, err := c.StartMeshnet(ctx, h, "--metrics-addr", metricsAddr); err != nil {
			t.Fatalf("starting meshnetd on %s: %v", h.Name(), err)
		}
	}
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)

	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	// Two containers on the first host, one on each other: counts differ per node.
	ips := map[string]netip.Addr{}
	for i, h := range hosts {
		n := 1
		if i == 0 {
			n = 2
		}
		for j := 1; j <= n; j++ {
			name := fmt.Sprintf("m%d%d", i+1, j)
			ips[name] = runContainer(t, ctx, h, name, "app")
		}
	}
	// The data path works, so the counts below describe a working overlay.
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, hosts[1], "m21", ips["m11"]) })
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, hosts[2], "m31", ips["m12"]) })

	for _, h := range hosts {
		for _, path := range []string{"/healthz", "/readyz"} {
			if out, err := h.Exec(ctx, "curl", "-sSf", "--max-time", "5", "http://"+metricsAddr+path); err != nil {
				t.Errorf("%s on %s: %v", path, h.Name(), err)
			} else {
				t.Logf("%s %s: %s", h.Name(), path, strings.TrimSpace(out))
			}
		}
		var last string
		// meshctl and the scrape are two reads: retry until they saw the same state (gossip
		// may still be spreading the last endpoint).
		harness.Eventually(t, 30*time.Second, func() error {
			scrape, err := h.Exec(ctx, "curl", "-sSf", "--max-time", "5", "http://"+metricsAddr+"/metrics")
			if err != nil {
				return err
			}
			last = scrape
			return compareMetrics(ctx, c, h, parseScrape(scrape), len(ips))
		})
		cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(last)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on %s's scrape: %v\n%s", h.Name(), err, out)
		}
		m := parseScrape(last)
		if m.get("meshnet_dataplane_applies_total") < 1 || m.get("meshnet_dns_up") != 1 || m.sum("meshnet_gossip_bytes_total") == 0 {
			t.Errorf("%s: applies %v, dns_up %v, gossip bytes %v: want applies, DNS up and gossip counted",
				h.Name(), m.get("meshnet_dataplane_applies_total"), m.get("meshnet_dns_up"), m.sum("meshnet_gossip_bytes_total"))
		}
		// A fresh start waits for the DNS address meshnetd adds itself: its log says so and
		// gives no advice to add it by hand.
		if log, err := c.Daemon(h).Log(); err != nil {
			t.Error(err)
		} else if strings.Contains(log, "ip addr add") {
			t.Errorf("%s's meshnetd log advises adding the DNS address by hand at a fresh start:\n%s", h.Name(), firstLineWith(log, "ip addr add"))
		} else if !strings.Contains(log, "DNS server listening") {
			t.Errorf("%s's meshnetd log does not say the DNS server listens", h.Name())
		} else {
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "DNS server") {
					t.Logf("%s: %s", h.Name(), l)
				}
			}
		}
		t.Logf("%s: %d series; peers alive %v, FDB %v, applies %v, gossip bytes %v", h.Name(), len(m),
			m.get("meshnet_peers", "state", "alive"), m.get("meshnet_dataplane_fdb_entries"),
			m.get("meshnet_dataplane_applies_total"), m.sum("meshnet_gossip_bytes_total"))
	}
}

// compareMetrics checks a scrape of h against meshctl on h.
func compareMetrics(ctx context.Context, c *harness.Cluster, h harness.Host, m scrape, wantEndpoints int) error {
	peers, err := c.Peers(ctx, h)
	if err != nil {
		return err
	}
	byState := map[string]float64{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	for _, p := range peers {
		byState[p.State]++
	}
	for state, n := range byState {
		if got := m.get("meshnet_peers", "state", state); got != n {
			return fmt.Errorf("%s: meshnet_peers{state=%q} %v, meshctl peers %v", h.Name(), state, got, n)
		}
	}
	out, err := c.Meshctl(ctx, h, "-o", "json", "endpoints")
	if err != nil {
		return err
	}
	var eps []control.Endpoint
	if err := json.Unmarshal([]byte(out), &eps); err != nil {
		return fmt.Errorf("meshctl -o json endpoints: %w\n%s", err, out)
	}
	if len(eps) != wantEndpoints {
		return fmt.Errorf("%s: meshctl endpoints lists %d, %d containers run", h.Name(), len(eps), wantEndpoints)
	}
	byNode := map[string]float64{}
	remote := 0.0
	for _, e := range eps {
		byNode[e.Node]++
		if e.Node != h.Name() {
			remote++
		}
	}
	for node, n := range byNode {
		if got := m.get("meshnet_endpoints", "node", node); got != n {
			return fmt.Errorf("%s: meshnet_endpoints{node=%q} %v, meshctl endpoints %v", h.Name(), node, got, n)
		}
	}
	if got := m.sum("meshnet_endpoints"); got != float64(len(eps)) {
		return fmt.Errorf("%s: meshnet_endpoints sum to %v, meshctl endpoints lists %d", h.Name(), got, len(eps))
	}
	// Every remote container is on the vxlan network: one FDB and one neighbour entry each.
	if fdb, neigh := m.get("meshnet_dataplane_fdb_entries"), m.get("meshnet_dataplane_neighbor_entries"); fdb != remote || neigh != remote {
		return fmt.Errorf("%s: FDB %v and neighbour %v entries, %v remote endpoints", h.Name(), fdb, neigh, remote)
	}

	out, err = c.MeshctlStatus(ctx, h, "-o", "json")
	if err != nil {
		return err
	}
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return fmt.Errorf("meshctl -o json status: %w\n%s", err, out)
	}
	pools := 0
	for _, p := range st.IPAM {
		for _, n := range p.Nodes {
			pools++
			if got := m.get("meshnet_ipam_allocated_addresses", "subnet", p.Subnet, "node", n.Node); got != float64(n.Allocated) {
				return fmt.Errorf("%s: allocated in %s by %s: metric %v, meshctl status %d", h.Name(), p.Subnet, n.Node, got, n.Allocated)
			}
			if got := m.get("meshnet_ipam_owned_addresses", "subnet", p.Subnet, "node", n.Node); got != float64(n.Owned) {
				return fmt.Errorf("%s: owned in %s by %s: metric %v, meshctl status %d", h.Name(), p.Subnet, n.Node, got, n.Owned)
			}
		}
	}
	if pools == 0 {
		return fmt.Errorf("%s: meshctl status shows no address usage", h.Name())
	}
	if got := m.get("meshnet_problems"); got != float64(len(st.Problems)) {
		return fmt.Errorf("%s: meshnet_problems %v, meshctl status lists %v", h.Name(), got, st.Problems)
	}
	return nil
}

// scrape is a parsed Prometheus text exposition: series (name and sorted labels) to value.
type scrape map[string]float64

var (
	seriesLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

func parseScrape(text string) scrape {
	m := scrape{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		g := seriesLine.FindStringSubmatch(line)
		if g == nil {
			continue
		}
		v, err := strconv.ParseFloat(g[3], 64)
		if err != nil {
			continue
		}
		key := g[1]
		for _, l := range labelPair.FindAllStringSubmatch(g[2], -1) {
			key += "|" + l[1] + "=" + l[2]
		}
		m[key] = v
	}
	return m
}

// get is the value of the series name with exactly these label pairs (name, value, ...; in
// the exposition's order, which sorts them by name); 0 when absent.
func (m scrape) get(name string, labels ...string) float64 {
	key := name
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+"="+labels[i+1])
	}
	sort.Strings(pairs)
	for _, p := range pairs {
		key += "|" + p
	}
	return m[key]
}

// sum adds every series of name.
func (m scrape) sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"|") {
			s += v
		}
	}
	return s
}

// firstLineWith is the first line of s containing want.
func firstLineWith(s, want string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, want) {
			return l
		}
	}
	return ""
}
