package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestDualStack: `docker network create --ipv6 --subnet 10.46.0.0/24 --subnet fd46::/64`
// on every host. Each container gets an address of each family from the cluster's IPAM
// (no IPv6 address twice), reaches its IPv6 gateway and every container on the other
// hosts over both families, and resolves a service through libc (getent ahosts, the
// engine's resolver path) to both families of every replica. A router advertisement
// sent by a hostile container is dropped at its veth and counted: its neighbour on the
// same bridge takes no route from it (Weave's CVE-2020-11091). A dual-stack wireguard
// network carries both families between every pair too.
func TestDualStack(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)

	subnet, subnet6 := netip.MustParsePrefix("10.46.0.0/24"), netip.MustParsePrefix("fd46::/64")
	createNetworkEverywhere(t, ctx, hosts, "ds", subnet.String(), "--ipv6", "--subnet", subnet6.String())
	ctrs := onePerHost(t, ctx, hosts, "ds", "ds", []netip.Prefix{subnet, subnet6}, "--label", "meshnet.service=api")
	for _, x := range ctrs {
		if x.ep.Gateway6 != netip.MustParseAddr("fd46::1") {
			t.Errorf("%s on %s: IPv6 gateway %s; want fd46::1", x.name, x.h.Name(), x.ep.Gateway6)
		}
	}

	start := time.Now()
	for _, a := range ctrs {
		harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, a.h, a.name, a.ep.Gateway6) })
		for _, b := range ctrs {
			if a.name == b.name {
				continue
			}
			for _, addr := range []netip.Addr{b.ep.IP, b.ep.IPv6} {
				harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, a.h, a.name, addr) })
			}
		}
	}
	t.Logf("every container reaches every other over IPv4 and IPv6 after %s", time.Since(start).Round(time.Millisecond))

	// libc's view of the service: every replica's two addresses.
	harness.Eventually(t, 15*time.Second, func() error {
		out, err := harness.Docker(ctx, ctrs[0].h, "exec", ctrs[0].name, "getent", "ahosts", "api.meshnet")
		if err != nil {
			return fmt.Errorf("getent ahosts api.meshnet: %w: %s", err, out)
		}
		for _, x := range ctrs {
			for _, a := range []netip.Addr{x.ep.IP, x.ep.IPv6} {
				if !strings.Contains(out, a.String()+" ") {
					return fmt.Errorf("getent ahosts api.meshnet lacks %s of %s:\n%s", a, x.name, out)
				}
			}
		}
		return nil
	})

	t.Run("wireguard", func(t *testing.T) {
		// The same on a wireguard network: routed, the bridge answering
		// neighbour solicitations for remote IPv6 addresses.
		createNetworkEverywhere(t, ctx, hosts, "dsw", "10.47.0.0/24", "--ipv6", "--subnet", "fd47::/64", "-o", "dataplane=wireguard")
		eps := onePerHost(t, ctx, hosts, "dsw", "dsw", []netip.Prefix{netip.MustParsePrefix("10.47.0.0/24"), netip.MustParsePrefix("fd47::/64")})
		start := time.Now()
		for _, a := range eps {
			for _, b := range eps {
				if a.name == b.name {
					continue
				}
				for _, addr := range []netip.Addr{b.ep.IP, b.ep.IPv6} {
					harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, a.h, a.name, addr) })
				}
			}
		}
		t.Logf("every container reaches every other over IPv4 and IPv6 through WireGuard after %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("router advertisement", func(t *testing.T) {
		if remoteHosts() {
			t.Skip("runs l2probe from the test machine's file system: simulated hosts only")
		}
		h := hosts[0]
		runContainer(t, ctx, h, "ds-neighbour", "ds")
		pid, err := harness.Docker(ctx, h, "inspect", "-f", "{{.State.Pid}}", ctrs[0].name)
		if err != nil {
			t.Fatal(err)
		}
		const rule = "from container: IPv6 router advertisement"
		before := l2Drops(t, ctx, h)[rule]
		out, err := h.Exec(ctx, "nsenter", "-t", strings.TrimSpace(pid), "-n", l2probeBinary(t), "ra", "-i", "eth0", "-prefix", "fd00:bad::/64")
		if err != nil || !strings.Contains(out, "sent 3 router advertisements") {
			t.Fatalf("sending router advertisements from %s: %v\n%s", ctrs[0].name, err, out)
		}
		if got := l2Drops(t, ctx, h)[rule]; got < before+3 {
			t.Errorf("%q dropped %d of the 3 advertisements", rule, got-before)
		}
		time.Sleep(time.Second)
		out, err = harness.Docker(ctx, h, "exec", "ds-neighbour", "ip", "-6", "route")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "fd00:bad") || strings.Contains(out, "via fe80:") {
			t.Errorf("the neighbour took a route from the advertisement:\n%s", out)
		}
	})
}
