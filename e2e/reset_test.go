package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestResetAfterCrash checks the suite's isolation between tests when a test leaves a mess:
// meshnetd killed while its network and a container exist (the engine cannot delete a network
// whose driver is gone). Reset must return the host to a clean engine where the next test can
// create the same network again: by bringing the daemon back for the cleanup, or, when it
// cannot come back, by giving the host a fresh engine.
func TestResetAfterCrash(t *testing.T) {
	for _, tc := range []struct {
		name string
		// breakIt makes the crashed daemon unable to start again.
		breakIt bool
	}{
		{"daemon revived", false},
		{"engine recycled", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, hosts := meshHosts(t)
			ctx := testCtx(t)
			h := hosts[0]
			if tc.breakIt && c.Backend != "sim" {
				t.Skip("only simulated hosts get a fresh engine")
			}
			d, err := c.StartMeshnet(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			createNetworkEverywhere(t, ctx, []harness.Host{h}, "app", "10.42.0.0/24")
			runContainer(t, ctx, h, "leftover", "app")
			if err := d.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.breakIt {
				if err := h.WriteFile(harness.KeyFile, []byte("not a key\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			if err := c.Reset(ctx); err != nil {
				t.Fatalf("reset after a crashed daemon: %v", err)
			}
			t.Logf("reset took %s", time.Since(start).Round(time.Millisecond))
			out, err := harness.Docker(ctx, h, "network", "ls", "--format", "{{.Name}}")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out, "app") {
				t.Fatalf("network app survived the reset:\n%s", out)
			}
			if out, err := harness.Docker(ctx, h, "ps", "-aq"); err != nil || strings.TrimSpace(out) != "" {
				t.Fatalf("containers survived the reset: %q %v", out, err)
			}
			if pol, err := harness.ForwardPolicy(ctx, h); err != nil || pol != "DROP" {
				t.Errorf("FORWARD policy after the reset: %q %v", pol, err)
			}
			// The host works as before: a daemon, the same network, a container.
			if _, err := c.StartMeshnet(ctx, h); err != nil {
				t.Fatal(err)
			}
			createNetworkEverywhere(t, ctx, []harness.Host{h}, "app", "10.42.0.0/24")
			runContainer(t, ctx, h, "fresh", "app")
			ep, err := harness.ContainerEndpoint(ctx, h, "fresh", "app")
			if err != nil {
				t.Fatal(err)
			}
			harness.Eventually(t, 10*time.Second, func() error { return harness.Ping(ctx, h, "fresh", ep.Gateway) })
		})
	}
}
