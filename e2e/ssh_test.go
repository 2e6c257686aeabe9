package e2e

import (
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestSSHBackend proves the SSH backend on this machine: an OpenSSH server runs in each of
// three simulated hosts, and a cluster made with NewSSHCluster (exactly as for VMs) passes the
// sanity checks and runs meshnet.
func TestSSHBackend(t *testing.T) {
	requireRoot(t)
	ctx := testCtx(t)
	sim, err := harness.NewSimCluster(ctx, harness.SimOptions{
		Hosts:       3,
		Subnet:      netip.MustParsePrefix("198.18.1.0/24"),
		RootAddress: true, // the test process reaches sshd over the underlay
		WorkDir:     filepath.Join(suite.workDir, "ssh-sim"),
		Logger:      suite.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	track(sim)
	t.Cleanup(func() { sim.Close() })
	spec, key, err := sim.ServeSSH(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MESHNET_E2E_HOSTS=%s", spec)
	c, err := harness.NewSSHCluster(ctx, spec, harness.SSHOptions{
		KeyPath: key,
		// The simulated hosts share the machine's /usr/local/bin and /var/log; their /run is
		// their own.
		BinDir:  "/run/e2e-ssh/bin",
		LogDir:  "/run/e2e-ssh/log",
		WorkDir: filepath.Join(suite.workDir, "ssh"),
		Logger:  suite.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	track(c)
	t.Cleanup(func() { c.Close() })
	c.DumpOnFailure(t)

	t.Run("harness", func(t *testing.T) {
		for i, h := range c.Hosts {
			if h.Name() != sim.Hosts[i].Name() || h.Addr() != sim.Hosts[i].Addr() {
				t.Errorf("SSH host %d is %s at %s, want %s at %s", i, h.Name(), h.Addr(), sim.Hosts[i].Name(), sim.Hosts[i].Addr())
			}
		}
		checkHostsSane(t, ctx, c)

		h := c.Hosts[0]
		// Arguments survive the remote shell unchanged.
		args := []string{"a b", "$HOME", "it's", `"q"`, "*", ""}
		out, err := h.Exec(ctx, append([]string{"printf", "[%s]"}, args...)...)
		if want := "[a b][$HOME][it's][\"q\"][*][]"; err != nil || out != want {
			t.Errorf("printf over ssh: %q, %v; want %q", out, err, want)
		}
		// A failing command's error carries its output.
		if _, err := h.Exec(ctx, "sh", "-c", "echo broken-thing >&2; exit 3"); err == nil || !strings.Contains(err.Error(), "broken-thing") {
			t.Errorf("failing command over ssh: %v", err)
		}
		data := []byte("line one\nit's $x\n")
		if err := h.WriteFile("/run/e2e-ssh/dir/file", data, 0o640); err != nil {
			t.Fatal(err)
		}
		if out, err := h.Exec(ctx, "stat", "-c", "%a", "/run/e2e-ssh/dir/file"); err != nil || strings.TrimSpace(out) != "640" {
			t.Errorf("mode of written file: %q, %v", out, err)
		}
		if got, err := sim.Hosts[0].(*harness.SimHost).ReadFile("/run/e2e-ssh/dir/file"); err != nil || string(got) != string(data) {
			t.Errorf("file written over ssh reads %q (%v) in the host", got, err)
		}
		// Background processes: started, logged, signalled, waited for.
		p, err := h.Start(ctx, "sleeper", "sh", "-c", "echo started; exec sleep 300")
		if err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 10*time.Second, func() error {
			if !strings.Contains(p.LogTail(5), "started") {
				return errorf("log of sleeper: %q", p.LogTail(5))
			}
			return nil
		})
		if p.Exited() {
			t.Fatal("sleeper exited at once")
		}
		if err := p.Kill(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(ctx); err != nil || !p.Exited() {
			t.Errorf("sleeper after SIGTERM: exited=%v, %v", p.Exited(), err)
		}
	})

	t.Run("meshnet", func(t *testing.T) {
		c.Bin = binaries(t)
		startMesh(t, ctx, c, c.Hosts)
		waitAllAlive(t, ctx, c, c.Hosts, 15*time.Second)
	})
}
