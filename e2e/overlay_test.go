package e2e

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestOverlayPing checks the VXLAN overlay end to end: containers on three hosts reach each
// other and their gateway; their MTU leaves room for the encapsulation; a second network on
// the same hosts is isolated from the first; containers reach the underlay through their
// gateway (egress with masquerade).
func TestOverlayPing(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)

	// On an IPv6 underlay the network has an IPv6 half too, so that egress to another
	// host's (IPv6) address can be checked below.
	subnets := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}
	var v6 []string
	if underlayIPv6(hosts) {
		subnets = append(subnets, netip.MustParsePrefix("fd42::/64"))
		v6 = []string{"--ipv6", "--subnet", "fd42::/64"}
	}
	createNetworkEverywhere(t, ctx, hosts, "app", subnets[0].String(), v6...)
	ctrs := onePerHost(t, ctx, hosts, "c", "app", subnets)

	start := time.Now()
	for _, a := range ctrs {
		if a.ep.Gateway.IsValid() {
			harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, a.h, a.name, a.ep.Gateway) })
		}
		for _, b := range ctrs {
			if a.name == b.name {
				continue
			}
			harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, a.h, a.name, b.ep.IP) })
		}
	}
	t.Logf("every container reaches every other after %s", time.Since(start).Round(time.Millisecond))

	for _, x := range ctrs {
		under, err := harness.UnderlayMTU(ctx, x.h)
		if err != nil {
			t.Fatal(err)
		}
		out, err := harness.Docker(ctx, x.h, "exec", x.name, "cat", "/sys/class/net/eth0/mtu")
		if err != nil {
			t.Fatal(err)
		}
		overhead := tunnelOverhead(hosts, false)
		if mtu, err := strconv.Atoi(strings.TrimSpace(out)); err != nil || mtu != under-overhead {
			t.Errorf("MTU of %s's eth0 is %q; want underlay MTU %d - %d = %d", x.name, strings.TrimSpace(out), under, overhead, under-overhead)
		}
	}

	// A second network: works in itself, isolated from the first.
	createNetworkEverywhere(t, ctx, hosts, "other", "10.43.0.0/24")
	o1 := runContainer(t, ctx, hosts[0], "o1", "other")
	o2 := runContainer(t, ctx, hosts[1], "o2", "other")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, hosts[0], "o1", o2) })
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, hosts[1], "o2", o1) })
	for _, check := range []struct {
		h      harness.Host
		from   string
		to     netip.Addr
		toName string
	}{
		{hosts[0], "o1", ctrs[0].ep.IP, "c1 (same host)"},
		{hosts[0], "o1", ctrs[1].ep.IP, "c2 (other host)"},
		{hosts[0], "c1", o1, "o1 (same host)"},
		{hosts[0], "c1", o2, "o2 (other host)"},
	} {
		if err := pingFails(ctx, check.h, check.from, check.to); err != nil {
			t.Errorf("networks not isolated (%s -> %s): %v", check.from, check.toName, err)
		}
	}

	// Egress: a container reaches another host's underlay address through its gateway.
	harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, hosts[0], "c1", hosts[1].Addr()) })
	harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, hosts[2], "c3", hosts[0].Addr()) })
}
