package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	mdns "github.com/miekg/dns"
)

// testNetNS makes a named network namespace with lo up, as the engine
// makes a container's, and removes it when the test ends.
func testNetNS(t *testing.T) (name, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces (make kernel)")
	}
	name = fmt.Sprintf("mnsbtest%d", os.Getpid())
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name, "/run/netns/" + name
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// fakeDockerResolver stands in for the engine's embedded resolver: a
// server on 127.0.0.11 inside the namespace that knows "docker-only." and
// nothing else, reached through the same kind of DNAT the engine installs
// (iptables nat, priority -100).
func fakeDockerResolver(t *testing.T, name, path string) {
	t.Helper()
	ns, ok, err := openNetNS(path)
	if !ok || err != nil {
		t.Fatalf("open %s: %v %v", path, ok, err)
	}
	defer ns.Close()
	udp, tcp, err := listenIn(ns, dockerResolver)
	if err != nil {
		t.Fatal(err)
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if strings.EqualFold(r.Question[0].Name, "docker-only.") && r.Question[0].Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR("docker-only. 600 IN A 10.99.0.1")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	us := &mdns.Server{PacketConn: udp, Handler: h}
	ts := &mdns.Server{Listener: tcp, Handler: h}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { _ = us.Shutdown(); _ = ts.Shutdown() })
	rules := fmt.Sprintf(`table ip dockernat {
	chain output { type nat hook output priority -100;
		ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:%d
		ip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:%d
	}
}`, udp.LocalAddr().(*net.UDPAddr).Port, tcp.Addr().(*net.TCPAddr).Port)
	cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
}

// dig asks 127.0.0.11 from inside the namespace, as a container's libc does.
func dig(name, qname string, tcp bool) []string {
	args := []string{"netns", "exec", name, "dig", "+short", "+tries=1", "+time=1", "@127.0.0.11", qname}
	if tcp {
		args = append(args, "+tcp")
	}
	out, _ := exec.Command("ip", args...).Output()
	f := strings.Fields(string(out))
	slices.Sort(f)
	return f
}

func eventually(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testTable() *dns.Table {
	app := netip.MustParsePrefix("10.42.0.0/16")
	other := netip.MustParsePrefix("10.50.0.0/16")
	return dns.NewTable("", []dns.Entry{
		{Container: "a1", Services: []string{"api"}, Subnet: app, Addr: netip.MustParseAddr("10.42.0.2")},
		{Container: "a2", Services: []string{"api"}, Subnet: app, Addr: netip.MustParseAddr("10.42.1.2")},
		{Container: "a3", Services: []string{"api"}, Subnet: app, Addr: netip.MustParseAddr("10.42.2.2")},
		{Container: "hidden", Subnet: other, Addr: netip.MustParseAddr("10.50.0.2")},
	})
}

// TestContainerDNS: the container's own queries to 127.0.0.11 reach
// meshnet, which answers its networks' bare names with every replica and
// hands everything else to Docker's resolver; a clean stop hands the
// container back to Docker at once.
func TestContainerDNS(t *testing.T) {
	name, path := testNetNS(t)
	fakeDockerResolver(t, name, path)
	if got := dig(name, "docker-only", false); !slices.Equal(got, []string{"10.99.0.1"}) {
		t.Fatalf("the stand-in for Docker's resolver answers %v", got)
	}

	m := New(Config{}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	m.SetTable(testTable())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	start := time.Now()
	m.Attach(path, "ep1", netip.MustParsePrefix("10.42.0.0/16"))

	replicas := []string{"10.42.0.2", "10.42.1.2", "10.42.2.2"}
	eventually(t, "bare name answered by meshnet", 2*time.Second, func() bool {
		return slices.Equal(dig(name, "api", false), replicas)
	})
	t.Logf("serving %v after Attach", time.Since(start).Round(time.Millisecond))
	if got := dig(name, "api", true); !slices.Equal(got, replicas) {
		t.Errorf("api over TCP: %v, want %v", got, replicas)
	}
	if got := dig(name, "docker-only", false); !slices.Equal(got, []string{"10.99.0.1"}) {
		t.Errorf("a name only Docker knows: %v, want it from Docker's resolver", got)
	}
	if got := dig(name, "docker-only", true); !slices.Equal(got, []string{"10.99.0.1"}) {
		t.Errorf("a name only Docker knows, over TCP: %v", got)
	}
	if got := dig(name, "hidden", false); len(got) != 0 {
		t.Errorf("another network's name: %v, want nothing", got)
	}
	// A table change is seen at once.
	m.SetTable(dns.NewTable("", nil))
	if got := dig(name, "api", false); len(got) != 0 {
		t.Errorf("after the replicas left: %v", got)
	}
	m.SetTable(testTable())
	// The last endpoint leaving takes the redirect away.
	m.Detach("ep1")
	eventually(t, "redirect removed after Detach", 2*time.Second, func() bool {
		return len(dig(name, "api", false)) == 0 && slices.Equal(dig(name, "docker-only", false), []string{"10.99.0.1"})
	})

	m.Attach(path, "ep2", netip.MustParsePrefix("10.42.0.0/16"))
	eventually(t, "served again", 2*time.Second, func() bool { return len(dig(name, "api", false)) == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", name, "nft", "list", "table", "ip", tableName).CombinedOutput(); err == nil {
		t.Errorf("after a clean stop the redirect is still there:\n%s", out)
	}
	if got := dig(name, "docker-only", false); !slices.Equal(got, []string{"10.99.0.1"}) {
		t.Errorf("after a clean stop Docker's resolver answers %v", got)
	}
}

// TestContainerDNSLease: a daemon that stops renewing (killed) leaves a
// redirect that lapses, and the container's DNS is Docker's again.
func TestContainerDNSLease(t *testing.T) {
	name, path := testNetNS(t)
	fakeDockerResolver(t, name, path)
	m := New(Config{Lease: 600 * time.Millisecond}, nil)
	m.SetTable(testTable())
	// No Run: nobody renews, as after kill -9.
	m.Attach(path, "ep1", netip.MustParsePrefix("10.42.0.0/16"))
	eventually(t, "served", 2*time.Second, func() bool { return len(dig(name, "api", false)) == 3 })
	time.Sleep(time.Second)
	if got := dig(name, "docker-only", false); !slices.Equal(got, []string{"10.99.0.1"}) {
		t.Errorf("after the lease: Docker's resolver answers %v, want 10.99.0.1", got)
	}
	if got := dig(name, "api", false); len(got) != 0 {
		t.Errorf("after the lease meshnet still answers: %v", got)
	}
	m.Close()
}

// TestSandboxKeyAppearsLater: the engine names the sandbox key in Join
// before it mounts the namespace there (engine 20.10).
func TestSandboxKeyAppearsLater(t *testing.T) {
	name, path := testNetNS(t)
	fakeDockerResolver(t, name, path)
	key := t.TempDir() + "/sandbox"
	m := New(Config{}, nil)
	defer m.Close()
	m.SetTable(testTable())
	m.Attach(key, "ep1", netip.MustParsePrefix("10.42.0.0/16"))
	time.Sleep(100 * time.Millisecond)
	if err := os.WriteFile(key, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	run(t, "mount", "--bind", path, key)
	t.Cleanup(func() { _ = exec.Command("umount", key).Run() })
	eventually(t, "served once the namespace is mounted", 2*time.Second, func() bool { return len(dig(name, "api", false)) == 3 })
}

// TestContainerVIPs: a container gets the VIPs of its own networks as a
// table in its namespace, rewritten when they change; the table stays when
// meshnetd stops (the container keeps reaching its services) and goes when
// the container leaves its last meshnet network. That the table balances
// is dataplane's TestClientVIP.
func TestContainerVIPs(t *testing.T) {
	name, path := testNetNS(t)
	fakeDockerResolver(t, name, path)
	table := func() string {
		out, err := exec.Command("ip", "netns", "exec", name, "nft", "list", "table", "ip", "meshnet-vip").CombinedOutput()
		if err != nil {
			return ""
		}
		return string(out)
	}
	vip := func(addr string, backends ...string) dataplane.VIP {
		v := dataplane.VIP{Addr: netip.MustParseAddr(addr), Service: "api"}
		for _, b := range backends {
			v.Backends = append(v.Backends, netip.MustParseAddr(b))
		}
		return v
	}
	var changes atomic.Int32
	m := New(Config{VIPTableChanged: func() { changes.Add(1) }}, nil)
	m.SetTable(testTable())
	// One VIP on the container's network, one on another network.
	m.SetVIPs([]dataplane.VIP{vip("10.42.255.1", "10.42.0.2", "10.42.1.2"), vip("10.77.255.1", "10.77.0.2")})
	m.Attach(path, "ep1", netip.MustParsePrefix("10.42.0.0/16"))
	eventually(t, "the container's VIP table", 2*time.Second, func() bool { return strings.Contains(table(), "10.42.255.1") })
	// Written: the endpoint is ready for the bridge bypass, and the daemon
	// was told once.
	eventually(t, "the endpoint listed ready", 2*time.Second, func() bool { return m.VIPTableReady()["ep1"] })
	if n := changes.Load(); n != 1 {
		t.Errorf("VIPTableChanged called %d times when the table came into place, want 1", n)
	}
	if got := table(); strings.Contains(got, "10.77.255.1") || !strings.Contains(got, "10.42.1.2") {
		t.Errorf("the container's table holds another network's VIP or lacks a replica:\n%s", got)
	}
	if st := m.Status(); len(st) != 1 || st[0].VIPs != 1 || st[0].VIPErr != nil {
		t.Errorf("status %+v, want one box with 1 VIP", st)
	}
	// A replica leaves: rewritten.
	m.SetVIPs([]dataplane.VIP{vip("10.42.255.1", "10.42.0.2")})
	if got := table(); strings.Contains(got, "10.42.1.2") || !strings.Contains(got, "10.42.0.2") {
		t.Errorf("after a replica left:\n%s", got)
	}
	// Joining the other network brings its VIP.
	m.SetVIPs([]dataplane.VIP{vip("10.42.255.1", "10.42.0.2"), vip("10.77.255.1", "10.77.0.2")})
	m.Attach(path, "ep2", netip.MustParsePrefix("10.77.0.0/16"))
	if got := table(); !strings.Contains(got, "10.77.255.1") {
		t.Errorf("after joining 10.77.0.0/16:\n%s", got)
	}
	if r := m.VIPTableReady(); !r["ep1"] || !r["ep2"] || changes.Load() != 1 {
		t.Errorf("after rewrites: ready %v, %d calls of VIPTableChanged; want both endpoints, 1 call", r, changes.Load())
	}
	// meshnetd stops: the VIPs stay.
	m.Close()
	if len(m.VIPTableReady()) != 0 || changes.Load() != 2 {
		t.Errorf("after Close: ready %v, %d calls of VIPTableChanged; want none ready, 2 calls", m.VIPTableReady(), changes.Load())
	}
	if got := table(); !strings.Contains(got, "10.42.255.1") {
		t.Errorf("after a stop the container lost its VIPs:\n%s", got)
	}
	// A new meshnetd finds the container; it leaves its networks: the table goes.
	m = New(Config{}, nil)
	defer m.Close()
	m.SetTable(testTable())
	m.SetVIPs([]dataplane.VIP{vip("10.42.255.1", "10.42.0.2")})
	m.Sync([]Sandbox{{Key: path, Endpoints: map[string]netip.Prefix{"ep1": netip.MustParsePrefix("10.42.0.0/16")}}})
	eventually(t, "rewritten by the new daemon", 2*time.Second, func() bool {
		got := table()
		return strings.Contains(got, "10.42.255.1") && !strings.Contains(got, "10.77.255.1")
	})
	m.Detach("ep1")
	eventually(t, "the table gone with the last network", 2*time.Second, func() bool { return table() == "" })
}
