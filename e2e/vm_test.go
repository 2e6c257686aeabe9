package e2e

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/e2e/harness"
)

// Tests only VMs can run: they need a kernel of the hosts' own (simulated hosts share the
// machine's kernel, which has no WireGuard module, netem or IPVS, and cannot reboot). On
// simulated hosts they skip and say why; on SSH hosts they run.

// requireOwnKernel skips t on simulated hosts, with the reason.
func requireOwnKernel(t *testing.T, what string) {
	t.Helper()
	if !remoteHosts() {
		t.Skipf("%s needs hosts with kernels of their own: simulated hosts share this machine's kernel. "+
			"Run it on VMs (`make e2e-vm`) or SSH hosts (MESHNET_E2E_HOSTS)", what)
	}
}

// TestKernelWireGuard is TestWireGuardOverlay on hosts whose kernel has the WireGuard module,
// and a mesh of both WireGuards: the first hosts run the kernel device (--wireguard-mode
// kernel: meshctl status says "kernel" and why), the last the embedded wireguard-go
// (--wireguard-mode userspace) beside a module it could load. Every pair of containers
// reaches, kernel to kernel and kernel to embedded; the underlay carries only WireGuard and
// gossip (no plaintext canary); a restarted meshnetd keeps its key and handshakes again; a
// dead host's peer is removed.
func TestKernelWireGuard(t *testing.T) {
	requireOwnKernel(t, "kernel WireGuard")
	c, hosts := meshHosts(t)
	requireWireGuardModule(t, hosts)
	start := time.Now()
	modes := map[string]string{}
	for i, h := range hosts {
		modes[h.Name()] = dataplane.ModeKernel
		if i == len(hosts)-1 {
			modes[h.Name()] = dataplane.ModeUserspace
		}
	}
	testWireGuardOverlay(t, c, hosts, modes)
	t.Logf("kernel WireGuard on %d hosts and the embedded one on 1 checked in %s", len(hosts)-1, time.Since(start).Round(time.Second))
}

// TestKernelWireGuardNoLoss is TestNoLossRestart over a wireguard network on hosts running
// the kernel module (--wireguard-mode kernel): a ping every 10 ms from a container on host2 to
// one on host1 across a SIGTERM restart of host1's meshnetd, then across a kill -9 with 60 s
// down, and not one lost. The kernel's device, keys and sessions outlive the daemon; a
// restarted meshnetd must adopt them as they are, not rebuild them (a new device or replaced
// peers would cost a handshake). The embedded WireGuard cannot do this: its device is
// meshnetd's own goroutines, gone with the process (dataplane/doc.go).
func TestKernelWireGuardNoLoss(t *testing.T) {
	requireOwnKernel(t, "kernel WireGuard")
	c, hosts := meshHosts(t)
	requireWireGuardModule(t, hosts)
	testNoLossRestart(t, c, hosts, []string{"--wireguard-mode", dataplane.ModeKernel}, []string{"-o", "dataplane=wireguard"})
	for _, h := range hosts[:2] {
		if wg := wireGuardStatus(t, testCtx(t), c, h); wg.Mode != dataplane.ModeKernel {
			t.Errorf("%s: WireGuard runs in mode %q (%s), want kernel", h.Name(), wg.Mode, wg.Reason)
		}
	}
}

// requireWireGuardModule fails t unless every host can load the WireGuard module.
func requireWireGuardModule(t *testing.T, hosts []harness.Host) {
	t.Helper()
	for _, h := range hosts {
		if out, err := h.Exec(testCtx(t), "modprobe", "wireguard"); err != nil {
			t.Fatalf("%s has no WireGuard module (kernel %s): %v %s", h.Name(), kernelOf(t, h), err, out)
		}
	}
}

func kernelOf(t *testing.T, h harness.Host) string {
	out, err := h.Exec(testCtx(t), "uname", "-r")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(out)
}

// TestIPv6OnlyNetwork needs engine 27 or newer (docker network create --ipv4=false): an
// IPv6-only meshnet network on every host, containers with one IPv6 address each, every
// pair reachable, and names resolving to those addresses through the engine's resolver path.
// Engine 20.10 (the simulated hosts, bookworm's guests) cannot make such a network: it
// always asks the IPAM driver for an IPv4 pool.
func TestIPv6OnlyNetwork(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	out, err := harness.Docker(ctx, hosts[0], "version", "--format", "{{.Server.Version}}")
	if err != nil {
		t.Fatal(err)
	}
	major, _, _ := strings.Cut(strings.TrimSpace(out), ".")
	if n, err := strconv.Atoi(major); err != nil || n < 27 {
		t.Skipf("engine %s cannot make IPv6-only networks (--ipv4=false came in 27): run on the sid image (VM_IMAGE=sid make e2e-vm)", strings.TrimSpace(out))
	}
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)
	subnet := netip.MustParsePrefix("fd43::/64")
	for _, h := range hosts {
		if _, err := harness.Docker(ctx, h, "network", "create", "-d", "meshnet", "--ipam-driver", "meshnet",
			"--ipv4=false", "--ipv6", "--subnet", subnet.String(), "--label", harness.Label, "v6only"); err != nil {
			t.Fatalf("creating the IPv6-only network on %s: %v", h.Name(), err)
		}
	}
	type ctr struct {
		h    harness.Host
		name string
		ip   netip.Addr
	}
	var ctrs []ctr
	for i, h := range hosts {
		name := fmt.Sprintf("v6o%d", i+1)
		if err := harness.RunContainer(ctx, h, name, "v6only", "--label", "meshnet.service=v6api"); err != nil {
			t.Fatalf("starting %s on %s: %v", name, h.Name(), err)
		}
		ips, err := harness.ContainerIPv6s(ctx, h, "v6only", name)
		if err != nil || !subnet.Contains(ips[name]) {
			t.Fatalf("%s on %s: no IPv6 address in %s: %v %v", name, h.Name(), subnet, ips, err)
		}
		ctrs = append(ctrs, ctr{h, name, ips[name]})
	}
	for _, a := range ctrs {
		for _, b := range ctrs {
			if a.name != b.name {
				harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, a.h, a.name, b.ip) })
			}
		}
	}
	harness.Eventually(t, 15*time.Second, func() error {
		out, err := harness.Docker(ctx, ctrs[0].h, "exec", ctrs[0].name, "getent", "ahosts", "v6api.meshnet")
		if err != nil {
			return fmt.Errorf("getent ahosts v6api.meshnet: %w: %s", err, out)
		}
		for _, x := range ctrs {
			if !strings.Contains(out, x.ip.String()+" ") {
				return fmt.Errorf("getent ahosts v6api.meshnet lacks %s of %s:\n%s", x.ip, x.name, out)
			}
		}
		return nil
	})
}
