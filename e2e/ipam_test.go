package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestIPAMDistinct checks that addresses never collide across hosts: 20 containers started
// at once on each of three hosts get 60 distinct addresses; after a meshnetd crash and restart
// the running containers keep theirs and new ones get fresh ones; after a Docker engine crash
// and restart, likewise.
func TestIPAMDistinct(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	subnet := netip.MustParsePrefix("10.42.0.0/24")
	createNetworkEverywhere(t, ctx, hosts, "app", subnet.String())

	// Restart policy: containers come back after the engine crash, as an operator's would.
	start := time.Now()
	all := startMany(t, ctx, hosts, "a", 20, "--restart", "always")
	t.Logf("60 containers started in %s", time.Since(start).Round(time.Millisecond))
	checkDistinct(t, ctx, hosts, all, subnet)

	// meshnetd crashes on host2 and comes back.
	d := c.Daemon(hosts[1])
	if err := d.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)
	now := collectIPs(t, ctx, hosts, all)
	for k, ip := range all {
		if now[k] != ip {
			t.Errorf("%s had %s before meshnetd restarted on %s, now %s", k, ip, hosts[1].Name(), now[k])
		}
	}
	for k, v := range startMany(t, ctx, hosts, "b", 5, "--restart", "always") {
		all[k] = v
	}
	checkDistinct(t, ctx, hosts, all, subnet)
	// The restarted daemon's host still takes part in the overlay.
	b2 := all[key(hosts[1], "b-"+hosts[1].Name()+"-0")]
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, hosts[0], "a-"+hosts[0].Name()+"-0", b2) })

	// The Docker engine crashes on host3 and comes back.
	h3 := hosts[2]
	if err := h3.KillEngine(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h3.StartEngine(ctx); err != nil {
		t.Fatal(err)
	}
	var mine []string
	for k := range all {
		if strings.HasPrefix(k, h3.Name()+"/") {
			mine = append(mine, strings.TrimPrefix(k, h3.Name()+"/"))
		}
	}
	harness.Eventually(t, 2*time.Minute, func() error {
		out, err := harness.Docker(ctx, h3, "ps", "--filter", "status=running", "--format", "{{.Names}}")
		if err != nil {
			return err
		}
		running := map[string]bool{}
		for _, n := range strings.Fields(out) {
			running[n] = true
		}
		var down []string
		for _, n := range mine {
			if !running[n] {
				down = append(down, n)
			}
		}
		if len(down) > 0 {
			return fmt.Errorf("not running again on %s after the engine restart: %v", h3.Name(), down)
		}
		return nil
	})
	now = collectIPs(t, ctx, hosts, all)
	moved := 0
	for k, ip := range all {
		if now[k] == ip {
			continue
		}
		if strings.HasPrefix(k, h3.Name()+"/") {
			// Docker restarts the containers of a crashed engine with fresh endpoints, and asks
			// the IPAM driver for an address without naming the old one; its own bridge driver
			// reshuffles addresses here too. Distinctness is what must hold.
			moved++
			continue
		}
		t.Errorf("%s had %s before the engine restarted on %s, now %s", k, ip, h3.Name(), now[k])
	}
	t.Logf("after the engine restart on %s, %d of its %d containers have another address", h3.Name(), moved, len(mine))
	all = now
	for k, v := range startMany(t, ctx, hosts, "c", 5) {
		all[k] = v
	}
	checkDistinct(t, ctx, hosts, all, subnet)
}

func key(h harness.Host, name string) string { return h.Name() + "/" + name }

// startMany starts n containers on every host at once, named PREFIX-HOST-I, and returns their
// addresses keyed HOST/NAME.
func startMany(t *testing.T, ctx context.Context, hosts []harness.Host, prefix string, n int, extra ...string) map[string]netip.Addr {
	t.Helper()
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for _, h := range hosts {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("%s-%s-%d", prefix, h.Name(), i)
				if err := harness.RunContainer(ctx, h, name, "app", extra...); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		sort.Strings(errs)
		t.Fatalf("%d of %d containers failed to start:\n%s", len(errs), n*len(hosts), strings.Join(errs, "\n"))
	}
	want := map[string]netip.Addr{}
	for _, h := range hosts {
		for i := 0; i < n; i++ {
			want[key(h, fmt.Sprintf("%s-%s-%d", prefix, h.Name(), i))] = netip.Addr{}
		}
	}
	return collectIPs(t, ctx, hosts, want)
}

// collectIPs returns the current addresses on "app" of the containers keyed HOST/NAME.
func collectIPs(t *testing.T, ctx context.Context, hosts []harness.Host, keys map[string]netip.Addr) map[string]netip.Addr {
	t.Helper()
	return collectAddrs(t, ctx, hosts, keys, harness.ContainerIPs)
}

// collectIPv6s is collectIPs for the containers' IPv6 addresses on the dual-stack network "app".
func collectIPv6s(t *testing.T, ctx context.Context, hosts []harness.Host, keys map[string]netip.Addr) map[string]netip.Addr {
	t.Helper()
	return collectAddrs(t, ctx, hosts, keys, harness.ContainerIPv6s)
}

func collectAddrs(t *testing.T, ctx context.Context, hosts []harness.Host, keys map[string]netip.Addr,
	inspect func(context.Context, harness.Host, string, ...string) (map[string]netip.Addr, error)) map[string]netip.Addr {
	t.Helper()
	out := map[string]netip.Addr{}
	for _, h := range hosts {
		var names []string
		for k := range keys {
			if n, ok := strings.CutPrefix(k, h.Name()+"/"); ok {
				names = append(names, n)
			}
		}
		ips, err := inspect(ctx, h, "app", names...)
		if err != nil {
			t.Fatal(err)
		}
		for n, ip := range ips {
			out[key(h, n)] = ip
		}
	}
	return out
}

// checkDistinct checks that every address is in the subnet, is not a gateway, and is held by
// one container only.
func checkDistinct(t *testing.T, ctx context.Context, hosts []harness.Host, ips map[string]netip.Addr, subnet netip.Prefix) {
	t.Helper()
	gateways := map[netip.Addr]bool{}
	for _, h := range hosts {
		out, err := harness.Docker(ctx, h, "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}} {{end}}", "app")
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range strings.Fields(out) {
			if a, err := netip.ParseAddr(strings.Split(g, "/")[0]); err == nil {
				gateways[a] = true
			}
		}
	}
	holder := map[netip.Addr]string{}
	for k, ip := range ips {
		if !subnet.Contains(ip) {
			t.Errorf("%s got %s, outside %s", k, ip, subnet)
		}
		if gateways[ip] {
			t.Errorf("%s got the gateway address %s", k, ip)
		}
		if other, dup := holder[ip]; dup {
			t.Errorf("%s and %s both hold %s", other, k, ip)
		}
		holder[ip] = k
	}
	if len(holder) == len(ips) {
		t.Logf("%d containers, %d distinct addresses", len(ips), len(holder))
	}
}
