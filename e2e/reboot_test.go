package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestHostReboot reboots a host that runs meshnetd as the systemd service the project ships,
// installed from the release's .deb (its unit is Type=notify, ordered Before=docker.service;
// installService checks that it starts so): after the reboot meshnetd
// was ready before dockerd started (so before the engine restored its containers), a container
// with `--restart always` is back with its address, and it and a container on another host
// reach each other. Only hosts the harness booted are rebooted (VMs: MESHNET_E2E_VM).
func TestHostReboot(t *testing.T) {
	c, ctx, hosts := rebootSetup(t)
	h := hosts[2]
	installService(t, ctx, c, h, hosts[0])
	waitAllAlive(t, ctx, c, hosts, 60*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	ip := runContainer(t, ctx, h, "keeper", "app", "--restart", "always")
	peer := runContainer(t, ctx, hosts[0], "peer", "app")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h, "keeper", peer) })

	start := reboot(t, ctx, h)

	// Order: meshnetd ready (Type=notify) before dockerd's process began.
	mono := func(unit, prop string) uint64 {
		out, err := h.Exec(ctx, "systemctl", "show", "-p", prop, "--value", unit)
		v, perr := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
		if err != nil || perr != nil || v == 0 {
			t.Fatalf("systemctl show -p %s %s on %s: %q %v %v", prop, unit, h.Name(), out, err, perr)
		}
		return v
	}
	harness.Eventually(t, 3*time.Minute, func() error {
		out, err := h.Exec(ctx, "systemctl", "is-active", "meshnetd", "docker")
		if err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	ready := mono("meshnetd", "ActiveEnterTimestampMonotonic")
	engine := mono("docker", "ExecMainStartTimestampMonotonic")
	t.Logf("after the reboot: meshnetd ready at %.2fs, dockerd started at %.2fs (since boot)", float64(ready)/1e6, float64(engine)/1e6)
	if ready > engine {
		t.Errorf("meshnetd became ready %.2fs after dockerd started: the engine may restore containers without its plugin",
			float64(ready-engine)/1e6)
	}

	keeperBack(t, ctx, h, hosts[0], ip, peer, start)
}

// TestHostRebootPlugin is TestHostReboot with meshnet run as Docker's managed plugin on the
// rebooted host, installed from the release's plugin tarball (copied, unpacked, `docker plugin
// create`, `set`, `enable`) and meshnetd on the others: the engine starts an enabled plugin
// before it restores containers, so after the reboot the plugin is enabled again, the
// `--restart always` container on a plugin network is back at its address, and it and a
// container on another host reach each other. Only hosts the harness booted are rebooted.
func TestHostRebootPlugin(t *testing.T) {
	c, ctx, hosts := rebootSetup(t)
	h := hosts[2]
	dir := filepath.Join(t.TempDir(), "release")
	_, version := buildRelease(t, ctx, dir)
	tarball := filepath.Join(dir, "meshnet-plugin_"+version+"_linux_amd64.tar.gz")
	p, err := harness.InstallPluginTarball(ctx, h, pluginName, tarball,
		"KEY="+c.Key, "JOIN="+hosts[0].Addr().String(), "ADVERTISE_ADDR="+h.Addr().String(),
		"DNS_UPSTREAM=none", "LOG_LEVEL=debug")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if p != nil {
			if err := p.Remove(ctx); err != nil {
				t.Errorf("removing the plugin from %s: %v", h.Name(), err)
			}
		}
		_, _ = h.Exec(ctx, "rm", "-rf", "/var/tmp/meshnet-e2e-plugin")
	})
	if err != nil {
		t.Fatalf("installing the plugin from %s on %s: %v", filepath.Base(tarball), h.Name(), err)
	}
	waitAllAlive(t, ctx, c, hosts[:2], 60*time.Second)
	harness.Eventually(t, 60*time.Second, func() error {
		ps, err := c.Peers(ctx, hosts[0])
		if err != nil {
			return err
		}
		for _, x := range ps {
			if x.Name == h.Name() && x.State == "alive" {
				return nil
			}
		}
		return fmt.Errorf("%s does not see %s's plugin alive: %+v", hosts[0].Name(), h.Name(), ps)
	})
	createNetworkEverywhere(t, ctx, hosts[:2], "app", "10.42.0.0/24")
	if err := harness.CreatePluginNetwork(ctx, p, "app", "10.42.0.0/24"); err != nil {
		t.Fatalf("creating network app with the plugin on %s: %v", h.Name(), err)
	}
	ip := runContainer(t, ctx, h, "keeper", "app", "--restart", "always")
	peer := runContainer(t, ctx, hosts[0], "peer", "app")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h, "keeper", peer) })

	start := reboot(t, ctx, h)
	harness.Eventually(t, 3*time.Minute, func() error {
		out, err := harness.Docker(ctx, h, "plugin", "inspect", "-f", "{{.Enabled}}", p.Ref())
		if err != nil || strings.TrimSpace(out) != "true" {
			return fmt.Errorf("the plugin on %s after the reboot: enabled %q, %v", h.Name(), strings.TrimSpace(out), err)
		}
		return nil
	})
	t.Logf("the plugin on %s enabled again %s after the reboot was asked", h.Name(), time.Since(start).Round(time.Second))
	keeperBack(t, ctx, h, hosts[0], ip, peer, start)
}

// rebootSetup starts a reboot test: it skips unless the hosts are VMs the harness booted (SSH
// hosts are not the suite's to reboot), and runs meshnetd on the first two hosts; the third is
// the test's to set up and reboot.
func rebootSetup(t *testing.T) (*harness.Cluster, context.Context, []harness.Host) {
	t.Helper()
	requireOwnKernel(t, "a host reboot")
	if !vmHosts() {
		t.Skip("a reboot needs hosts the harness booted (MESHNET_E2E_VM): SSH hosts are not the suite's to reboot")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts[:2])
	return c, ctx, hosts
}

// reboot reboots h (a VM guest) and waits until it answers SSH with a new boot ID; it
// returns when the reboot was asked.
func reboot(t *testing.T, ctx context.Context, h harness.Host) time.Time {
	t.Helper()
	bootID := func() (string, error) {
		out, err := h.Exec(ctx, "cat", "/proc/sys/kernel/random/boot_id")
		return strings.TrimSpace(out), err
	}
	before, err := bootID()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The SSH session may be cut by the reboot: its error says nothing.
	_, _ = h.Exec(ctx, "sh", "-c", "systemctl reboot >/dev/null 2>&1 &")
	harness.Eventually(t, 8*time.Minute, func() error {
		id, err := bootID()
		if err != nil {
			return err
		}
		if id == before {
			return fmt.Errorf("%s has not rebooted yet", h.Name())
		}
		return nil
	})
	t.Logf("%s rebooted: SSH back %s after the reboot was asked", h.Name(), time.Since(start).Round(time.Second))
	return start
}

// keeperBack waits for the container keeper on h, restarted by the engine after a reboot, to
// be back at ip on network app, then for it and the container peer on other (at peerIP) to
// reach each other.
func keeperBack(t *testing.T, ctx context.Context, h, other harness.Host, ip, peerIP netip.Addr, start time.Time) {
	t.Helper()
	harness.Eventually(t, 2*time.Minute, func() error {
		ips, err := harness.ContainerIPs(ctx, h, "app", "keeper")
		if err != nil {
			return err
		}
		if ips["keeper"] != ip {
			return fmt.Errorf("keeper is back at %s, was %s", ips["keeper"], ip)
		}
		return nil
	})
	harness.Eventually(t, 60*time.Second, func() error { return harness.Ping(ctx, h, "keeper", peerIP) })
	harness.Eventually(t, 60*time.Second, func() error { return harness.Ping(ctx, other, "peer", ip) })
	t.Logf("keeper back at %s and reaching %s's container %s after the reboot", ip, other.Name(), time.Since(start).Round(time.Second))
}

// installService installs meshnetd on h from the release's .deb (dpkg -i, as an operator
// would), configures it to join seed, and starts its unit: Type=notify, so `systemctl enable
// --now` returns only once meshnetd told systemd READY=1. It checks that systemd sees the
// unit so and that the installed meshctl is the release's version, and purges the package
// when the test ends.
func installService(t *testing.T, ctx context.Context, c *harness.Cluster, h, seed harness.Host) {
	t.Helper()
	deb, version := buildRelease(t, ctx, filepath.Join(t.TempDir(), "release"))
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	const remoteDeb = "/var/tmp/meshnet-e2e.deb"
	if err := h.WriteFile(remoteDeb, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = h.Exec(ctx, "systemctl", "disable", "--now", "meshnetd")
		_, _ = h.Exec(ctx, "dpkg", "--purge", "meshnet")
		_, _ = h.Exec(ctx, "rm", "-f", remoteDeb)
		_, _ = h.Exec(ctx, "systemctl", "daemon-reload")
	})
	if out, err := h.Exec(ctx, "dpkg", "-i", remoteDeb); err != nil {
		t.Fatalf("dpkg -i the release's .deb on %s: %v\n%s", h.Name(), err, out)
	}
	// /usr/bin: the package's, not the harness's copy in /usr/local/bin.
	if out, err := h.Exec(ctx, "/usr/bin/meshctl", "--version"); err != nil || !strings.Contains(out, version) {
		t.Errorf("meshctl --version on %s after dpkg -i: %q (%v), want the release's %s", h.Name(), strings.TrimSpace(out), err, version)
	}
	env := strings.Join([]string{
		"MESHNET_JOIN=" + seed.Addr().String(),
		"MESHNET_KEY_FILE=" + harness.KeyFile,
		"MESHNET_ADVERTISE_ADDR=" + h.Addr().String(),
		"MESHNET_NODE_NAME=" + h.Name(),
		"MESHNET_DNS_UPSTREAM=none",
		"MESHNET_LOG_LEVEL=debug",
	}, "\n") + "\n"
	if err := h.WriteFile(harness.KeyFile, []byte(c.Key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.WriteFile("/etc/meshnet/meshnetd.env", []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out, err := h.Exec(ctx, "systemctl", "enable", "--now", "meshnetd"); err != nil {
		out2, _ := h.Exec(ctx, "journalctl", "-u", "meshnetd", "-n", "40", "--no-pager")
		t.Fatalf("starting meshnetd.service on %s: %v %s\n%s", h.Name(), err, out, out2)
	}
	out, err := h.Exec(ctx, "systemctl", "show", "-p", "Type", "-p", "ActiveState", "-p", "ExecMainPID", "meshnetd")
	if err != nil || !strings.Contains(out, "Type=notify") || !strings.Contains(out, "ActiveState=active") {
		t.Fatalf("meshnetd.service on %s after enable --now: %v\n%s", h.Name(), err, out)
	}
	t.Logf("%s: the release's .deb (%s) installed, meshnetd.service (Type=notify) ready %s after systemctl enable --now",
		h.Name(), filepath.Base(deb), time.Since(start).Round(time.Millisecond))
}
