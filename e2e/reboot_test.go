package e2e

import (
	"context"
	"fmt"
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
	requireOwnKernel(t, "a host reboot")
	if !vmHosts() {
		t.Skip("a reboot needs hosts the harness booted (MESHNET_E2E_VM): SSH hosts are not the suite's to reboot")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts[:2])
	h := hosts[2]
	installService(t, ctx, c, h, hosts[0])
	waitAllAlive(t, ctx, c, hosts, 60*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	ip := runContainer(t, ctx, h, "keeper", "app", "--restart", "always")
	peer := runContainer(t, ctx, hosts[0], "peer", "app")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h, "keeper", peer) })

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
	harness.Eventually(t, 60*time.Second, func() error { return harness.Ping(ctx, h, "keeper", peer) })
	harness.Eventually(t, 60*time.Second, func() error { return harness.Ping(ctx, hosts[0], "peer", ip) })
	t.Logf("keeper back at %s and reaching %s's container %s after the reboot", ip, hosts[0].Name(), time.Since(start).Round(time.Second))
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
