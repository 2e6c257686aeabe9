package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/e2e/harness"
)

// whoScript starts, in a replica, busybox httpd on 8080 with a CGI that
// prints "<hostname> <client address>", and on 9000 a persistent nc
// server that prefixes every line it gets with the hostname (a connection
// that stays open).
const whoScript = `mkdir -p /www/cgi-bin && ` +
	`printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$(hostname) $REMOTE_ADDR"\n' > /www/cgi-bin/who && ` +
	`printf '#!/bin/sh\nwhile read l; do echo "$(hostname) $l"; done\n' > /echo.sh && ` +
	`chmod +x /www/cgi-bin/who /echo.sh && (nc -ll -p 9000 -e /echo.sh &) && exec httpd -f -p 8080 -h /www`

// TestServiceVIP: a service of 6 replicas (meshnet.endpoint-mode=vip) on 3
// hosts gets one VIP, the same in every host's meshctl; web.meshnet answers
// it and tasks.web.meshnet every replica; 600 new connections from a
// client land within ±5 points of an even share each, every replica seeing
// the client's own address; a connection held open reaches its replica
// through the kernel's conntrack only (its entry carries the kernel's
// established timeout, nothing of meshnet's), idle for 30 s still carries
// data, and survives another replica being stopped; 1 s after meshnet
// learnt of the stop no new connection goes to it (all 60 answered, none
// by it); once the service is gone, no VIP rule or address is left.
func TestServiceVIP(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.47.0.0/24")

	replicas := map[string]netip.Addr{}
	where := map[string]harness.Host{}
	for _, h := range hosts {
		for i := range 2 {
			name := fmt.Sprintf("web-%s-%d", h.Name(), i)
			args := []string{"run", "-d", "--label", harness.Label, "--network", "app", "--name", name, "--hostname", name,
				"--label", "meshnet.service=web", "--label", "meshnet.endpoint-mode=vip", harness.Image, "sh", "-c", whoScript}
			if _, err := harness.Docker(ctx, h, args...); err != nil {
				t.Fatalf("starting %s on %s: %v", name, h.Name(), err)
			}
			ip, err := harness.ContainerIP(ctx, h, name, "app")
			if err != nil {
				t.Fatal(err)
			}
			replicas[name], where[name] = ip, h
		}
	}
	h1 := hosts[0]
	clientIP := runContainer(t, ctx, h1, "client", "app", "--dns", dnsAddr)
	client := containerNetns{h: h1, name: "client"}

	// One VIP, the same on every host, with 6 healthy replicas.
	var vip netip.Addr
	harness.Eventually(t, 30*time.Second, func() error {
		var seen []string
		for _, h := range hosts {
			svc, err := webService(ctx, c, h)
			if err != nil {
				return err
			}
			// Every host must agree on the VIP; the client's host (the one
			// that balances its connections) must list all 6 replicas.
			if svc.Mode != "vip" || len(svc.VIPs) != 1 || (h == hosts[0] && len(svc.Replicas) != 6) {
				return fmt.Errorf("%s: meshctl services shows web as %+v", h.Name(), svc)
			}
			seen = append(seen, svc.VIPs[0].Addr)
		}
		if seen[0] != seen[1] || seen[1] != seen[2] {
			return fmt.Errorf("hosts disagree on the VIP: %v", seen)
		}
		vip = netip.MustParseAddr(seen[0])
		return nil
	})
	t.Logf("VIP %s; replicas %v", vip, replicas)
	if out, err := c.Meshctl(ctx, h1, "services"); err == nil {
		t.Logf("meshctl services:\n%s", out)
	}
	harness.Eventually(t, 15*time.Second, func() error {
		return client.expectA(ctx, "web.meshnet", map[netip.Addr]bool{vip: true})
	})
	harness.Eventually(t, 15*time.Second, func() error { return client.expectA(ctx, "tasks.web.meshnet", addrSet(replicas)) })

	url := fmt.Sprintf("http://%s/cgi-bin/who", netip.AddrPortFrom(vip, 8080))
	harness.Eventually(t, 15*time.Second, func() error {
		_, err := harness.Docker(ctx, h1, "exec", "client", "curl", "-sS", "-m", "2", url)
		return err
	})

	t.Run("spread", func(t *testing.T) {
		const n = 600
		start := time.Now()
		counts, failed, others := fetchWho(t, ctx, h1, url, n, clientIP)
		t.Logf("%d connections in %s: %v (failed %d)", n, time.Since(start).Round(time.Millisecond), counts, failed)
		if failed > 0 || len(others) > 0 {
			t.Errorf("%d connections failed; seen with another client address: %v", failed, others)
		}
		for name := range replicas {
			share := float64(counts[name]) * 100 / n
			if share < 100.0/6-5 || share > 100.0/6+5 {
				t.Errorf("%s got %d of %d (%.1f%%), want %.1f%% ± 5 points", name, counts[name], n, share, 100.0/6)
			}
		}
	})

	// The seed's ingress pattern: a proxy container publishing a port on
	// one host (docker run -p) in front of the service, reaching it by its
	// name, i.e. its VIP. Requests from another host go through it to
	// every replica.
	t.Run("proxy", func(t *testing.T) {
		proxy := `mkdir -p /www/cgi-bin && printf '#!/bin/sh
echo Content-Type: text/plain
echo
wget -q -O- http://web:8080/cgi-bin/who
' > /www/cgi-bin/proxy && chmod +x /www/cgi-bin/proxy && exec httpd -f -p 80 -h /www`
		if _, err := harness.Docker(ctx, h1, "run", "-d", "--label", harness.Label, "--network", "app", "--name", "proxy",
			"--dns", dnsAddr, "-p", "8088:80", harness.Image, "sh", "-c", proxy); err != nil {
			t.Fatal(err)
		}
		defer harness.Docker(ctx, h1, "rm", "-f", "proxy")
		url := fmt.Sprintf("http://%s/cgi-bin/proxy", netip.AddrPortFrom(h1.Addr(), 8088))
		harness.Eventually(t, 15*time.Second, func() error {
			out, err := hosts[2].Exec(ctx, "curl", "-sS", "-m", "3", url)
			if err == nil && len(strings.Fields(out)) != 2 {
				err = fmt.Errorf("proxy answered %q", out)
			}
			return err
		})
		out, err := hosts[2].Exec(ctx, "sh", "-c", curlLoop(url, 24))
		if err != nil {
			t.Fatal(err)
		}
		counts, failed, _ := whoAnswers(out, nil)
		t.Logf("24 requests from %s through the proxy on %s: %v, %d failed", hosts[2].Name(), h1.Name(), counts, failed)
		if failed > 0 || len(counts) != len(replicas) {
			t.Errorf("through the proxy: %v, %d failed; want every one of the %d replicas, none failed", counts, failed, len(replicas))
		}
	})

	// A connection held open (nc to the echo server on 9000), then idle.
	heldBy, sayHeld := holdInContainer(t, ctx, h1, "client", vip)
	t.Logf("held connection on %s", heldBy)

	t.Run("idle governed by conntrack", func(t *testing.T) {
		// The kernel's established timeout is the only one on the path:
		// the held connection's entry on the client's host counts down
		// from it (meshnet sets none of its own). Waiting the default 5
		// days is not a test; 30 s idle plus the timer is.
		tmo, err := h1.Exec(ctx, "cat", "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established")
		if err != nil {
			t.Fatal(err)
		}
		kernel, _ := strconv.Atoi(strings.TrimSpace(tmo))
		// Its entry, in the client container's own conntrack, where the
		// VIP is balanced: to the VIP's port 9000, answered by the replica
		// (the reply tuple's source), which is the proof that the
		// container's namespace made the choice, not its host.
		entries, err := harness.Docker(ctx, h1, "exec", "client", "grep", "dst="+vip.String()+" sport=[0-9]* dport=9000", "/proc/net/nf_conntrack")
		if err != nil {
			t.Fatalf("no conntrack entry of the held connection in the client's namespace: %v", err)
		}
		line := strings.Split(strings.TrimSpace(entries), "\n")[0]
		f := strings.Fields(line)
		left, _ := strconv.Atoi(f[4])
		if !strings.Contains(line, "ESTABLISHED") || left < kernel-120 || !strings.Contains(line, "dst="+vip.String()) ||
			!strings.Contains(line, "src="+replicas[heldBy].String()+" ") {
			t.Errorf("held connection's entry: %q; want ESTABLISHED, to %s, answered by %s (%s), %d s left of the kernel's %d",
				line, vip, heldBy, replicas[heldBy], left, kernel)
		}
		t.Logf("entry %q (kernel's established timeout %d s)", line, kernel)
		time.Sleep(30 * time.Second)
		if err := sayHeld("after-idle"); err != nil {
			t.Error(err)
		}
	})

	t.Run("replica stopped", func(t *testing.T) {
		var victim string
		for name := range replicas {
			if name != heldBy && where[name] != h1 {
				victim = name
				break
			}
		}
		if _, err := harness.Docker(ctx, where[victim], "stop", "-t", "1", victim); err != nil {
			t.Fatal(err)
		}
		// When meshnet on the client's host learnt of it.
		harness.Eventually(t, 15*time.Second, func() error {
			svc, err := webService(ctx, c, h1)
			if err != nil {
				return err
			}
			for _, r := range svc.Replicas {
				if r.Container == victim {
					return fmt.Errorf("%s still a replica", victim)
				}
			}
			return nil
		})
		learnt := time.Now()
		time.Sleep(time.Until(learnt.Add(time.Second)))
		counts, failed, _ := fetchWho(t, ctx, h1, url, 60, clientIP)
		t.Logf("60 connections from 1 s after meshnet learnt %s stopped: %v, %d failed", victim, counts, failed)
		if failed > 0 || counts[victim] > 0 {
			t.Errorf("after the stop: %d connections failed, %d reached %s", failed, counts[victim], victim)
		}
		if err := sayHeld("after-stop"); err != nil {
			t.Errorf("established connection to %s: %v", heldBy, err)
		}
	})

	// A host that goes away (cut off the underlay: its kernel no longer
	// answers the data-path probe either): 1 s after the client's host has
	// declared it dead, no new connection goes to its replicas and none
	// fails; the held connection (on another host) carries on.
	t.Run("host_gone", func(t *testing.T) {
		// Not the client's host, not the held connection's replica's.
		gone, others := hosts[2], []harness.Host{hosts[0], hosts[1]}
		if where[heldBy] == gone {
			gone, others = hosts[1], []harness.Host{hosts[0], hosts[2]}
		}
		if err := injectFault(ctx, gone, others, "drop", false); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := clearFault(context.Background(), gone); err != nil {
				t.Error(err)
			}
			waitAllAlive(t, ctx, c, hosts, 60*time.Second)
		}()
		cut := time.Now()
		harness.Eventually(t, 60*time.Second, func() error { return expectDataPath(ctx, c, h1, gone.Name(), "dead", "down") })
		t.Logf("%s sees %s dead, its data path down, %s after the cut", h1.Name(), gone.Name(), time.Since(cut).Round(time.Millisecond))
		time.Sleep(time.Second)
		counts, failed, _ := fetchWho(t, ctx, h1, url, 60, clientIP)
		t.Logf("60 connections 1 s after %s was declared dead: %v, %d failed", gone.Name(), counts, failed)
		for name, h := range where {
			if h == gone && counts[name] > 0 {
				t.Errorf("%s (on the dead host) got %d new connections", name, counts[name])
			}
		}
		if failed > 0 {
			t.Errorf("%d connections failed with %s gone", failed, gone.Name())
		}
		if err := sayHeld("host-gone"); err != nil {
			t.Errorf("established connection to %s: %v", heldBy, err)
		}
	})

	t.Run("gone", func(t *testing.T) {
		for name, h := range where {
			if _, err := harness.Docker(ctx, h, "rm", "-f", name); err != nil {
				t.Fatal(err)
			}
		}
		harness.Eventually(t, 90*time.Second, func() error {
			for _, h := range hosts {
				tables, err := h.Exec(ctx, "nft", "list", "tables")
				if err != nil {
					return err
				}
				addrs, err := h.Exec(ctx, "ip", "-4", "addr", "show", "dev", "lo")
				if err != nil {
					return err
				}
				if strings.Contains(tables, "meshnet-vip") || strings.Contains(addrs, vip.String()+"/") {
					return fmt.Errorf("%s still holds the VIP: %s %s", h.Name(), tables, addrs)
				}
			}
			return nil
		})
	})
}

// webService is the "web" service as meshctl on h shows it.
func webService(ctx context.Context, c *harness.Cluster, h harness.Host) (control.Service, error) {
	out, err := c.Meshctl(ctx, h, "-o", "json", "services")
	if err != nil {
		return control.Service{}, err
	}
	var svcs []control.Service
	if err := json.Unmarshal([]byte(out), &svcs); err != nil {
		return control.Service{}, fmt.Errorf("meshctl services: %w: %s", err, out)
	}
	for _, s := range svcs {
		if s.Name == "web" {
			return s, nil
		}
	}
	return control.Service{}, fmt.Errorf("%s: no service web in %s", h.Name(), out)
}

// fetchWho makes n requests to url from the client container, one new
// connection each, and counts the answering replicas. others are client
// addresses the replicas saw other than clientIP.
func fetchWho(t *testing.T, ctx context.Context, h harness.Host, url string, n int, clientIP netip.Addr) (counts map[string]int, failed int, others []string) {
	t.Helper()
	out, err := harness.Docker(ctx, h, "exec", "client", "sh", "-c", curlLoop(url, n))
	if err != nil {
		t.Fatalf("requests from the client: %v", err)
	}
	return whoAnswers(out, func(string) netip.Addr { return clientIP })
}

// curlLoop is a shell loop of n requests to url, a new connection each,
// "FAILED" for each that fails.
func curlLoop(url string, n int) string {
	return fmt.Sprintf("for i in $(seq %d); do curl -s -m 3 %s || echo FAILED; done", n, url)
}

// whoAnswers reads the answers of whoScript's CGI ("<replica> <client
// address>", one per line): requests per replica, lines that are no answer
// ("FAILED", an error), and the client addresses that differ from what
// want says the replica should have seen (nil want: none checked).
func whoAnswers(out string, want func(replica string) netip.Addr) (counts map[string]int, failed int, others []string) {
	counts = map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || f[0] == "FAILED" {
			failed++
			continue
		}
		counts[f[0]]++
		if want != nil && clientAddr(f[1]) != want(f[0]).String() {
			others = append(others, f[1])
		}
	}
	return counts, failed, others
}

// harnessPoll retries fn until it succeeds or timeout passes.
func harnessPoll(ctx context.Context, timeout time.Duration, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return harness.Poll(ctx, fn)
}

// holdInContainer opens a connection from container on h to whoScript's
// echo server at addr:9000 and keeps it open; it returns the replica it
// landed on and a function that sends a word on it and waits for the
// replica's echo.
func holdInContainer(t *testing.T, ctx context.Context, h harness.Host, container string, addr netip.Addr) (string, func(word string) error) {
	t.Helper()
	if _, err := harness.Docker(ctx, h, "exec", "-d", container, "sh", "-c",
		fmt.Sprintf("mkfifo /tmp/in; (echo first; sleep 1000) > /tmp/in & nc %s 9000 < /tmp/in > /tmp/held.out", addr)); err != nil {
		t.Fatal(err)
	}
	var heldBy string
	harness.Eventually(t, 10*time.Second, func() error {
		out, _ := harness.Docker(ctx, h, "exec", container, "cat", "/tmp/held.out")
		f := strings.Fields(out)
		if len(f) < 2 || f[1] != "first" {
			return fmt.Errorf("held connection answered %q", out)
		}
		heldBy = f[0]
		return nil
	})
	return heldBy, func(word string) error {
		// The writer keeps /tmp/in open; a second writer adds a line.
		if _, err := harness.Docker(ctx, h, "exec", container, "sh", "-c", "echo "+word+" > /tmp/in"); err != nil {
			return err
		}
		return harnessPoll(ctx, 5*time.Second, func() error {
			out, _ := harness.Docker(ctx, h, "exec", container, "cat", "/tmp/held.out")
			if !strings.Contains(out, heldBy+" "+word) {
				return fmt.Errorf("held connection to %s did not answer %q: %q", heldBy, word, out)
			}
			return nil
		})
	}
}
