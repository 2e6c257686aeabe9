package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// httpScript starts busybox httpd on 8080 with a CGI that prints the
// client's address as the server sees it.
const httpScript = `mkdir -p /www/cgi-bin && ` +
	`printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$REMOTE_ADDR"\n' > /www/cgi-bin/ip && ` +
	`chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www`

// runWeb starts an HTTP server container with extra docker run flags (-p ...).
func runWeb(ctx context.Context, h harness.Host, name, network string, extra ...string) (string, error) {
	args := []string{"run", "-d", "--label", harness.Label, "--network", network, "--name", name}
	args = append(append(args, extra...), harness.Image, "sh", "-c", httpScript)
	return harness.Docker(ctx, h, args...)
}

// fetchIP asks the CGI at addr:port from host h (curl on the host) and returns what the server
// saw as the client address.
func fetchIP(ctx context.Context, h harness.Host, addr string, port uint16) (string, error) {
	out, err := h.Exec(ctx, "curl", "-sS", "-m", "3", fmt.Sprintf("http://%s/cgi-bin/ip", netip.AddrPortFrom(netip.MustParseAddr(addr), port)))
	return clientAddr(out), err
}

// clientAddr reads the CGI's answer: busybox httpd listens dual-stack and reports an IPv4
// client as "[::ffff:A.B.C.D]".
func clientAddr(out string) string {
	s := strings.Trim(strings.TrimSpace(out), "[]")
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return s
}

// expectClient waits until a request from h to addr:port is answered with client want.
func expectClient(t *testing.T, ctx context.Context, h harness.Host, addr string, port uint16, want string) {
	t.Helper()
	harness.Eventually(t, 15*time.Second, func() error {
		got, err := fetchIP(ctx, h, addr, port)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s -> %s:%d: server saw client %q, want %q", h.Name(), addr, port, got, want)
		}
		return nil
	})
}

// expectUnreachable checks that a request from h to addr:port gets no answer.
func expectUnreachable(t *testing.T, ctx context.Context, h harness.Host, addr string, port uint16) {
	t.Helper()
	harness.Eventually(t, 15*time.Second, func() error {
		if got, err := fetchIP(ctx, h, addr, port); err == nil {
			return fmt.Errorf("%s -> %s:%d still answered (client %q)", h.Name(), addr, port, got)
		}
		return nil
	})
}

// publishedOf returns the published ports meshctl on h lists for container name.
func publishedOf(ctx context.Context, c *harness.Cluster, h harness.Host, name string) ([]string, error) {
	out, err := c.Meshctl(ctx, h, "-o", "json", "endpoints")
	if err != nil {
		return nil, err
	}
	var eps []struct {
		Container string   `json:"container"`
		Published []string `json:"published"`
	}
	if err := json.Unmarshal([]byte(out), &eps); err != nil {
		return nil, fmt.Errorf("meshctl endpoints: %w: %s", err, out)
	}
	for _, e := range eps {
		if e.Container == name {
			return e.Published, nil
		}
	}
	return nil, fmt.Errorf("meshctl on %s does not list %s: %w: %s", h.Name(), name, errNotListed, out)
}

// errNotListed: the container has no endpoint (a stopped container's is deleted).
var errNotListed = errors.New("no such endpoint")

// expectPublished waits until meshctl on h lists exactly want for container name.
func expectPublished(t *testing.T, ctx context.Context, c *harness.Cluster, h harness.Host, name string, want ...string) {
	t.Helper()
	harness.Eventually(t, 15*time.Second, func() error {
		got, err := publishedOf(ctx, c, h, name)
		if errors.Is(err, errNotListed) && len(want) == 0 {
			return nil
		}
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("meshctl on %s: %s publishes %q, want %q", h.Name(), name, got, want)
		}
		return nil
	})
}

// logPluginCalls logs the raw requests of one plugin call from meshnetd's debug log.
func logPluginCalls(t *testing.T, d *harness.Meshnet, path string) {
	t.Helper()
	log, err := d.Log()
	if err != nil {
		t.Logf("meshnetd log: %v", err)
		return
	}
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "plugin call") && strings.Contains(line, path) && n < 3 {
			t.Logf("raw %s: %s", path, line)
			n++
		}
	}
}

// TestPorts checks docker run -p on a meshnet network: reachable from another host with the
// client's real address, from the host itself (underlay address and 127.0.0.1) and from a
// container through the host (hairpin); ranges and ephemeral ports; a second claim of a port
// fails; meshctl shows the ports (docker port cannot); gone after docker stop; back after
// meshnetd is killed and restarted.
func TestPorts(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	ds := startMesh(t, ctx, c, hosts[:2])
	waitAllAlive(t, ctx, c, hosts[:2], 15*time.Second)
	h1, h2 := hosts[0], hosts[1]
	a1, a2 := h1.Addr().String(), h2.Addr().String()

	createNetworkEverywhere(t, ctx, hosts[:2], "app", "10.44.0.0/24")
	if out, err := runWeb(ctx, h1, "web", "app", "-p", "8081:8080"); err != nil {
		t.Fatalf("docker run -p 8081:8080: %v\n%s", err, out)
	}
	logPluginCalls(t, ds[0], "ProgramExternalConnectivity")
	logPluginCalls(t, ds[0], "NetworkDriver.Join")
	ep, err := harness.ContainerEndpoint(ctx, h1, "web", "app")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	expectClient(t, ctx, h2, a1, 8081, a2) // the client's own address: no SNAT
	t.Logf("published port answers host2 after %s", time.Since(start).Round(time.Millisecond))
	expectClient(t, ctx, h1, a1, 8081, a1)
	expectClient(t, ctx, h1, "127.0.0.1", 8081, ep.Gateway.String()) // masqueraded to the bridge
	expectPublished(t, ctx, c, h2, "web", "0.0.0.0:8081:8080/tcp")

	// Hairpin: a container of the same network, and the server itself,
	// through their host's address. (busybox's wget -T crashes: timeout
	// does its job.)
	runContainer(t, ctx, h1, "peer", "app")
	for _, from := range []string{"peer", "web"} {
		harness.Eventually(t, 15*time.Second, func() error {
			out, err := harness.Docker(ctx, h1, "exec", from, "timeout", "5", "wget", "-qO-", "http://"+a1+":8081/cgi-bin/ip")
			if err != nil {
				return fmt.Errorf("hairpin from %s: %v %s", from, err, out)
			}
			if got := clientAddr(out); got != ep.Gateway.String() {
				return fmt.Errorf("hairpin from %s: server saw %q, want the gateway %s", from, got, ep.Gateway)
			}
			return nil
		})
	}

	// From another meshnet network and from Docker's default bridge, through the host's address.
	if err := harness.CreateNetwork(ctx, h1, "other", "10.47.0.0/24"); err != nil {
		t.Fatal(err)
	}
	runContainer(t, ctx, h1, "elsewhere", "other")
	runContainer(t, ctx, h1, "bridged", "bridge")
	for _, from := range []string{"elsewhere", "bridged"} {
		harness.Eventually(t, 15*time.Second, func() error {
			out, err := harness.Docker(ctx, h1, "exec", from, "timeout", "5", "wget", "-qO-", "http://"+a1+":8081/cgi-bin/ip")
			if err != nil {
				return fmt.Errorf("%s -> %s:8081: %v %s", from, a1, err, out)
			}
			t.Logf("%s reached the published port; the server saw %s", from, clientAddr(out))
			return nil
		})
	}

	// What docker port shows for a remote driver's endpoint (see README).
	port, _ := harness.Docker(ctx, h1, "port", "web")
	ports, _ := harness.Docker(ctx, h1, "inspect", "-f", "{{json .NetworkSettings.Ports}}", "web")
	ps, _ := harness.Docker(ctx, h1, "ps", "--filter", "name=^web$", "--format", "{{.Ports}}")
	t.Logf("docker port web: %q; NetworkSettings.Ports: %s; docker ps PORTS: %q", strings.TrimSpace(port), strings.TrimSpace(ports), strings.TrimSpace(ps))
	logPluginCalls(t, ds[0], "EndpointOperInfo") // the engine asked, and was told the portmap
	if strings.Contains(port, "8081") || strings.Contains(ps, "8081") {
		t.Logf("docker port shows the mapping: the README's limitation no longer holds on this engine")
	}

	// The same host port again: the second docker run fails and says why.
	out, err := runWeb(ctx, h1, "web2", "app", "-p", "8081:8080")
	if err == nil {
		t.Errorf("a second container publishing 8081 started:\n%s", out)
	} else if !strings.Contains(out, "already published by container web") {
		t.Errorf("second publication of 8081 failed without saying why:\n%s", out)
	} else {
		t.Logf("second publication of 8081: %s", lineWith(out, "already published"))
	}
	_, _ = harness.Docker(ctx, h1, "rm", "-f", "web2")
	expectClient(t, ctx, h2, a1, 8081, a2) // the first is untouched

	// A port a program on the host holds.
	listener, err := h1.Start(ctx, "listener", "busybox", "nc", "-l", "-p", "8097")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Kill(syscall.SIGKILL)
	harness.Eventually(t, 5*time.Second, func() error {
		out, err := h1.Exec(ctx, "ss", "-Hltn", "sport = :8097")
		if err != nil || !strings.Contains(out, "8097") {
			return fmt.Errorf("listener not up: %v %s", err, out)
		}
		return nil
	})
	out, err = runWeb(ctx, h1, "web3", "app", "-p", "8097:8080")
	if err == nil || !strings.Contains(out, "another program") {
		t.Errorf("publishing a port a host program listens on: err %v\n%s", err, out)
	}
	_, _ = harness.Docker(ctx, h1, "rm", "-f", "web3")

	// A range and an ephemeral port.
	if out, err := runWeb(ctx, h1, "ranged", "app", "-p", "8090-8095:8080", "-p", "8080"); err != nil {
		t.Fatalf("docker run -p 8090-8095:8080 -p 8080: %v\n%s", err, out)
	}
	if out, err := runWeb(ctx, h1, "ranged2", "app", "-p", "8090-8095:8080"); err != nil {
		t.Fatalf("second container on the range: %v\n%s", err, out)
	}
	var ranged []string
	harness.Eventually(t, 15*time.Second, func() error {
		ranged, err = publishedOf(ctx, c, h2, "ranged")
		if err == nil && len(ranged) != 2 {
			err = fmt.Errorf("ranged publishes %q, want two ports", ranged)
		}
		return err
	})
	expectPublished(t, ctx, c, h2, "ranged2", "0.0.0.0:8091:8080/tcp")
	// The engine sends the bindings in no fixed order.
	i := slices.Index(ranged, "0.0.0.0:8090:8080/tcp")
	if i < 0 {
		t.Fatalf("range: %q, want the first port of 8090-8095 among them", ranged)
	}
	m := regexp.MustCompile(`^0\.0\.0\.0:(\d+):8080/tcp$`).FindStringSubmatch(ranged[1-i])
	if m == nil {
		t.Fatalf("ephemeral: %q", ranged[1-i])
	}
	var eph uint16
	fmt.Sscan(m[1], &eph)
	t.Logf("ephemeral port: %d", eph)
	expectClient(t, ctx, h2, a1, 8090, a2)
	expectClient(t, ctx, h2, a1, 8091, a2)
	expectClient(t, ctx, h2, a1, eph, a2)

	// kill -9 and restart: the kernel keeps serving meanwhile, and the
	// restarted daemon restores the ports (the engine never asks again).
	before := nftMeshnet(t, ctx, h1)
	if err := ds[0].Kill(ctx); err != nil {
		t.Fatal(err)
	}
	expectClient(t, ctx, h2, a1, 8081, a2)
	if err := ds[0].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ds[0].WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	expectPublished(t, ctx, c, h1, "web", "0.0.0.0:8081:8080/tcp")
	expectClient(t, ctx, h2, a1, 8081, a2)
	expectClient(t, ctx, h2, a1, eph, a2)
	if after := nftMeshnet(t, ctx, h1); after != before {
		t.Errorf("table inet meshnet changed across the restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The restarted daemon holds the ports again.
	out, err = runWeb(ctx, h1, "web4", "app", "-p", "8081:8080")
	if err == nil {
		t.Errorf("after the restart, a second container took 8081:\n%s", out)
	}
	_, _ = harness.Docker(ctx, h1, "rm", "-f", "web4")
	harness.Eventually(t, 5*time.Second, func() error {
		out, err := h1.Exec(ctx, "ss", "-Hltnp", "sport = :8081")
		if err != nil || !strings.Contains(out, "meshnetd") {
			return fmt.Errorf("8081 not held by meshnetd after the restart: %v %s", err, out)
		}
		return nil
	})

	// docker stop withdraws the port everywhere; it can be published again.
	if out, err := harness.Docker(ctx, h1, "stop", "-t", "1", "web"); err != nil {
		t.Fatalf("docker stop: %v\n%s", err, out)
	}
	expectUnreachable(t, ctx, h2, a1, 8081)
	expectPublished(t, ctx, c, h2, "web")
	if rules := nftMeshnet(t, ctx, h1); strings.Contains(rules, "8081") {
		t.Errorf("rules for 8081 left after docker stop:\n%s", rules)
	}
	if out, err := harness.Docker(ctx, h1, "start", "web"); err != nil {
		t.Fatalf("docker start: %v\n%s", err, out)
	}
	expectClient(t, ctx, h2, a1, 8081, a2)
}

// nftMeshnet lists table inet meshnet on h, counters and handles stripped.
func nftMeshnet(t *testing.T, ctx context.Context, h harness.Host) string {
	t.Helper()
	out, err := h.Exec(ctx, "nft", "list", "table", "inet", "meshnet")
	if err != nil {
		t.Fatalf("nft list table inet meshnet on %s: %v", h.Name(), err)
	}
	return regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(out, "counter")
}

// TestInternal checks docker network create --internal on meshnet: containers on it reach
// each other across hosts and nothing else (no gateway, no other host's underlay address, no
// other network); -p publishes nothing; a host that creates the subnet without --internal is
// told the options disagree.
func TestInternal(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	h1, h2 := hosts[0], hosts[1]

	createNetworkEverywhere(t, ctx, hosts[:2], "priv", "10.45.0.0/24", "--internal")
	// Once host3 has the others' records, creating the subnet there without --internal fails.
	harness.Eventually(t, 15*time.Second, func() error {
		out, err := c.Meshctl(ctx, hosts[2], "-o", "json", "networks")
		if err != nil || !strings.Contains(out, `"internal": true`) {
			return fmt.Errorf("host3 does not know the internal network yet: %v %s", err, out)
		}
		return nil
	})
	err := harness.CreateNetwork(ctx, hosts[2], "priv", "10.45.0.0/24")
	if err == nil || !strings.Contains(err.Error(), "--internal") {
		t.Errorf("creating the internal subnet without --internal on %s: %v; want the options-disagree error", hosts[2].Name(), err)
	}
	createNetworkEverywhere(t, ctx, hosts[:2], "open", "10.46.0.0/24")

	if out, err := runWeb(ctx, h1, "i1", "priv", "-p", "8085:8080"); err != nil {
		t.Fatalf("docker run on the internal network: %v\n%s", err, out)
	}
	ep1, err := harness.ContainerEndpoint(ctx, h1, "i1", "priv")
	if err != nil {
		t.Fatal(err)
	}
	if ep1.Gateway.IsValid() {
		t.Errorf("i1 has gateway %s on an internal network; want none", ep1.Gateway)
	}
	// Nor a way out through docker_gwbridge.
	if out, err := harness.Docker(ctx, h1, "exec", "i1", "ls", "/sys/class/net"); err != nil || strings.Join(strings.Fields(out), " ") != "eth0 lo" {
		t.Errorf("i1's interfaces: %q (%v), want eth0 and lo only", out, err)
	}
	i2 := runContainer(t, ctx, h2, "i2", "priv")
	o2 := runContainer(t, ctx, h2, "o2", "open")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h2, "i2", ep1.IP) })
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h1, "i1", i2) })
	// Across hosts, the HTTP server answers the other container directly.
	harness.Eventually(t, 15*time.Second, func() error {
		out, err := harness.Docker(ctx, h2, "exec", "i2", "timeout", "5", "wget", "-qO-", "http://"+ep1.IP.String()+":8080/cgi-bin/ip")
		if err != nil {
			return err
		}
		if got := clientAddr(out); got != i2.String() {
			return fmt.Errorf("server saw %q, want i2's %s", got, i2)
		}
		return nil
	})

	for _, check := range []struct {
		h    harness.Host
		from string
		to   netip.Addr
		what string
	}{
		{h2, "i2", h1.Addr(), "another host's underlay address"},
		{h1, "i1", h2.Addr(), "another host's underlay address"},
		{h1, "i1", hosts[2].Addr(), "a host without the network"},
		{h2, "i2", o2, "a container of another network on the same host"},
	} {
		if err := pingFails(ctx, check.h, check.from, check.to); err != nil {
			t.Errorf("internal network reaches %s: %v", check.what, err)
		}
	}
	// Even with a route added by hand inside the container, nothing leaves.
	if out, err := h2.Exec(ctx, "sh", "-c", fmt.Sprintf(
		"nsenter -t $(docker inspect -f '{{.State.Pid}}' i2) -n ip route add default via %s", "10.45.0.1")); err != nil {
		t.Fatalf("adding a default route inside i2: %v\n%s", err, out)
	}
	if err := pingFails(ctx, h2, "i2", h1.Addr()); err != nil {
		t.Errorf("internal network with a default route reaches another host: %v", err)
	}
	if err := pingFails(ctx, h2, "i2", o2); err != nil {
		t.Errorf("internal network with a default route reaches another network: %v", err)
	}

	// -p on an internal network publishes nothing.
	expectUnreachable(t, ctx, h2, h1.Addr().String(), 8085)
	if _, err := fetchIP(ctx, h1, "127.0.0.1", 8085); err == nil {
		t.Error("8085 published on the host of an internal network")
	}
	expectPublished(t, ctx, c, h2, "i1")
	if rules := nftMeshnet(t, ctx, h1); strings.Contains(rules, "8085") || strings.Contains(rules, "masquerade 10.45.0.0/24") {
		t.Errorf("table inet meshnet publishes or masquerades the internal network:\n%s", rules)
	}
	out, _ := c.Meshctl(ctx, h1, "networks")
	t.Logf("meshctl networks:\n%s", out)
}
