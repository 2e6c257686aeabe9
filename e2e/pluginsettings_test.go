package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestManagedPluginSettings: settings beyond the first five reach the plugin's meshnetd
// (VXLAN_PORT=4790, DNS_DOMAIN, WIREGUARD_KEEPALIVE on 2 hosts: the vxlan device's port is
// 4790 and containers ping across hosts through it), and meshctl taken from the plugin's
// rootfs as the README says runs on the host and reaches the plugin.
func TestManagedPluginSettings(t *testing.T) {
	if remoteHosts() {
		t.Skip("the managed plugin is installed from the shared bundle directory: simulated hosts only")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	mesh := hosts[:2]
	var plugins []*harness.Plugin
	for _, h := range mesh {
		plugins = append(plugins, installPlugin(t, ctx, c, h, mesh[0].Addr().String(),
			"VXLAN_PORT=4790", "DNS_DOMAIN=mesh.test", "WIREGUARD_KEEPALIVE=25s"))
	}
	waitAllAlive(t, ctx, c, mesh, 30*time.Second)

	// The README's way to get meshctl on a plugin host: the binary in the plugin's rootfs.
	rootfsMeshctl := `"/var/lib/docker/plugins/$(docker plugin inspect -f '{{.Id}}' meshnet:latest)/rootfs/meshctl"`
	out, err := mesh[1].Exec(ctx, "sh", "-c", rootfsMeshctl+" peers")
	if err != nil {
		t.Fatalf("meshctl from the plugin's rootfs on %s: %v\n%s", mesh[1].Name(), err, out)
	}
	t.Logf("meshctl peers from the plugin's rootfs on %s:\n%s", mesh[1].Name(), out)
	for _, h := range mesh {
		if !strings.Contains(out, h.Name()) {
			t.Errorf("meshctl from the plugin's rootfs does not list %s:\n%s", h.Name(), out)
		}
	}

	for _, p := range plugins {
		if err := harness.CreatePluginNetwork(ctx, p, "app", "10.42.0.0/24"); err != nil {
			t.Fatalf("creating network app on %s: %v", p.Host.Name(), err)
		}
	}
	runContainer(t, ctx, mesh[0], "s1", "app")
	ip2 := runContainer(t, ctx, mesh[1], "s2", "app")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, mesh[0], "s1", ip2) })
	for _, h := range mesh {
		link, err := h.Exec(ctx, "sh", "-c", "ip -d link show type vxlan | grep -o 'dstport [0-9]*' | sort -u")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(link) != "dstport 4790" {
			t.Errorf("%s's vxlan devices use %q, want dstport 4790 (VXLAN_PORT)", h.Name(), strings.TrimSpace(link))
		}
	}
	// DNS_DOMAIN reached the daemon: it answers in its own zone.
	out, err = c.Meshctl(ctx, mesh[0], "lookup", "s2.mesh.test")
	if err != nil || !strings.Contains(out, ip2.String()) {
		t.Errorf("meshctl lookup s2.mesh.test on %s: %v\n%s; want %s (DNS_DOMAIN=mesh.test)", mesh[0].Name(), err, out, ip2)
	}
}
