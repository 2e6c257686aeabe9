package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestBridgeBypass runs meshnetd --bridge-bypass=on on three Docker hosts
// (FORWARD policy DROP, br_netfilter on): containers reach each other
// across hosts, and meshctl status counts the frames the bypass handed
// past the bridge; a service VIP, balanced in the client's
// namespace, reaches every replica on every host; as documented, an
// operator's DOCKER-USER drop of a container's address no longer stops its
// network's own traffic but still stops a published port's.
func TestBridgeBypass(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	startMesh(t, ctx, c, hosts, "--bridge-bypass=on")
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.49.0.0/24")
	svc := []string{"--label", "meshnet.service=web", "--label", "meshnet.endpoint-mode=vip"}
	for _, w := range []struct {
		h     harness.Host
		name  string
		extra []string
	}{{h1, "web1", append([]string{"-p", "8082:8080"}, svc...)}, {h2, "web2", svc}, {h3, "web3", svc}} {
		if out, err := runWeb(ctx, w.h, w.name, "app", w.extra...); err != nil {
			t.Fatalf("starting %s on %s: %v\n%s", w.name, w.h.Name(), err, out)
		}
	}
	web1, err := harness.ContainerIP(ctx, h1, "web1", "app")
	if err != nil {
		t.Fatal(err)
	}
	web2, err := harness.ContainerIP(ctx, h2, "web2", "app")
	if err != nil {
		t.Fatal(err)
	}
	before := bypassed(t, ctx, c, h1)
	expectFetch(t, ctx, h2, "web2", web1, 8080) // across hosts
	expectFetch(t, ctx, h1, "web1", web2, 8080)
	if got, err := fetchFrom(ctx, h2, "web2", web1, 8080); err != nil || got != web2.String() {
		t.Errorf("web1 saw web2 as %q (%v), want %s", got, err, web2)
	}
	if after := bypassed(t, ctx, c, h1); after <= before {
		t.Errorf("host1's bridge bypass handed %d frames past the bridge during the fetches", after-before)
	}

	// The VIP: every connection lands on a replica, local or remote.
	var vip netip.Addr
	harness.Eventually(t, 30*time.Second, func() error {
		svcs, err := servicesOn(ctx, c, h2)
		if err == nil && (len(svcs["web"].VIPs) != 1 || len(svcs["web"].Replicas) != 3) {
			err = fmt.Errorf("web: %+v", svcs["web"])
		}
		if err == nil {
			vip, err = netip.ParseAddr(svcs["web"].VIPs[0].Addr)
		}
		return err
	})
	expectFetch(t, ctx, h2, "web2", vip, 8080)
	for i := range 6 {
		if _, err := fetchFrom(ctx, h2, "web2", vip, 8080); err != nil {
			t.Errorf("connection %d through the VIP %s: %v", i, vip, err)
		}
	}

	// DOCKER-USER: the network's own traffic no longer meets it; a
	// published port's still does.
	drop := []string{"DOCKER-USER", "-d", web1.String() + "/32", "-j", "DROP"}
	if _, err := h1.Exec(ctx, append([]string{"iptables", "-I"}, drop...)...); err != nil {
		t.Fatal(err)
	}
	expectFetch(t, ctx, h2, "web2", web1, 8080)
	if out, err := h2.Exec(ctx, "curl", "-sS", "-m", "3", fmt.Sprintf("http://%s/cgi-bin/ip", netip.AddrPortFrom(h1.Addr(), 8082))); err == nil {
		t.Errorf("the published port answered through a DOCKER-USER drop: %s", out)
	}
	if _, err := h1.Exec(ctx, append([]string{"iptables", "-D"}, drop...)...); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, func() error {
		_, err := h2.Exec(ctx, "curl", "-sS", "-m", "3", fmt.Sprintf("http://%s/cgi-bin/ip", netip.AddrPortFrom(h1.Addr(), 8082)))
		return err
	})
}

// bypassed is the frames h's bridge bypass handed past the bridge, as
// meshctl status reports them.
func bypassed(t *testing.T, ctx context.Context, c *harness.Cluster, h harness.Host) uint64 {
	t.Helper()
	st, err := meshStatus(ctx, c, h)
	if err != nil {
		t.Fatalf("meshctl status on %s: %v", h.Name(), err)
	}
	f := st.Dataplane.BridgeBypassFrames
	if f == nil {
		t.Fatalf("meshctl status on %s reports no bypassed frames (bypass: %s)", h.Name(), st.Dataplane.BridgeBypass)
	}
	return f.ToOtherHosts + f.ToContainers
}
