package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// vxlansendPath is where TestInjection puts its packet crafter on each host
// (each simulated host has its own /run).
const vxlansendPath = "/run/meshnet-e2e-vxlansend"

// installVXLANSend builds e2e/vxlansend (static) and writes it to each host.
func installVXLANSend(t *testing.T, ctx context.Context, hosts ...harness.Host) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Dir(filepath.Dir(file))
	out := filepath.Join(t.TempDir(), "vxlansend")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./e2e/vxlansend")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building vxlansend: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if err := h.WriteFile(vxlansendPath, bin, 0o755); err != nil {
			t.Fatalf("copying vxlansend to %s: %v", h.Name(), err)
		}
	}
}

// vniOf returns the VNI of the meshnet vxlan device on h (the test's one network).
func vniOf(ctx context.Context, h harness.Host) (string, error) {
	out, err := h.Exec(ctx, "ip", "-o", "link", "show", "type", "vxlan")
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`\bmnvx(\d+)\b`).FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no meshnet vxlan device on %s:\n%s", h.Name(), out)
	}
	return m[1], nil
}

// ruleCounter returns the packet counter of the table inet meshnet rule whose comment is
// comment, in chain.
func ruleCounter(ctx context.Context, h harness.Host, chain, comment string) (int, error) {
	out, err := h.Exec(ctx, "nft", "list", "chain", "inet", "meshnet", chain)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `comment "`+comment+`"`) {
			if m := nftPackets.FindStringSubmatch(line); m != nil {
				return strconv.Atoi(m[1])
			}
		}
	}
	return 0, fmt.Errorf("no rule %q in chain %s on %s:\n%s", comment, chain, h.Name(), out)
}

// TestInjection sends forged VXLAN packets (the VNI of a real network, the inner MAC and
// address of a real container on host2, the inner source of a real container on host1) to
// host2's VXLAN port from everywhere an attacker on a member host could: a container on
// Docker's default bridge, a container on the meshnet network, an unprivileged process and a
// root process on host1, a container on host2's default bridge forging host1's address, and a
// host outside the mesh. A counter in the target container's namespace, one per case (the
// inner UDP source port tells them apart), must stay at zero. The control comes last: a root
// process on host1 with meshnet's overlay mark on its socket (what only CAP_NET_ADMIN can set)
// gets its packets through, which shows the packets are well made and that anything sent
// before them has had its chance to arrive.
func TestInjection(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	h1, h2 := hosts[0], hosts[1]
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	src := runContainer(t, ctx, h1, "inj-src", "app")
	runContainer(t, ctx, h2, "inj-target", "app")
	target, err := harness.ContainerEndpoint(ctx, h2, "inj-target", "app")
	if err != nil {
		t.Fatal(err)
	}
	srcEP, err := harness.ContainerEndpoint(ctx, h1, "inj-src", "app")
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, h1, "inj-src", target.IP) })
	vni, err := vniOf(ctx, h2)
	if err != nil {
		t.Fatal(err)
	}
	outsiders := c.Hosts[3:]
	installVXLANSend(t, ctx, append([]harness.Host{h1, h2}, outsiders...)...)

	// The capture: one counter per inner source port, before conntrack, in the target's
	// own namespace.
	tgt := containerNetns{h: h2, name: "inj-target"}
	const firstPort, controlPort = 40001, 40009
	script := "add table ip inject\nadd chain ip inject pre { type filter hook prerouting priority -300; }\n"
	for p := firstPort; p <= controlPort; p++ {
		script += fmt.Sprintf("add rule ip inject pre udp sport %d counter\n", p)
	}
	if _, err := tgt.exec(ctx, "sh", "-c", "printf '"+script+"' | nft -f -"); err != nil {
		t.Fatalf("counters in the target container: %v", err)
	}
	counts := func() (map[int]int, error) {
		out, err := tgt.exec(ctx, "nft", "list", "chain", "ip", "inject", "pre")
		if err != nil {
			return nil, err
		}
		m := map[int]int{}
		for _, g := range regexp.MustCompile(`udp sport (\d+) counter packets (\d+)`).FindAllStringSubmatch(out, -1) {
			p, _ := strconv.Atoi(g[1])
			n, _ := strconv.Atoi(g[2])
			m[p] = n
		}
		return m, nil
	}

	const n = 20
	args := func(port int, extra ...string) []string {
		return append([]string{
			"-to", netip.AddrPortFrom(h2.Addr(), 4789).String(), "-vni", vni,
			"-dst-mac", target.MAC, "-dst-ip", target.IP.String(),
			"-src-mac", srcEP.MAC, "-src-ip", src.String(),
			"-sport", strconv.Itoa(port), "-count", strconv.Itoa(n),
		}, extra...)
	}
	inDocker0 := func(h harness.Host, port int, extra ...string) (string, error) {
		return harness.Docker(ctx, h, append([]string{"run", "--rm", "--label", harness.Label, "--network", "bridge",
			"-v", vxlansendPath + ":/vxlansend:ro", harness.Image, "/vxlansend"}, args(port, extra...)...)...)
	}
	// meshnet's drop counters on host1, read before and after: secondary to the target's
	// counters (a missing rule is reported, the sending goes on).
	const fwdRule, outRule = "meshnet: tunnel udp 4789 drop forwarded to ip members", "meshnet: tunnel udp 4789 drop host sockets to ip members"
	drops := func() (fwd, out int) {
		var err error
		if fwd, err = ruleCounter(ctx, h1, "forward", fwdRule); err != nil {
			t.Error(err)
		}
		if out, err = ruleCounter(ctx, h1, "localout", outRule); err != nil {
			t.Error(err)
		}
		return fwd, out
	}
	fwdBefore, outBefore := drops()
	cases := []struct {
		port int
		what string
		send func(port int) (string, error)
	}{
		{40001, "a container on host1's default bridge", func(p int) (string, error) { return inDocker0(h1, p) }},
		{40002, "a container on host1's meshnet network", func(p int) (string, error) {
			return harness.Docker(ctx, h1, append([]string{"run", "--rm", "--label", harness.Label, "--network", "app",
				"-v", vxlansendPath + ":/vxlansend:ro", harness.Image, "/vxlansend"}, args(p)...)...)
		}},
		{40003, "an unprivileged process on host1 (uid 65534)", func(p int) (string, error) {
			return h1.Exec(ctx, append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", vxlansendPath}, args(p)...)...)
		}},
		{40004, "a root process on host1", func(p int) (string, error) {
			return h1.Exec(ctx, append([]string{vxlansendPath}, args(p)...)...)
		}},
		{40005, "a container on host2's default bridge forging host1's address", func(p int) (string, error) {
			return inDocker0(h2, p, "-spoof", h1.Addr().String())
		}},
	}
	if len(outsiders) > 0 {
		o := outsiders[0]
		cases = append(cases, struct {
			port int
			what string
			send func(port int) (string, error)
		}{40006, "host " + o.Name() + ", outside the mesh", func(p int) (string, error) {
			return o.Exec(ctx, append([]string{vxlansendPath}, args(p)...)...)
		}})
	}
	for _, tc := range cases {
		out, err := tc.send(tc.port)
		if err != nil {
			t.Fatalf("sending from %s: %v", tc.what, err)
		}
		t.Logf("from %s: %s", tc.what, strings.TrimSpace(out))
	}

	// The control, sent last.
	out, err := h1.Exec(ctx, append([]string{vxlansendPath}, args(controlPort, "-mark", "0x01000000")...)...)
	if err != nil {
		t.Fatalf("control: %v", err)
	}
	t.Logf("control, a root process on host1 with the overlay mark: %s", strings.TrimSpace(out))
	var got map[int]int
	harness.Eventually(t, 15*time.Second, func() error {
		var err error
		if got, err = counts(); err != nil {
			return err
		}
		if got[controlPort] != n {
			return fmt.Errorf("the control's packets reached the target %d times, want %d", got[controlPort], n)
		}
		return nil
	})
	for _, tc := range cases {
		if got[tc.port] != 0 {
			t.Errorf("%d forged packets from %s reached the target container", got[tc.port], tc.what)
		}
	}
	// And they were dropped where meshnet drops them, not lost on the way.
	fwdAfter, outAfter := drops()
	if fwdAfter-fwdBefore < 2*n {
		t.Errorf("host1's forward drop counted %d packets from its containers, want at least %d", fwdAfter-fwdBefore, 2*n)
	}
	if outAfter-outBefore < 2*n {
		t.Errorf("host1's host-socket drop counted %d packets, want at least %d", outAfter-outBefore, 2*n)
	}
	t.Logf("dropped on host1: %d forwarded, %d from host sockets", fwdAfter-fwdBefore, outAfter-outBefore)
}

// fetchFrom asks the CGI at addr:port from inside a container (the host's curl in the
// container's network namespace: busybox's wget -T crashes) and returns the client address
// the server saw.
func fetchFrom(ctx context.Context, h harness.Host, container string, addr netip.Addr, port uint16) (string, error) {
	out, err := containerNetns{h: h, name: container}.exec(ctx, "curl", "-sS", "-m", "3",
		fmt.Sprintf("http://%s/cgi-bin/ip", netip.AddrPortFrom(addr, port)))
	return clientAddr(out), err
}

// expectFetch waits until container on h reaches addr:port.
func expectFetch(t *testing.T, ctx context.Context, h harness.Host, container string, addr netip.Addr, port uint16) {
	t.Helper()
	harness.Eventually(t, 20*time.Second, func() error {
		if _, err := fetchFrom(ctx, h, container, addr, port); err != nil {
			return fmt.Errorf("%s on %s -> %s:%d: %w", container, h.Name(), addr, port, err)
		}
		return nil
	})
}

// waitBypass waits up to 5 s (far less than the 30-second re-sync) for
// meshctl status on h to say the bridge bypass is want (a prefix).
func waitBypass(t *testing.T, ctx context.Context, c *harness.Cluster, h harness.Host, want string) {
	t.Helper()
	harness.Eventually(t, 5*time.Second, func() error {
		out, err := c.MeshctlStatus(ctx, h)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "Bridge bypass:"); ok {
				if v = strings.TrimSpace(v); !strings.HasPrefix(v, want) {
					return fmt.Errorf("%s: bridge bypass %q, want %q", h.Name(), v, want)
				}
				return nil
			}
		}
		return fmt.Errorf("%s: meshctl status has no bridge bypass line:\n%s", h.Name(), out)
	})
}

// expectNoFetch waits until container on h no longer reaches addr:port.
func expectNoFetch(t *testing.T, ctx context.Context, h harness.Host, container string, addr netip.Addr, port uint16) {
	t.Helper()
	harness.Eventually(t, 20*time.Second, func() error {
		if got, err := fetchFrom(ctx, h, container, addr, port); err == nil {
			return fmt.Errorf("%s on %s -> %s:%d answered (client %q)", container, h.Name(), addr, port, got)
		}
		return nil
	})
}

// TestOperatorFirewall: the operator's own DOCKER-USER drops apply to meshnet containers
// (one for a meshnet container's address, one for an address outside, as for a cloud
// metadata service), the default bridge bypass yielding to them within seconds; containers
// on Docker's default bridge and on a meshnet network cannot open connections to each other
// in either direction, while a published port stays reachable; meshnetd
// --allow-docker-bridges lets them connect.
func TestOperatorFirewall(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	ds := startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	// The operator's rule comes first, as a host's own firewall does (set at boot, before
	// any container): meshnet's accepts, made later, must not overrule it.
	early := []string{"DOCKER-USER", "-d", h3.Addr().String() + "/32", "-j", "DROP"}
	if _, err := h1.Exec(ctx, append([]string{"iptables", "-I"}, early...)...); err != nil {
		t.Fatal(err)
	}
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	for _, w := range []struct {
		h             harness.Host
		name, network string
		extra         []string
	}{
		{h1, "web1", "app", []string{"-p", "8081:8080"}},
		{h2, "web2", "app", nil},
		{h1, "d0", "bridge", nil},
	} {
		if out, err := runWeb(ctx, w.h, w.name, w.network, w.extra...); err != nil {
			t.Fatalf("starting %s on %s: %v\n%s", w.name, w.h.Name(), err, out)
		}
	}
	var web1, d0 netip.Addr
	addrs := func(t *testing.T) {
		t.Helper()
		var err error
		if web1, err = harness.ContainerIP(ctx, h1, "web1", "app"); err != nil {
			t.Fatal(err)
		}
		if d0, err = harness.ContainerIP(ctx, h1, "d0", "bridge"); err != nil {
			t.Fatal(err)
		}
	}
	addrs(t)

	// Docker's jumps first, meshnet's accepts after them.
	checkOrder := func(t *testing.T) {
		t.Helper()
		fwd, err := h1.Exec(ctx, "iptables", "-S", "FORWARD")
		if err != nil {
			t.Fatal(err)
		}
		jump := strings.Index(fwd, "-A FORWARD -j DOCKER-USER")
		first := strings.Index(fwd, "meshnet:")
		if jump < 0 || first < 0 || first < jump || strings.Count(fwd, "-A FORWARD -j DOCKER-USER") != 1 {
			t.Errorf("host1 FORWARD: want one jump to DOCKER-USER ahead of meshnet's accepts:\n%s", fwd)
		}
		t.Logf("host1 FORWARD:\n%s", fwd)
	}

	composed := func(t *testing.T) {
		checkOrder(t)
		expectFetch(t, ctx, h2, "web2", web1, 8080) // across hosts
		harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, h1, "web1", h3.Addr()) })
		t.Run("DOCKER-USER drops apply", func(t *testing.T) {
			for _, addr := range []netip.Addr{web1, h3.Addr()} {
				rule := []string{"DOCKER-USER", "-d", addr.String() + "/32", "-j", "DROP"}
				if _, err := h1.Exec(ctx, append([]string{"iptables", "-I"}, rule...)...); err != nil {
					t.Fatal(err)
				}
				if addr == web1 {
					expectNoFetch(t, ctx, h2, "web2", web1, 8080)
					expectNoFetch(t, ctx, h1, "d0", h1.Addr(), 8081) // published, DNATed to it
				} else {
					harness.Eventually(t, 15*time.Second, func() error { return pingFails(ctx, h1, "web1", addr) })
				}
				if _, err := h1.Exec(ctx, append([]string{"iptables", "-D"}, rule...)...); err != nil {
					t.Fatal(err)
				}
			}
			expectFetch(t, ctx, h2, "web2", web1, 8080)
			harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, h1, "web1", h3.Addr()) })
		})
		t.Run("docker0 and meshnet apart", func(t *testing.T) {
			expectNoFetch(t, ctx, h1, "d0", web1, 8080)
			expectNoFetch(t, ctx, h1, "web1", d0, 8080)
			expectFetch(t, ctx, h1, "d0", h1.Addr(), 8081) // the published port stays reachable
		})
	}
	t.Run("a DOCKER-USER drop made before the network", func(t *testing.T) {
		expectFetch(t, ctx, h2, "web2", web1, 8080) // the overlay works
		waitBypass(t, ctx, c, h1, "off (auto: DOCKER-USER holds 1 rule")
		harness.Eventually(t, 15*time.Second, func() error { return pingFails(ctx, h1, "web1", h3.Addr()) })
		if _, err := h1.Exec(ctx, append([]string{"iptables", "-D"}, early...)...); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, h1, "web1", h3.Addr()) })
	})
	t.Run("composed", composed)
	if t.Failed() {
		t.FailNow()
	}

	// meshnetd's default bridge bypass (auto) hands the network's traffic
	// past host1's bridge while DOCKER-USER is empty, and yields the
	// moment the operator adds a rule: the very next connection meets it,
	// not one after the next 30-second re-sync.
	t.Run("the auto bridge bypass yields to DOCKER-USER", func(t *testing.T) {
		waitBypass(t, ctx, c, h1, "on (auto")
		before := bypassed(t, ctx, c, h1)
		expectFetch(t, ctx, h2, "web2", web1, 8080)
		if after := bypassed(t, ctx, c, h1); after <= before {
			t.Errorf("host1 handed no frame past its bridge with an empty DOCKER-USER (%d before, %d after)", before, after)
		}
		rule := []string{"DOCKER-USER", "-d", web1.String() + "/32", "-j", "DROP"}
		start := time.Now()
		if _, err := h1.Exec(ctx, append([]string{"iptables", "-I"}, rule...)...); err != nil {
			t.Fatal(err)
		}
		waitBypass(t, ctx, c, h1, "off (auto: DOCKER-USER holds 1 rule")
		t.Logf("host1's bypass off %v after the rule was inserted", time.Since(start).Round(time.Millisecond))
		if got, err := fetchFrom(ctx, h2, "web2", web1, 8080); err == nil {
			t.Errorf("web2 reached web1 through host1's DOCKER-USER drop (as %q)", got)
		}
		if _, err := h1.Exec(ctx, append([]string{"iptables", "-D"}, rule...)...); err != nil {
			t.Fatal(err)
		}
		waitBypass(t, ctx, c, h1, "on (auto")
		expectFetch(t, ctx, h2, "web2", web1, 8080)
	})

	// The engine re-inserts its jumps when it starts: still composed.
	t.Run("after an engine restart", func(t *testing.T) {
		if err := h1.KillEngine(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h1.StartEngine(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := harness.Docker(ctx, h1, "start", "web1", "d0"); err != nil {
			t.Fatal(err)
		}
		addrs(t)
		composed(t)
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("allowed", func(t *testing.T) {
		if err := ds[0].Kill(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.StartMeshnet(ctx, h1, "--allow-docker-bridges"); err != nil {
			t.Fatalf("restarting meshnetd on host1 with --allow-docker-bridges: %v", err)
		}
		expectFetch(t, ctx, h1, "d0", web1, 8080)
		expectFetch(t, ctx, h1, "web1", d0, 8080)
		expectFetch(t, ctx, h2, "web2", web1, 8080)
	})
}
