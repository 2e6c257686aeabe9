package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// composeStack is the stack a Swarm user brings: a service "api" (an HTTP
// server on 8080 that answers with its hostname and the caller's address)
// and "front", which publishes port 8088 on its host and calls
// http://api:8080 (the ingress pattern: /cgi-bin/api answers with what api
// said), on one meshnet network made outside the project, as a stack
// file's external overlay.
const composeStack = `version: "2.4"
services:
  api:
    image: meshnet/busybox
    labels: [meshnet-e2e]
    stop_signal: SIGKILL
    command:
      - sh
      - -c
      - |
        mkdir -p /www/cgi-bin
        printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$$(hostname) $$REMOTE_ADDR"\n' > /www/cgi-bin/id
        chmod +x /www/cgi-bin/id
        exec httpd -f -p 8080 -h /www
    networks: [ch03]
  front:
    image: meshnet/busybox
    labels: [meshnet-e2e]
    stop_signal: SIGKILL
    ports: ["8088:8080"]
    command:
      - sh
      - -c
      - |
        mkdir -p /www/cgi-bin
        printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$$(hostname) $$REMOTE_ADDR"\n' > /www/cgi-bin/id
        printf '#!/bin/sh\necho Content-Type: text/plain\necho\ncurl -s -m 3 http://api:8080/cgi-bin/id\n' > /www/cgi-bin/api
        chmod +x /www/cgi-bin/id /www/cgi-bin/api
        exec httpd -f -p 8080 -h /www
    networks: [ch03]
networks:
  ch03:
    external: true
`

// compose runs Debian's docker-compose (v1) for the project shop on h.
func compose(ctx context.Context, h harness.Host, dir string, args ...string) (string, error) {
	return h.Exec(ctx, append([]string{"docker-compose", "--no-ansi", "-f", path.Join(dir, "docker-compose.yml"), "-p", "shop"}, args...)...)
}

// TestComposeStack: the stack above, brought up with docker-compose on
// three hosts (2+2+1 replicas of api), works as written for Swarm: from
// front, through the container's own resolver (127.0.0.11, no --dns, no
// engine setting), "api" is every replica in the cluster, requests spread
// over them, compose down on one host takes its replicas out of the
// answers at once, a remote container's name and a remote alias with a
// fixed address resolve, and the names of a local Docker network front is
// also on are still Docker's.
func TestComposeStack(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "ch03", "10.45.0.0/16")

	scale := []int{2, 2, 1}
	dirs := make([]string, len(hosts))
	for i, h := range hosts {
		dirs[i] = fmt.Sprintf("/tmp/meshnet-e2e-compose-%s", h.Name())
		if err := h.WriteFile(path.Join(dirs[i], "docker-compose.yml"), []byte(composeStack), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = h.Exec(context.Background(), "rm", "-rf", dirs[i]) })
		if out, err := compose(ctx, h, dirs[i], "up", "-d", "--scale", fmt.Sprintf("api=%d", scale[i])); err != nil {
			t.Fatalf("docker-compose up on %s: %v\n%s", h.Name(), err, out)
		}
	}
	// Every replica, by host, and its hostname (what it answers with).
	replicas := map[netip.Addr]string{}
	byHost := make([]map[netip.Addr]bool, len(hosts))
	for i, h := range hosts {
		byHost[i] = map[netip.Addr]bool{}
		for n := 1; n <= scale[i]; n++ {
			name := fmt.Sprintf("shop_api_%d", n)
			ip, err := harness.ContainerIP(ctx, h, name, "ch03")
			if err != nil {
				t.Fatal(err)
			}
			hn, err := harness.Docker(ctx, h, "inspect", "-f", "{{.Config.Hostname}}", name)
			if err != nil {
				t.Fatal(err)
			}
			replicas[ip] = strings.TrimSpace(hn)
			byHost[i][ip] = true
		}
	}
	all := map[netip.Addr]bool{}
	for ip := range replicas {
		all[ip] = true
	}
	if len(all) != 5 {
		t.Fatalf("%d distinct replica addresses, want 5: %v", len(all), replicas)
	}
	h1 := hosts[0]
	front := containerNetns{h: h1, name: "shop_front_1"}
	frontIP, err := harness.ContainerIP(ctx, h1, "shop_front_1", "ch03")
	if err != nil {
		t.Fatal(err)
	}

	// The container's own resolver, as its libc asks it.
	took := waitResolverA(t, ctx, front, "api", all, 15*time.Second)
	t.Logf("api resolves to all 5 replicas from front %s after compose up", took.Round(time.Millisecond))
	out, err := harness.Docker(ctx, h1, "exec", "shop_front_1", "nslookup", "api")
	if err != nil {
		t.Fatalf("nslookup api in front: %v\n%s", err, out)
	}
	for ip := range all {
		if !strings.Contains(out, ip.String()) {
			t.Errorf("nslookup api in front does not list %s:\n%s", ip, out)
		}
	}

	t.Run("requests spread", func(t *testing.T) {
		out, err := harness.Docker(ctx, h1, "exec", "shop_front_1", "sh", "-c",
			"for i in $(seq 30); do curl -s -m 3 http://api:8080/cgi-bin/id || echo FAILED; done")
		if err != nil {
			t.Fatalf("requests from front: %v\n%s", err, out)
		}
		served := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				t.Fatalf("unexpected answer %q in:\n%s", line, out)
			}
			served[f[0]]++
			if seen := remoteAddr(f[1]); seen != frontIP {
				t.Errorf("a replica saw the caller as %s, want front's address %s", f[1], frontIP)
			}
		}
		t.Logf("30 requests to http://api:8080 served by %d of 5 replicas: %v", len(served), served)
		if len(served) < 4 {
			t.Errorf("30 requests reached %d replicas, want at least 4 of 5", len(served))
		}
	})

	t.Run("published port, ingress pattern", func(t *testing.T) {
		url := fmt.Sprintf("http://%s:8088/cgi-bin/", h1.Addr())
		// From another host: front sees that host's own address.
		out, err := hosts[1].Exec(ctx, "curl", "-s", "-m", "5", url+"id")
		if f := strings.Fields(out); err != nil || len(f) != 2 || remoteAddr(f[1]) != hosts[1].Addr() {
			t.Errorf("curl %sid from %s: %v %q, want front's hostname and %s", url, hosts[1].Name(), err, out, hosts[1].Addr())
		}
		// Through front to the replicas, by bare name.
		served := map[string]bool{}
		for range 10 {
			out, err := hosts[2].Exec(ctx, "curl", "-s", "-m", "5", url+"api")
			f := strings.Fields(out)
			if err != nil || len(f) != 2 || remoteAddr(f[1]) != frontIP {
				t.Fatalf("curl %sapi from %s: %v %q, want an api replica that saw front (%s)", url, hosts[2].Name(), err, out, frontIP)
			}
			served[f[0]] = true
		}
		t.Logf("10 requests through host1:8088 reached %d api replicas", len(served))
		// From the host itself.
		if out, err := h1.Exec(ctx, "curl", "-s", "-m", "5", "http://127.0.0.1:8088/cgi-bin/id"); err != nil || len(strings.Fields(out)) != 2 {
			t.Errorf("curl 127.0.0.1:8088 on host1: %v %q", err, out)
		}
	})

	t.Run("compose down leaves the answers at once", func(t *testing.T) {
		if out, err := compose(ctx, hosts[2], dirs[2], "down"); err != nil {
			t.Fatalf("docker-compose down on %s: %v\n%s", hosts[2].Name(), err, out)
		}
		rest := map[netip.Addr]bool{}
		for ip := range all {
			if !byHost[2][ip] {
				rest[ip] = true
			}
		}
		took := waitResolverA(t, ctx, front, "api", rest, 5*time.Second)
		t.Logf("host3's replica left the answers %s after compose down returned", took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("took %s, want within a second", took)
		}
	})

	t.Run("a new container's first query", func(t *testing.T) {
		// host3 has no replica left: only meshnet can answer, and it must
		// be in place before the container's first instruction.
		rest := map[netip.Addr]bool{}
		for ip := range all {
			if !byHost[2][ip] {
				rest[ip] = true
			}
		}
		for i := range 10 {
			out, err := harness.Docker(ctx, hosts[2], "run", "--rm", "--label", harness.Label, "--network", "ch03", harness.Image,
				"curl", "-s", "-m", "3", "http://api:8080/cgi-bin/id")
			if err != nil || len(strings.Fields(out)) != 2 {
				t.Errorf("run %d: a one-shot container on %s calling http://api:8080 at once: %v\n%s", i, hosts[2].Name(), err, out)
			}
		}
	})

	t.Run("remote container name and alias", func(t *testing.T) {
		fixed := netip.MustParseAddr("10.45.200.10")
		if err := harness.RunContainer(ctx, hosts[1], "remote-solo", "ch03", "--network-alias", "legacy-db", "--ip", fixed.String()); err != nil {
			t.Fatal(err)
		}
		want := map[netip.Addr]bool{fixed: true}
		waitResolverA(t, ctx, front, "remote-solo", want, 10*time.Second)
		waitResolverA(t, ctx, front, "legacy-db", want, 10*time.Second)
	})

	t.Run("Docker's own names still answer", func(t *testing.T) {
		if _, err := harness.Docker(ctx, h1, "network", "create", "--label", harness.Label, "localnet"); err != nil {
			t.Fatal(err)
		}
		local := runContainer(t, ctx, h1, "localdb", "localnet")
		if _, err := harness.Docker(ctx, h1, "network", "connect", "localnet", "shop_front_1"); err != nil {
			t.Fatal(err)
		}
		waitResolverA(t, ctx, front, "localdb", map[netip.Addr]bool{local: true}, 10*time.Second)
		// And meshnet's names keep answering with the container on two networks.
		if err := front.expectResolverA(ctx, "legacy-db", map[netip.Addr]bool{netip.MustParseAddr("10.45.200.10"): true}); err != nil {
			t.Error(err)
		}
	})
}

// remoteAddr reads busybox httpd's REMOTE_ADDR ("[::ffff:10.45.0.3]").
func remoteAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(strings.Trim(s, "[]"))
	return a.Unmap()
}

// resolverAddr is Docker's resolver in every container of a user-defined network: the path
// a container's libc takes, which meshnet answers first in the container's namespace.
const resolverAddr = "127.0.0.11"

// expectResolverA checks name's A answer from the container's own resolver.
func (c containerNetns) expectResolverA(ctx context.Context, name string, want map[netip.Addr]bool) error {
	return c.expectAFrom(ctx, resolverAddr, name, want)
}

// waitResolverA polls the container's own resolver until name's answer is want and returns
// how long that took.
func waitResolverA(t *testing.T, ctx context.Context, c containerNetns, name string, want map[netip.Addr]bool, timeout time.Duration) time.Duration {
	t.Helper()
	return c.waitAFrom(t, ctx, resolverAddr, name, want, timeout)
}
