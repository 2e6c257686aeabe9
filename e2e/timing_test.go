package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestReachabilityTiming measures how long a new container on host B takes to answer a ping
// from host A (logged; only a generous bound is asserted), and checks that a removed
// container's forwarding and neighbour entries vanish from the other hosts.
func TestReachabilityTiming(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	a, b := hosts[0], hosts[1]
	observers := []harness.Host{hosts[0], hosts[2]}
	runContainer(t, ctx, a, "pinger", "app")

	const runs = 5
	var took []time.Duration
	for i := 0; i < runs; i++ {
		name := fmt.Sprintf("target%d", i)
		t0 := time.Now()
		ip := runContainer(t, ctx, b, name, "app")
		// The loop runs inside the pinger, so each try costs a ping, not a docker exec.
		script := fmt.Sprintf("i=0; until ping -c1 -W1 %s >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 30 ] && exit 1; done", ip)
		if out, err := harness.Docker(ctx, a, "exec", "pinger", "sh", "-c", script); err != nil {
			// What the pinger sees, for the report: one ping with its output, its
			// neighbour and route tables.
			diag, _ := harness.Docker(ctx, a, "exec", "pinger", "sh", "-c",
				fmt.Sprintf("date +%%T.%%N; ping -c1 -W1 %s 2>&1; echo exit=$?; ip neigh; ip route; ip addr show eth0", ip))
			t.Fatalf("%s on %s never answered the pinger on %s: %v %s\nthe pinger now:\n%s", name, b.Name(), a.Name(), err, out, diag)
		}
		d := time.Since(t0)
		took = append(took, d)
		t.Logf("run %d: %s (%s) answered %s after docker run started", i, name, ip, d.Round(time.Millisecond))
		if d > 10*time.Second {
			t.Errorf("run %d: %s took %s to become reachable; want under 10 s", i, name, d.Round(time.Millisecond))
		}

		mac, err := harness.Docker(ctx, b, "exec", name, "cat", "/sys/class/net/eth0/address")
		if err != nil {
			t.Fatal(err)
		}
		mac = strings.ToLower(strings.TrimSpace(mac))
		// The entries must be there first, or their absence later proves nothing.
		for _, h := range observers {
			harness.Eventually(t, 10*time.Second, func() error {
				fdb, neigh, err := overlayEntries(ctx, h, mac, ip)
				if err != nil {
					return err
				}
				if len(fdb) == 0 || len(neigh) == 0 {
					return fmt.Errorf("%s has fdb entries %q and neighbour entries %q for %s (%s); want both", h.Name(), fdb, neigh, name, mac)
				}
				return nil
			})
		}
		if _, err := harness.Docker(ctx, b, "rm", "-f", name); err != nil {
			t.Fatal(err)
		}
		for _, h := range observers {
			harness.Eventually(t, 10*time.Second, func() error {
				fdb, neigh, err := overlayEntries(ctx, h, mac, ip)
				if err != nil {
					return err
				}
				if len(fdb) > 0 || len(neigh) > 0 {
					return fmt.Errorf("%s still has fdb entries %q and neighbour entries %q for the removed %s (%s, %s)", h.Name(), fdb, neigh, name, mac, ip)
				}
				return nil
			})
		}
	}
	sorted := append([]time.Duration(nil), took...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	t.Logf("time to first ping across hosts, median of %d: %s (min %s, max %s)", runs,
		sorted[runs/2].Round(time.Millisecond), sorted[0].Round(time.Millisecond), sorted[runs-1].Round(time.Millisecond))
}

// overlayEntries returns h's VXLAN forwarding entries for mac (on every vxlan device, e.g.
// `bridge fdb show dev mnvx<VNI>`) and its neighbour entries for ip on those devices.
func overlayEntries(ctx context.Context, h harness.Host, mac string, ip netip.Addr) (fdb, neigh []string, err error) {
	out, err := h.Exec(ctx, "ip", "-j", "link", "show", "type", "vxlan")
	if err != nil {
		return nil, nil, err
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, nil, fmt.Errorf("parsing vxlan links on %s: %w", h.Name(), err)
	}
	if len(links) == 0 {
		return nil, nil, fmt.Errorf("%s has no vxlan device", h.Name())
	}
	for _, l := range links {
		out, err := h.Exec(ctx, "bridge", "fdb", "show", "dev", l.Name)
		if err != nil {
			return nil, nil, err
		}
		for _, line := range strings.Split(out, "\n") {
			// Only the VXLAN device's own entries ("MAC dst VTEP self permanent") steer
			// encapsulation; "master BRIDGE" lines are the bridge's learned entries for that
			// port, which age out by themselves.
			if strings.HasPrefix(strings.ToLower(line), mac+" ") && !strings.Contains(line, " master ") {
				fdb = append(fdb, l.Name+": "+line)
			}
		}
		out, err = h.Exec(ctx, "ip", "neigh", "show", "to", ip.String(), "dev", l.Name)
		if err != nil {
			return nil, nil, err
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line != "" {
				neigh = append(neigh, l.Name+": "+line)
			}
		}
	}
	return fdb, neigh, nil
}
