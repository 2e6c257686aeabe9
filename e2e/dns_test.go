package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshnet/meshnet/e2e/harness"
)

const dnsAddr = "169.254.53.53"

// TestDNS checks service discovery end to end on three hosts: a client with --dns
// 169.254.53.53 gets every replica of a service on every host, in an order that rotates per
// query; container, network-qualified, tasks. and PTR names answer; a compose-labelled
// service works the same; a stopped replica and a dead host's replicas drop out of the
// answers; names outside the zone are forwarded for containers (failing over from a silent
// resolver) and refused to the underlay.
func TestDNS(t *testing.T) {
	if remoteHosts() {
		t.Skip("needs the simulated underlay: the test serves the upstream resolver on it")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	up := startUpstream(t, ctx, c, hosts[0].Addr())
	// host1 forwards to a silent resolver first, then to the test's.
	if _, err := c.StartMeshnet(ctx, hosts[0], "--dns-upstream", up.silent+","+up.addr); err != nil {
		t.Fatalf("starting meshnetd on %s: %v", hosts[0].Name(), err)
	}
	startMesh(t, ctx, c, hosts[1:])
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")

	replicas := map[string]netip.Addr{}
	for _, h := range hosts {
		for i := range 2 {
			name := fmt.Sprintf("api-%s-%d", h.Name(), i)
			replicas[name] = runContainer(t, ctx, h, name, "app", "--label", "meshnet.service=api", "--expose", "8080")
		}
	}
	web := map[string]netip.Addr{}
	for _, h := range hosts[1:] {
		name := "shop-web-" + h.Name()
		web[name] = runContainer(t, ctx, h, name, "app",
			"--label", "com.docker.compose.service=web", "--label", "com.docker.compose.project=shop")
	}
	h1 := hosts[0]
	runContainer(t, ctx, h1, "client", "app", "--dns", dnsAddr)
	client := containerNetns{h: h1, name: "client"}
	all := addrSet(replicas)

	// Every replica on every host, through the container's own resolver configuration too.
	harness.Eventually(t, 15*time.Second, func() error { return client.expectA(ctx, "api.meshnet", all) })
	out, err := harness.Docker(ctx, h1, "exec", "client", "nslookup", "api.meshnet")
	if err != nil {
		t.Fatalf("nslookup api.meshnet in the client (--dns %s): %v", dnsAddr, err)
	}
	for name, ip := range replicas {
		if !strings.Contains(out, ip.String()) {
			t.Errorf("nslookup api.meshnet in the client does not list %s (%s):\n%s", name, ip, out)
		}
	}

	t.Run("rotation", func(t *testing.T) {
		const queries = 120
		script := fmt.Sprintf("for i in $(seq %d); do dig +short +tries=1 +time=2 @%s api.meshnet A; echo --; done", queries, dnsAddr)
		out, err := client.exec(ctx, "sh", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		first := map[string]int{}
		for _, answer := range strings.Split(out, "--\n") {
			if f := strings.Fields(answer); len(f) > 0 {
				first[f[0]]++
			}
		}
		t.Logf("first address over %d queries: %v", queries, first)
		fair := queries / len(replicas)
		for name, ip := range replicas {
			if n := first[ip.String()]; n < fair/2 || n > fair*3/2 {
				t.Errorf("%s (%s) came first %d times in %d queries; want about %d", name, ip, n, queries, fair)
			}
		}
	})

	t.Run("names", func(t *testing.T) {
		one, oneIP := "api-"+hosts[1].Name()+"-0", replicas["api-"+hosts[1].Name()+"-0"]
		for _, tc := range []struct {
			name  string
			qtype string
			want  []string
			rcode string
		}{
			{"tasks.api.meshnet", "A", addrStrings(all), "NOERROR"},
			{"api.app.meshnet", "A", addrStrings(all), "NOERROR"},
			{one + ".meshnet", "A", []string{oneIP.String()}, "NOERROR"},
			{reverse(oneIP), "PTR", []string{one + ".meshnet."}, "NOERROR"},
			{"api.meshnet", "AAAA", nil, "NOERROR"},
			{"web.meshnet", "A", addrStrings(addrSet(web)), "NOERROR"},
			{"web.shop.meshnet", "A", addrStrings(addrSet(web)), "NOERROR"},
			{"nosuchservice.meshnet", "A", nil, "NXDOMAIN"},
			{"_8080._tcp.api.meshnet", "SRV", srvTargets(replicas), "NOERROR"},
		} {
			rcode, answers, err := client.dig(ctx, dnsAddr, tc.name, tc.qtype)
			if err != nil {
				t.Errorf("%s %s: %v", tc.name, tc.qtype, err)
				continue
			}
			sort.Strings(answers)
			want := slices.Clone(tc.want)
			sort.Strings(want)
			if rcode != tc.rcode || !slices.Equal(answers, want) {
				t.Errorf("%s %s: %s %v; want %s %v", tc.name, tc.qtype, rcode, answers, tc.rcode, want)
			}
		}
	})

	t.Run("recursion for containers only", func(t *testing.T) {
		start := time.Now()
		rcode, answers, err := client.dig(ctx, dnsAddr, "example.test", "A")
		took := time.Since(start)
		if err != nil || rcode != "NOERROR" || !slices.Equal(answers, []string{up.answer}) {
			t.Fatalf("example.test from a container: %s %v %v; want NOERROR [%s] from the upstream", rcode, answers, err, up.answer)
		}
		t.Logf("example.test forwarded for the client in %s (past a silent resolver)", took.Round(time.Millisecond))
		start = time.Now()
		if rcode, answers, err = client.dig(ctx, dnsAddr, "example.test", "A"); err != nil || rcode != "NOERROR" {
			t.Errorf("second query: %s %v %v", rcode, answers, err)
		}
		t.Logf("again in %s (the resolver that answered is asked first)", time.Since(start).Round(time.Millisecond))

		// From the underlay: the host's own namespace, then another host over the underlay.
		out, err := h1.Exec(ctx, "dig", "+tries=1", "+time=2", "@"+dnsAddr, "example.test", "A")
		if err != nil || !strings.Contains(out, "status: REFUSED") {
			t.Errorf("example.test asked from %s's underlay namespace: want REFUSED, got %v:\n%s", h1.Name(), err, out)
		}
		out, err = hosts[1].Exec(ctx, "dig", "+tries=1", "+time=2", "@"+h1.Addr().String(), "example.test", "A")
		if err == nil && strings.Contains(out, "status: NOERROR") {
			t.Errorf("%s answered example.test for %s over the underlay:\n%s", h1.Name(), hosts[1].Name(), out)
		}
		for _, src := range up.sources() {
			if src != h1.Addr() {
				t.Errorf("the upstream was asked by %s; only %s (for its containers) should forward", src, h1.Addr())
			}
		}
	})

	t.Run("stopped replica", func(t *testing.T) {
		gone := "api-" + hosts[1].Name() + "-1"
		if _, err := harness.Docker(ctx, hosts[1], "stop", "-t", "0", gone); err != nil {
			t.Fatal(err)
		}
		want := addrSet(replicas)
		delete(want, replicas[gone])
		took := client.waitA(t, ctx, "api.meshnet", want, 10*time.Second)
		t.Logf("stopped replica %s gone from the answers %s after docker stop returned", gone, took.Round(time.Millisecond))
		delete(replicas, gone)
	})

	t.Run("dead host", func(t *testing.T) {
		h3 := hosts[2]
		d := c.Daemon(h3)
		if err := d.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		want := map[netip.Addr]bool{}
		for name, ip := range replicas {
			if !strings.Contains(name, "-"+h3.Name()+"-") {
				want[ip] = true
			}
		}
		took := client.waitA(t, ctx, "api.meshnet", want, 60*time.Second)
		t.Logf("%s's replicas gone from the answers %s after its meshnetd was killed", h3.Name(), took.Round(time.Millisecond))
		if err := d.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		took = client.waitA(t, ctx, "api.meshnet", addrSet(replicas), 30*time.Second)
		t.Logf("back %s after its meshnetd restarted", took.Round(time.Millisecond))
	})
}

// containerNetns runs host tools (dig) in a container's network namespace.
type containerNetns struct {
	h    harness.Host
	name string
}

func (c containerNetns) exec(ctx context.Context, args ...string) (string, error) {
	pid, err := harness.Docker(ctx, c.h, "inspect", "-f", "{{.State.Pid}}", c.name)
	if err != nil {
		return "", err
	}
	return c.h.Exec(ctx, append([]string{"nsenter", "-t", strings.TrimSpace(pid), "-n", "--"}, args...)...)
}

// dig asks server for name and returns the rcode and the answers' data.
func (c containerNetns) dig(ctx context.Context, server, name, qtype string) (string, []string, error) {
	out, err := c.exec(ctx, "dig", "+tries=1", "+time=2", "+noall", "+comments", "+answer", "@"+server, name, qtype)
	if err != nil {
		return "", nil, err
	}
	rcode := ""
	var answers []string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "status: "); i >= 0 {
			rcode = strings.TrimSuffix(strings.Fields(line[i+len("status: "):])[0], ",")
		}
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		if f := strings.Fields(line); len(f) >= 5 {
			answers = append(answers, f[len(f)-1])
		}
	}
	return rcode, answers, nil
}

// expectA checks that name's A answer from meshnet's DNS address is exactly want.
func (c containerNetns) expectA(ctx context.Context, name string, want map[netip.Addr]bool) error {
	return c.expectAFrom(ctx, dnsAddr, name, want)
}

// expectAFrom checks that name's A answer from server is exactly want.
func (c containerNetns) expectAFrom(ctx context.Context, server, name string, want map[netip.Addr]bool) error {
	rcode, answers, err := c.dig(ctx, server, name, "A")
	if err != nil {
		return err
	}
	got := map[netip.Addr]bool{}
	for _, a := range answers {
		if ip, err := netip.ParseAddr(a); err == nil {
			got[ip] = true
		}
	}
	if rcode != "NOERROR" || len(got) != len(answers) || !mapsEqual(got, want) {
		return fmt.Errorf("%s from %s: %s %v; want %v", name, server, rcode, answers, addrStrings(want))
	}
	return nil
}

// waitA polls name at meshnet's DNS address every 20 ms until its answer is want and returns
// how long that took.
func (c containerNetns) waitA(t *testing.T, ctx context.Context, name string, want map[netip.Addr]bool, timeout time.Duration) time.Duration {
	t.Helper()
	return c.waitAFrom(t, ctx, dnsAddr, name, want, timeout)
}

// waitAFrom polls name at server every 20 ms until its answer is want and returns how long
// that took.
func (c containerNetns) waitAFrom(t *testing.T, ctx context.Context, server, name string, want map[netip.Addr]bool, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < timeout {
		if last = c.expectAFrom(ctx, server, name, want); last == nil {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", timeout, last)
	return 0
}

// srvTargets is what dig prints last on each SRV answer: the target, one per replica.
func srvTargets(replicas map[string]netip.Addr) []string {
	var out []string
	for name := range replicas {
		out = append(out, name+".meshnet.")
	}
	return out
}

func addrSet(m map[string]netip.Addr) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, ip := range m {
		out[ip] = true
	}
	return out
}

func addrStrings(m map[netip.Addr]bool) []string {
	var out []string
	for ip := range m {
		out = append(out, ip.String())
	}
	sort.Strings(out)
	return out
}

func mapsEqual(a, b map[netip.Addr]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func reverse(ip netip.Addr) string {
	name, _ := dns.ReverseAddr(ip.String())
	return name
}

// upstream is a resolver the test serves on the simulated underlay, in the root namespace:
// it answers every A question with one address and records who asked. silent is a socket
// that never answers, to check fail-over.
type upstream struct {
	addr, silent string
	answer       string
	mu           sync.Mutex
	asked        []netip.Addr
	names        []string // the questions asked, in order
}

// askedFor reports whether the upstream was asked for name (fully qualified).
func (u *upstream) askedFor(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Contains(u.names, name)
}

func (u *upstream) sources() []netip.Addr {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.asked)
}

// startUpstream gives the underlay bridge the subnet's first address in the root namespace
// (removed at the end) and serves DNS there.
func startUpstream(t *testing.T, ctx context.Context, c *harness.Cluster, hostAddr netip.Addr) *upstream {
	t.Helper()
	rootAddr := addRootUnderlayAddr(t, ctx, c, hostAddr)
	u := &upstream{answer: "192.0.2.53"}
	pc, err := net.ListenPacket("udp", netip.AddrPortFrom(rootAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.ListenPacket("udp", netip.AddrPortFrom(rootAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	u.addr, u.silent = pc.LocalAddr().String(), silent.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if ap, err := netip.ParseAddrPort(w.RemoteAddr().String()); err == nil {
			u.mu.Lock()
			u.asked = append(u.asked, ap.Addr())
			if len(r.Question) == 1 {
				u.names = append(u.names, r.Question[0].Name)
			}
			u.mu.Unlock()
		}
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " 30 IN A " + u.answer)
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return u
}

// addRootUnderlayAddr gives the underlay bridge the subnet's first address
// in the root namespace (removed at the end): a machine on the hosts'
// network that is not one of them.
func addRootUnderlayAddr(t *testing.T, ctx context.Context, c *harness.Cluster, hostAddr netip.Addr) netip.Addr {
	t.Helper()
	bits := 24 // the simulated underlay's, in either family
	if hostAddr.Is6() {
		bits = 64
	}
	subnet, err := hostAddr.Prefix(bits)
	if err != nil {
		t.Fatal(err)
	}
	rootAddr := subnet.Addr().Next()
	cidr := netip.PrefixFrom(rootAddr, bits).String()
	args := []string{"ip", "addr", "add", cidr, "dev", c.Underlay}
	if hostAddr.Is6() {
		args = append(args, "nodad")
	}
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("addressing the underlay bridge %s: %v %s", c.Underlay, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "addr", "del", cidr, "dev", c.Underlay).Run() })
	return rootAddr
}
