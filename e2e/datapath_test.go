package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// dataPathPeer is what these tests read of `meshctl -o json peers`.
type dataPathPeer struct {
	Name       string  `json:"name"`
	State      string  `json:"state"`
	DataPath   string  `json:"data_path"`
	RTTSeconds float64 `json:"rtt_seconds"`
}

func dataPathPeers(ctx context.Context, c *harness.Cluster, h harness.Host) (map[string]dataPathPeer, error) {
	out, err := c.Meshctl(ctx, h, "-o", "json", "peers")
	if err != nil {
		return nil, err
	}
	var ps []dataPathPeer
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		return nil, fmt.Errorf("meshctl -o json peers on %s: %w\n%s", h.Name(), err, out)
	}
	m := map[string]dataPathPeer{}
	for _, p := range ps {
		m[p.Name] = p
	}
	return m, nil
}

// expectDataPath checks that h sees peer with gossip state and data path as given.
func expectDataPath(ctx context.Context, c *harness.Cluster, h harness.Host, peer, state, dataPath string) error {
	ps, err := dataPathPeers(ctx, c, h)
	if err != nil {
		return err
	}
	p := ps[peer]
	if p.State != state || p.DataPath != dataPath {
		return fmt.Errorf("%s sees %s as gossip %q, data path %q; want %q, %q", h.Name(), peer, p.State, p.DataPath, state, dataPath)
	}
	return nil
}

// scrapeLine returns the value of one series in h's metrics scrape ("" when absent).
func scrapeLine(ctx context.Context, h harness.Host, series string) (string, error) {
	out, err := h.Exec(ctx, "curl", "-sSf", "--max-time", "5", "http://"+metricsAddr+"/metrics")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimSpace(strings.TrimPrefix(line, series)), nil
		}
	}
	return "", nil
}

// TestDataPathBlocked: UDP 4789 blocked by nftables between host1 and host2 (gossip untouched):
// within 10 s both show the other alive with its data path down, the metric says 0, `meshctl
// status` exits 1 naming it; unblocked, the data path is up again and the problem gone.
func TestDataPathBlocked(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	for _, h := range hosts {
		if _, err := c.StartMeshnet(ctx, h, "--metrics-addr", metricsAddr); err != nil {
			t.Fatal(err)
		}
	}
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	h1, h2 := hosts[0], hosts[1]
	for _, pair := range [][2]harness.Host{{h1, h2}, {h2, h1}} {
		harness.Eventually(t, 15*time.Second, func() error {
			return expectDataPath(ctx, c, pair[0], pair[1].Name(), "alive", "up")
		})
	}
	ps, err := dataPathPeers(ctx, c, h1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s -> %s data path up, round trip %.3f ms", h1.Name(), h2.Name(), ps[h2.Name()].RTTSeconds*1000)
	if out, err := c.Meshctl(ctx, h1, "peers"); err == nil {
		t.Logf("meshctl peers on %s:\n%s", h1.Name(), out)
	}

	if err := injectFault(ctx, h1, []harness.Host{h2}, "udp dport 4789 drop", false); err != nil {
		t.Fatal(err)
	}
	blocked := time.Now()
	for _, pair := range [][2]harness.Host{{h1, h2}, {h2, h1}} {
		harness.Eventually(t, 10*time.Second-time.Since(blocked), func() error {
			return expectDataPath(ctx, c, pair[0], pair[1].Name(), "alive", "down")
		})
	}
	t.Logf("both sides show the data path down %s after UDP 4789 was blocked; gossip alive", time.Since(blocked).Round(time.Millisecond))
	if out, err := c.Meshctl(ctx, h1, "peers"); err == nil {
		t.Logf("meshctl peers on %s:\n%s", h1.Name(), out)
	}
	for _, pair := range [][2]harness.Host{{h1, h2}, {h2, h1}} {
		h, peer := pair[0], pair[1].Name()
		v, err := scrapeLine(ctx, h, fmt.Sprintf(`meshnet_peer_data_path_up{peer=%q}`, peer))
		if err != nil {
			t.Fatal(err)
		}
		if v != "0" {
			t.Errorf("%s: meshnet_peer_data_path_up{peer=%q} = %q; want 0", h.Name(), peer, v)
		}
		out, err := c.Meshctl(ctx, h, "status")
		if err == nil {
			t.Errorf("meshctl status on %s exited 0 with the data path to %s down:\n%s", h.Name(), peer, out)
		}
		st, _ := c.MeshctlStatus(ctx, h)
		if !strings.Contains(st, "data path to "+peer+" down") {
			t.Errorf("meshctl status on %s does not name the data path to %s:\n%s", h.Name(), peer, st)
		}
	}
	// host3 is not concerned.
	if err := expectDataPath(ctx, c, h1, hosts[2].Name(), "alive", "up"); err != nil {
		t.Error(err)
	}

	if err := clearFault(ctx, h1); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]harness.Host{{h1, h2}, {h2, h1}} {
		harness.Eventually(t, 10*time.Second, func() error {
			return expectDataPath(ctx, c, pair[0], pair[1].Name(), "alive", "up")
		})
		h, peer := pair[0], pair[1].Name()
		harness.Eventually(t, 10*time.Second, func() error {
			v, err := scrapeLine(ctx, h, fmt.Sprintf(`meshnet_peer_data_path_up{peer=%q}`, peer))
			if err == nil && v != "1" {
				err = fmt.Errorf("%s: meshnet_peer_data_path_up{peer=%q} = %q; want 1", h.Name(), peer, v)
			}
			return err
		})
		if out, err := c.Meshctl(ctx, h, "status"); err != nil {
			t.Errorf("meshctl status on %s after the unblock: %v\n%s", h.Name(), err, out)
		}
	}
}

// pingStream pings addr from container every 10 ms for d and returns ping's output.
func pingStream(ctx context.Context, h harness.Host, container string, addr netip.Addr, d time.Duration) <-chan string {
	out := make(chan string, 1)
	n := int(d / (10 * time.Millisecond))
	go func() {
		s, err := harness.Docker(ctx, h, "exec", container, "ping", "-q", "-c", fmt.Sprint(n), "-i", "0.01", "-W", "2", addr.String())
		if err != nil {
			s += "\n" + err.Error()
		}
		out <- s
	}()
	return out
}

// TestNoLossRestart: a ping every 10 ms between containers on two hosts (vxlan) while
// meshnetd on one host is (a) stopped with SIGTERM and started again, (b) killed with -9 and
// left down for 60 s, then started: no ping is lost. While it is down the other host sees it
// dead in gossip with its data path up, and keeps its entries.
func TestNoLossRestart(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	h1, h2 := hosts[0], hosts[1]
	ip1 := runContainer(t, ctx, h1, "r1", "app")
	runContainer(t, ctx, h2, "r2", "app")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h2, "r2", ip1) })
	harness.Eventually(t, 15*time.Second, func() error { return expectDataPath(ctx, c, h2, h1.Name(), "alive", "up") })
	d := c.Daemon(h1)

	check := func(t *testing.T, what string, out string) {
		sent, received, err := pingCounts(out)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("r2 -> r1 every 10 ms across %s: %d of %d answered", what, received, sent)
		if received < sent {
			t.Errorf("%d of %d pings lost across %s; want none", sent-received, sent, what)
		}
	}

	t.Run("SIGTERM restart", func(t *testing.T) {
		pings := pingStream(ctx, h2, "r2", ip1, 20*time.Second)
		time.Sleep(2 * time.Second)
		if err := d.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if err := d.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitAllAlive(t, ctx, c, hosts, 30*time.Second)
		check(t, "a SIGTERM restart of meshnetd on "+h1.Name(), <-pings)
		log, _ := d.Log()
		if strings.Contains(log, "leaving the cluster") {
			t.Errorf("meshnetd on %s left the cluster on SIGTERM without --leave-on-stop", h1.Name())
		}
	})

	t.Run("kill -9, down 60 s", func(t *testing.T) {
		pings := pingStream(ctx, h2, "r2", ip1, 80*time.Second)
		time.Sleep(2 * time.Second)
		if err := d.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		// Gossip declares it dead; its data path still answers, so host2 keeps its entries.
		harness.Eventually(t, 30*time.Second, func() error { return expectDataPath(ctx, c, h2, h1.Name(), "dead", "up") })
		t.Logf("%s sees %s dead with its data path up %s after the kill", h2.Name(), h1.Name(), time.Since(killed).Round(time.Millisecond))
		if out, err := c.Meshctl(ctx, h2, "peers"); err == nil {
			t.Logf("meshctl peers on %s:\n%s", h2.Name(), out)
		}
		time.Sleep(60*time.Second - time.Since(killed))
		if err := d.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitAllAlive(t, ctx, c, hosts, 30*time.Second)
		check(t, "kill -9 of meshnetd on "+h1.Name()+", 60 s down and a restart", <-pings)
	})
}

// TestNoLossPluginUpgrade: meshnet as Docker's managed plugin on 3 hosts; a ping every 10 ms
// from a container on host2 to one on host1 while host1's plugin is upgraded the way an
// operator does without a registry (disable, rm, create from the bundle, set, enable): no
// ping lost.
func TestNoLossPluginUpgrade(t *testing.T) {
	if remoteHosts() {
		t.Skip("the managed plugin is installed from a bundle on the test machine's file system: simulated hosts only")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	plugins := installPluginEverywhere(t, ctx, c, hosts)
	c.DumpOnFailure(t)
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)
	for _, h := range hosts {
		if err := harness.CreatePluginNetwork(ctx, plugins[h.Name()], "app", "10.47.0.0/24"); err != nil {
			t.Fatalf("creating network app on %s: %v", h.Name(), err)
		}
	}
	h1, h2 := hosts[0], hosts[1]
	ip1 := runContainer(t, ctx, h1, "u1", "app")
	runContainer(t, ctx, h2, "u2", "app")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h2, "u2", ip1) })
	harness.Eventually(t, 15*time.Second, func() error { return expectDataPath(ctx, c, h2, h1.Name(), "alive", "up") })

	pings := pingStream(ctx, h2, "u2", ip1, 30*time.Second)
	time.Sleep(2 * time.Second)
	start := time.Now()
	if err := plugins[h1.Name()].Replace(ctx); err != nil {
		t.Fatalf("upgrading the plugin on %s: %v", h1.Name(), err)
	}
	t.Logf("plugin on %s disabled, removed, created, set and enabled in %s", h1.Name(), time.Since(start).Round(time.Millisecond))
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)
	sent, received, err := pingCounts(<-pings)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("u2 -> u1 every 10 ms across the plugin upgrade on %s: %d of %d answered", h1.Name(), received, sent)
	if received < sent {
		t.Errorf("%d of %d pings lost across the plugin upgrade on %s; want none", sent-received, sent, h1.Name())
	}
}
