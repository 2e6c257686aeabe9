package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// peerStates maps peer name to state as host h sees it, checking that exactly one entry is
// h itself.
func peerStates(ctx context.Context, c *harness.Cluster, h harness.Host) (map[string]harness.Peer, error) {
	peers, err := c.Peers(ctx, h)
	if err != nil {
		return nil, err
	}
	m := map[string]harness.Peer{}
	selves := 0
	for _, p := range peers {
		m[p.Name] = p
		if p.Self {
			selves++
			if p.Name != h.Name() {
				return nil, fmt.Errorf("%s lists %s as self", h.Name(), p.Name)
			}
		}
	}
	if selves != 1 {
		return nil, fmt.Errorf("%s lists %d entries as self: %+v", h.Name(), selves, peers)
	}
	return m, nil
}

// expectStates checks that every host in on sees each named peer in the wanted state.
func expectStates(ctx context.Context, c *harness.Cluster, on []harness.Host, want map[string]string) error {
	for _, h := range on {
		got, err := peerStates(ctx, c, h)
		if err != nil {
			return err
		}
		for name, state := range want {
			p, ok := got[name]
			if !ok {
				return fmt.Errorf("%s does not list %s (it lists %s)", h.Name(), name, names(got))
			}
			if p.State != state {
				return fmt.Errorf("%s sees %s as %s, want %s", h.Name(), name, p.State, state)
			}
		}
	}
	return nil
}

func names(m map[string]harness.Peer) string {
	var n []string
	for k, p := range m {
		n = append(n, k+"="+p.State)
	}
	sort.Strings(n)
	return strings.Join(n, ",")
}

// waitAllAlive waits until every host lists every host alive, with the right addresses.
func waitAllAlive(t *testing.T, ctx context.Context, c *harness.Cluster, hosts []harness.Host, timeout time.Duration) {
	t.Helper()
	want := map[string]string{}
	for _, h := range hosts {
		want[h.Name()] = "alive"
	}
	start := time.Now()
	harness.Eventually(t, timeout, func() error {
		if err := expectStates(ctx, c, hosts, want); err != nil {
			return err
		}
		for _, h := range hosts {
			got, _ := peerStates(ctx, c, h)
			for _, o := range hosts {
				if a := got[o.Name()].Address; !addrMatches(a, o.Addr()) {
					return fmt.Errorf("%s lists %s at %q, want %s", h.Name(), o.Name(), a, o.Addr())
				}
			}
		}
		return nil
	})
	t.Logf("all %d hosts see each other alive after %s", len(hosts), time.Since(start).Round(time.Millisecond))
}

// addrMatches accepts "A" or "A:port" for address A.
func addrMatches(s string, a netip.Addr) bool {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr() == a
	}
	p, err := netip.ParseAddr(s)
	return err == nil && p == a
}

// createNetworkEverywhere runs docker network create with the meshnet drivers on every host.
func createNetworkEverywhere(t *testing.T, ctx context.Context, hosts []harness.Host, name, subnet string, extra ...string) {
	t.Helper()
	for _, h := range hosts {
		if err := harness.CreateNetwork(ctx, h, name, subnet, extra...); err != nil {
			t.Fatalf("creating network %s (%s) on %s: %v", name, subnet, h.Name(), err)
		}
	}
}

// runContainer starts a busybox container and returns its address on network.
func runContainer(t *testing.T, ctx context.Context, h harness.Host, name, network string, extra ...string) netip.Addr {
	t.Helper()
	if err := harness.RunContainer(ctx, h, name, network, extra...); err != nil {
		t.Fatalf("starting %s on %s: %v", name, h.Name(), err)
	}
	ip, err := harness.ContainerIP(ctx, h, name, network)
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// pingFails checks that container cannot reach addr: three pings 0.2 s apart, none answered
// within a second of the last. It fails the test when the command failed for another reason
// than lost packets.
func pingFails(ctx context.Context, h harness.Host, container string, addr netip.Addr) error {
	out, err := harness.Docker(ctx, h, "exec", container, "ping", "-c3", "-i0.2", "-W1", addr.String())
	if err == nil {
		return fmt.Errorf("%s on %s reached %s:\n%s", container, h.Name(), addr, out)
	}
	if !strings.Contains(out, "100% packet loss") && !strings.Contains(out, "unreachable") && !strings.Contains(out, "Network is unreachable") {
		return fmt.Errorf("ping from %s on %s to %s failed for an unexpected reason: %v", container, h.Name(), addr, err)
	}
	return nil
}

// placed is a container started by onePerHost: where it runs and its endpoint.
type placed struct {
	h    harness.Host
	name string
	ep   harness.Endpoint
}

// onePerHost starts a container named prefix1, prefix2, … on each host, on network (extra
// are more docker run arguments), and checks what every multi-host test relies on: each
// address lies in the network's subnet of its family (subnets holds one or two prefixes)
// and no address is held twice.
func onePerHost(t *testing.T, ctx context.Context, hosts []harness.Host, prefix, network string, subnets []netip.Prefix, extra ...string) []placed {
	t.Helper()
	var out []placed
	seen := map[netip.Addr]string{}
	for i, h := range hosts {
		name := fmt.Sprintf("%s%d", prefix, i+1)
		runContainer(t, ctx, h, name, network, extra...)
		ep, err := harness.ContainerEndpoint(ctx, h, name, network)
		if err != nil {
			t.Fatal(err)
		}
		for _, sub := range subnets {
			a := ep.IP
			if sub.Addr().Is6() {
				a = ep.IPv6
			}
			if !sub.Contains(a) {
				t.Errorf("%s on %s got %q, outside %s", name, h.Name(), a, sub)
			}
			if other, dup := seen[a]; dup {
				t.Errorf("%s and %s both got %s", other, name, a)
			}
			seen[a] = name
		}
		out = append(out, placed{h, name, ep})
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%s containers: %v", network, seen)
	return out
}

// underlayIPv6 says whether the cluster's hosts speak to each other over IPv6
// (MESHNET_E2E_UNDERLAY=ipv6): the tunnels' overhead grows, and egress to another host's
// address needs a network with an IPv6 half.
func underlayIPv6(hosts []harness.Host) bool { return hosts[0].Addr().Is6() }

// tunnelOverhead is what meshnet's encapsulation takes from the underlay MTU (dataplane's
// VXLANOverhead/VXLANOverhead6 and WireGuardOverhead4/6), spelled out so that a change
// there is a change here too.
func tunnelOverhead(hosts []harness.Host, wireguard bool) int {
	switch {
	case wireguard && underlayIPv6(hosts):
		return 80
	case wireguard:
		return 60
	case underlayIPv6(hosts):
		return 70
	}
	return 50
}

// apiOnEveryHost creates the network app (10.42.0.0/24) on hosts, starts a replica of the
// service api on each (api-HOST), and waits up to wait until the first host's replica
// resolves api.meshnet to all of them. It returns that replica, to ask more.
func apiOnEveryHost(t *testing.T, ctx context.Context, hosts []harness.Host, wait time.Duration) containerNetns {
	t.Helper()
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	for _, h := range hosts {
		runContainer(t, ctx, h, "api-"+h.Name(), "app", "--label", "meshnet.service=api")
	}
	client := containerNetns{h: hosts[0], name: "api-" + hosts[0].Name()}
	harness.Eventually(t, wait, func() error {
		_, answers, err := client.dig(ctx, dnsAddr, "api.meshnet", "A")
		if err == nil && len(answers) != len(hosts) {
			err = fmt.Errorf("api.meshnet: %v", answers)
		}
		return err
	})
	return client
}

// watchMesh watches the mesh for window, every interval: each host's view of its peers (a
// peer seen neither alive nor suspect is listed in notAlive, with who saw it and when), and
// one query for api.meshnet from client per poll, answered when full(the number of addresses
// in the answer) holds. It fails the test only when a host cannot be asked.
func watchMesh(t *testing.T, ctx context.Context, c *harness.Cluster, hosts []harness.Host, client containerNetns,
	window, interval time.Duration, full func(addrs int) bool) (polls, answered int, notAlive []string) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < window {
		for _, h := range hosts {
			peers, err := peerStates(ctx, c, h)
			if err != nil {
				t.Fatal(err)
			}
			for name, p := range peers {
				if p.State != "alive" && p.State != "suspect" {
					notAlive = append(notAlive, fmt.Sprintf("%s saw %s %s after %s", h.Name(), name, p.State,
						time.Since(start).Round(time.Second)))
				}
			}
		}
		polls++
		if _, answers, err := client.dig(ctx, dnsAddr, "api.meshnet", "A"); err == nil && full(len(answers)) {
			answered++
		}
		time.Sleep(interval)
	}
	return polls, answered, notAlive
}

// envDuration is the Go duration in environment variable name, def when it is unset; a value
// that is no duration, or shorter than least, fails t.
func envDuration(t *testing.T, name string, def, least time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < least {
		t.Fatalf("%s=%q: want a Go duration of %s or more, e.g. %s", name, v, least, def)
	}
	return d
}
