package e2e

import (
	"strings"
	"testing"
	"time"

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

// TestKernelWireGuard is TestWireGuardOverlay on hosts whose kernel has the WireGuard module:
// `-o dataplane=wireguard` must use the kernel device (meshctl status says "kernel" and why),
// every pair of containers reaches, the underlay carries only WireGuard and gossip (no
// plaintext canary), a restarted meshnetd keeps its key and handshakes again, a dead host's
// peer is removed.
func TestKernelWireGuard(t *testing.T) {
	requireOwnKernel(t, "kernel WireGuard")
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	for _, h := range hosts {
		if out, err := h.Exec(ctx, "modprobe", "wireguard"); err != nil {
			t.Fatalf("%s has no WireGuard module (kernel %s): %v %s", h.Name(), kernelOf(t, h), err, out)
		}
	}
	start := time.Now()
	testWireGuardOverlay(t, c, hosts, "kernel")
	t.Logf("kernel WireGuard on %d hosts checked in %s", len(hosts), time.Since(start).Round(time.Second))
}

func kernelOf(t *testing.T, h harness.Host) string {
	out, err := h.Exec(testCtx(t), "uname", "-r")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(out)
}
