package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestDaemonKilledMidStart kills meshnetd while containers are being started on its host, so
// that the kill lands between the engine's plugin calls (RequestAddress, CreateEndpoint,
// Join), then restarts it. The engine never repeats a release call that failed, so what it
// allocated for containers that did not start would stay held for ever; meshnetd's leak sweep
// (here --reclaim-after 10s) must free it. At the end: no address held twice, the host's
// allocations are exactly its containers' addresses, and the containers that run talk.
func TestDaemonKilledMidStart(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	for _, h := range hosts {
		if _, err := c.StartMeshnet(ctx, h, "--reclaim-after", "10s"); err != nil {
			t.Fatalf("starting meshnetd on %s: %v", h.Name(), err)
		}
	}
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	subnet := netip.MustParsePrefix("10.42.0.0/24")
	createNetworkEverywhere(t, ctx, hosts, "app", subnet.String())
	h1, h2 := hosts[0], hosts[1]
	peerIP := runContainer(t, ctx, h2, "peer", "app")

	const n = 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("mid%d", i)
			if err := harness.RunContainer(ctx, h1, name, "app"); err != nil {
				mu.Lock()
				failed = append(failed, name+": "+firstLineOf(err.Error()))
				mu.Unlock()
			}
		}()
	}
	time.Sleep(400 * time.Millisecond)
	d := c.Daemon(h1)
	if err := d.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	t.Logf("%d of %d containers started across the kill; failed: %q", n-len(failed), n, failed)
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)

	// Containers that failed stay behind as created: the engine gave up on them.
	if _, err := harness.Docker(ctx, h1, "container", "prune", "-f", "--filter", "label="+harness.Label); err != nil {
		t.Fatal(err)
	}
	running := runningOn(t, ctx, h1, "app")
	for name, ip := range running {
		if ip == peerIP {
			t.Errorf("%s on %s holds %s, the address of peer on %s", name, h1.Name(), ip, h2.Name())
		}
	}
	ips := map[string]netip.Addr{key(h2, "peer"): peerIP}
	for name, ip := range running {
		ips[key(h1, name)] = ip
	}
	checkDistinct(t, ctx, hosts, ips, subnet)

	// The sweep frees what the engine holds no more: the host's allocations come down to its
	// containers' addresses (grace 10 s, a pass every 5 s).
	start := time.Now()
	harness.Eventually(t, 60*time.Second, func() error {
		held, err := allocatedOn(ctx, c, h1, subnet.String())
		if err != nil {
			return err
		}
		if held != len(running) {
			return fmt.Errorf("%s holds %d addresses in %s, its running containers %d", h1.Name(), held, subnet, len(running))
		}
		return nil
	})
	log, _ := d.Log()
	freed := strings.Count(log, "released an address no container holds")
	removed := strings.Count(log, "removed an endpoint no container holds")
	t.Logf("allocations match the %d running containers %s after the restart settled; the sweep freed %d addresses and %d endpoint records",
		len(running), time.Since(start).Round(time.Second), freed, removed)

	// Every container that runs reaches the other host, and new ones get fresh addresses.
	for name := range running {
		harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h1, name, peerIP) })
	}
	after := runContainer(t, ctx, h1, "after", "app")
	ips[key(h1, "after")] = after
	checkDistinct(t, ctx, hosts, ips, subnet)
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h2, "peer", after) })
}

// runningOn returns the running containers of the suite on h with their addresses on network.
func runningOn(t *testing.T, ctx context.Context, h harness.Host, network string) map[string]netip.Addr {
	t.Helper()
	out, err := harness.Docker(ctx, h, "ps", "--filter", "label="+harness.Label, "--filter", "status=running", "--format", "{{.Names}}")
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(out)
	ips, err := harness.ContainerIPs(ctx, h, network, names...)
	if err != nil {
		t.Fatal(err)
	}
	return ips
}

// allocatedOn is the number of addresses h's meshnetd holds in pool (meshctl status).
func allocatedOn(ctx context.Context, c *harness.Cluster, h harness.Host, pool string) (int, error) {
	out, err := c.Meshctl(ctx, h, "-o", "json", "status")
	if err != nil {
		return 0, err
	}
	var st struct {
		IPAM []struct {
			Subnet string `json:"subnet"`
			Nodes  []struct {
				Node      string `json:"node"`
				Allocated int    `json:"allocated"`
			} `json:"nodes"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return 0, fmt.Errorf("meshctl status: %w", err)
	}
	for _, p := range st.IPAM {
		if p.Subnet != pool {
			continue
		}
		for _, u := range p.Nodes {
			if u.Node == h.Name() {
				return u.Allocated, nil
			}
		}
	}
	return 0, fmt.Errorf("meshctl status on %s lists no usage of %s by itself", h.Name(), pool)
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
