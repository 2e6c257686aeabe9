package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestHarnessSanity checks the harness without meshnet: every host runs a Docker engine that
// answers, has the FORWARD policy DROP and br_netfilter on like a real Docker host, runs a
// busybox container, and reaches the other hosts over the underlay. On simulated hosts it also
// checks that the hosts are isolated from each other and from the machine, and that the
// teardown leaves nothing behind.
func TestHarnessSanity(t *testing.T) {
	if remoteHosts() {
		// On VMs the hosts are not the suite's to tear down: check them as they are.
		c := sharedCluster(t)
		checkHostsSane(t, testCtx(t), c)
		return
	}
	requireRoot(t)
	ctx := testCtx(t)
	start := time.Now()
	c, err := harness.NewSimCluster(ctx, harness.SimOptions{
		Hosts:   3,
		Subnet:  netip.MustParsePrefix("198.18.2.0/24"),
		WorkDir: filepath.Join(suite.workDir, "sanity"),
		Logger:  suite.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	track(c)
	up := time.Since(start)
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
		}
	})
	c.DumpOnFailure(t)

	checkHostsSane(t, ctx, c)
	checkSimIsolation(t, ctx, c)

	// What the teardown must remove.
	var pids []int
	for _, h := range c.Hosts {
		s := h.(*harness.SimHost)
		pids = append(pids, s.AnchorPID())
		for _, p := range h.Processes() {
			pids = append(pids, p.Pid())
		}
		for _, pf := range []string{"/run/docker/containerd/containerd.pid"} {
			if b, err := s.ReadFile(pf); err == nil {
				var pid int
				if _, err := fmt.Sscan(string(b), &pid); err == nil {
					pids = append(pids, pid)
				}
			}
		}
	}
	tdStart := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	closed = true
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	t.Logf("3 simulated hosts with Docker engines up in %s, torn down in %s",
		up.Round(time.Millisecond), time.Since(tdStart).Round(time.Millisecond))

	if links, err := harness.UnderlayLinks(c.Underlay); err != nil || len(links) > 0 {
		t.Errorf("links left behind: %v (%v)", links, err)
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("process %d of the cluster still running", pid)
		}
	}
	mi := readFile(t, "/proc/self/mountinfo")
	if strings.Contains(mi, c.WorkDir) {
		t.Errorf("mounts left under %s:\n%s", c.WorkDir, grepLines(mi, c.WorkDir))
	}
	if _, err := os.Stat(c.WorkDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s left behind (%v)", c.WorkDir, err)
	}
	suffix := strings.TrimPrefix(c.Underlay, "mnu-")
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/meshnet-e2e-" + suffix + "-*"); len(left) > 0 {
		t.Errorf("cgroups left behind: %v", left)
	}
	if !harness.RootBridgeNFInUse() {
		if v := strings.TrimSpace(readFile(t, "/proc/sys/net/bridge/bridge-nf-call-iptables")); v != strings.TrimSpace(rootNFAtStart) {
			t.Errorf("root namespace bridge-nf-call-iptables is %s after teardown, was %s before", v, rootNFAtStart)
		}
	}
}

// rootNFAtStart is the root namespace's bridge-nf-call-iptables before the suite touched it.
var rootNFAtStart = func() string {
	b, _ := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	return string(b)
}()

// checkHostsSane checks what every Docker host of the suite must offer.
func checkHostsSane(t *testing.T, ctx context.Context, c *harness.Cluster) {
	t.Helper()
	// The hosts at once: on emulated guests a container's start is seconds each.
	var wg sync.WaitGroup
	for _, h := range c.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			checkHostSane(t, ctx, c, h)
		}()
	}
	wg.Wait()
}

// checkHostSane is checkHostsSane for one host (t's Errorf is safe from its goroutine).
func checkHostSane(t *testing.T, ctx context.Context, c *harness.Cluster, h harness.Host) {
	if out, err := harness.Docker(ctx, h, "info", "--format", "{{.ServerVersion}}"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("docker info on %s: %q, %v", h.Name(), out, err)
	}
	if pol, err := harness.ForwardPolicy(ctx, h); err != nil || pol != "DROP" {
		t.Errorf("iptables FORWARD policy on %s is %q (%v), want DROP as on a real Docker host", h.Name(), pol, err)
	}
	if out, err := h.Exec(ctx, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("bridge-nf-call-iptables on %s is %q (%v), want 1 as on a real Docker host", h.Name(), out, err)
	}
	out, err := harness.Docker(ctx, h, "run", "--rm", "--label", harness.Label, harness.Image, "echo", "ok")
	if err != nil || strings.TrimSpace(out) != "ok" {
		t.Errorf("busybox container on %s's default bridge: %q, %v", h.Name(), out, err)
	}
	for _, o := range c.Hosts {
		if o == h {
			continue
		}
		if err := harness.HostPing(ctx, h, o.Addr()); err != nil {
			t.Errorf("%s cannot ping %s's underlay address: %v", h.Name(), o.Name(), err)
		}
	}
}

// checkSimIsolation checks what makes simulated hosts separate machines.
func checkSimIsolation(t *testing.T, ctx context.Context, c *harness.Cluster) {
	t.Helper()
	marker := fmt.Sprintf("/run/meshnet-e2e-marker-%d", time.Now().UnixNano())
	if err := c.Hosts[0].WriteFile(marker, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("%s written in %s is visible on the machine: /run is not private (%v)", marker, c.Hosts[0].Name(), err)
	}
	for _, h := range c.Hosts {
		if out, err := h.Exec(ctx, "hostname"); err != nil || strings.TrimSpace(out) != h.Name() {
			t.Errorf("hostname on %s: %q, %v", h.Name(), out, err)
		}
		// Its own sysfs: /sys/class/net shows the host's links.
		if out, err := h.Exec(ctx, "ls", "/sys/class/net"); err != nil || !strings.Contains(out, "eth0") || !strings.Contains(out, "docker0") {
			t.Errorf("/sys/class/net on %s: %q, %v", h.Name(), out, err)
		}
		// Nothing leaves the hosts: no default route.
		if out, err := h.Exec(ctx, "ip", "route", "get", "192.0.2.1"); err == nil {
			t.Errorf("%s has a route out of the underlay: %s", h.Name(), out)
		}
		_, err := h.Exec(ctx, "test", "-e", marker)
		if (h == c.Hosts[0]) != (err == nil) {
			t.Errorf("marker file on %s: exists=%v, want only on %s", h.Name(), err == nil, c.Hosts[0].Name())
		}
	}
	if v := strings.TrimSpace(readFile(t, "/proc/sys/net/bridge/bridge-nf-call-iptables")); v != "0" {
		t.Errorf("root namespace bridge-nf-call-iptables is %s while the underlay is up, want 0", v)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// running reports whether pid is a live process (not gone, not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
