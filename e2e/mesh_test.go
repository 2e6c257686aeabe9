package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/e2e/harness"
)

// TestRoutingMesh: a service with replicas on host1 and host2 publishes
// its port through the routing mesh (label meshnet.publish=8080:8080/tcp).
// curl from another host to each host's own address, host3 included (it
// has no replica), is answered, every request; connections spread over
// both replicas; the replica logs the requesting host's own address (no
// SNAT), except the replica on the requesting host itself, which sees the
// entry host (its replies would stay on its own host otherwise:
// dataplane/mesh.go, meshHairpin); a stopped replica gets no new
// connection once meshnet knows; and when the service is gone no mesh
// rule, return route or held port is left.
func TestRoutingMesh(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	ds := startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.48.0.0/24")

	for i, h := range hosts[:2] {
		name := fmt.Sprintf("web-%d", i+1)
		args := []string{"run", "-d", "--label", harness.Label, "--network", "app", "--name", name, "--hostname", name,
			"--label", "meshnet.service=web", "--label", "meshnet.publish=8080:8080/tcp,9000:9000/tcp",
			"--label", "meshnet.endpoint-mode=vip", harness.Image, "sh", "-c", whoScript}
		if _, err := harness.Docker(ctx, h, args...); err != nil {
			t.Fatalf("starting %s on %s: %v", name, h.Name(), err)
		}
	}
	// Every host publishes the port, over both replicas.
	harness.Eventually(t, 30*time.Second, func() error {
		for _, h := range hosts {
			p, err := meshPort(ctx, c, h)
			if err != nil {
				return err
			}
			if p.HostPort != 8080 || p.TargetPort != 8080 || p.Backends != 2 {
				return fmt.Errorf("%s: meshctl services shows web published as %+v", h.Name(), p)
			}
		}
		return nil
	})
	if out, err := c.Meshctl(ctx, hosts[2], "services"); err == nil {
		t.Logf("meshctl services on %s:\n%s", hosts[2].Name(), out)
	}

	// Entering at each host, from the next one.
	for i, entry := range hosts {
		client := hosts[(i+1)%len(hosts)]
		url := fmt.Sprintf("http://%s/cgi-bin/who", netip.AddrPortFrom(entry.Addr(), 8080))
		harness.Eventually(t, 15*time.Second, func() error {
			_, err := client.Exec(ctx, "curl", "-sS", "-m", "2", url)
			return err
		})
		// The replica on the client's own host sees the entry host.
		own := map[harness.Host]string{hosts[0]: "web-1", hosts[1]: "web-2"}[client]
		counts, failed, others := curlWho(t, ctx, client, url, 20, client.Addr(), own, entry.Addr())
		t.Logf("entering at %s from %s: %v", entry.Name(), client.Name(), counts)
		if failed > 0 || len(others) > 0 {
			t.Errorf("entering at %s: %d of 20 requests failed; replicas saw the client as %v, want %s (%s: %s)",
				entry.Name(), failed, others, client.Addr(), own, entry.Addr())
		}
		if counts["web-1"] == 0 || counts["web-2"] == 0 {
			t.Errorf("entering at %s: %v, want both replicas used", entry.Name(), counts)
		}
	}

	// A client outside the cluster (the root namespace on the hosts'
	// network): every replica sees its own address, whatever the entry.
	outside := addRootUnderlayAddr(t, ctx, c, hosts[0].Addr())
	for _, entry := range hosts {
		url := fmt.Sprintf("http://%s/cgi-bin/who", netip.AddrPortFrom(entry.Addr(), 8080))
		counts, failed, others := httpWho(t, outside, url, 20)
		t.Logf("entering at %s from outside (%s): %v", entry.Name(), outside, counts)
		if failed > 0 || len(others) > 0 || counts["web-1"] == 0 || counts["web-2"] == 0 {
			t.Errorf("entering at %s from outside: %v, %d of 20 failed, seen as %v; want both replicas, all answered, the client's own address %s",
				entry.Name(), counts, failed, others, outside)
		}
	}

	// Established connections survive kill -9 of meshnetd on the entry
	// host and on both replicas' hosts, and a restart of the entry host's
	// engine: 6 held open from outside through host3's port 9000 (host3
	// has no replica; the replicas run an echo server there), 3 on each
	// replica by the round robin.
	var held []*heldConn
	for i := range 6 {
		d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(outside, 0)), Timeout: 3 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(hosts[2].Addr(), 9000).String())
		if err != nil {
			t.Fatalf("held connection %d: %v", i, err)
		}
		defer conn.Close()
		h := &heldConn{c: conn, r: bufio.NewReader(conn)}
		if h.who, err = h.echo("first"); err != nil {
			t.Fatalf("held connection %d: %v", i, err)
		}
		held = append(held, h)
	}
	var on []string
	for _, h := range held {
		on = append(on, h.who)
	}
	t.Logf("held connections from outside through %s:9000 land on %v", hosts[2].Name(), on)
	// And one from a container on host1 to the service's VIP.
	var vip netip.Addr
	harness.Eventually(t, 15*time.Second, func() error {
		svcs, err := servicesOn(ctx, c, hosts[0])
		if err == nil && len(svcs["web"].VIPs) != 1 {
			err = fmt.Errorf("web has VIPs %v", svcs["web"].VIPs)
		}
		if err == nil {
			vip, err = netip.ParseAddr(svcs["web"].VIPs[0].Addr)
		}
		return err
	})
	runContainer(t, ctx, hosts[0], "vipclient", "app")
	vipHeldBy, sayVIP := holdInContainer(t, ctx, hosts[0], "vipclient", vip)
	t.Logf("held connection from vipclient on %s through the VIP %s lands on %s", hosts[0].Name(), vip, vipHeldBy)
	for _, d := range ds {
		if err := d.Kill(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second)
	for _, d := range ds {
		if err := d.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)
	if err := hosts[2].KillEngine(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hosts[2].StartEngine(ctx); err != nil {
		t.Fatal(err)
	}
	for i, h := range held {
		if who, err := h.echo("again"); err != nil || who != h.who {
			t.Errorf("held connection %d (on %s) after the kills and %s's engine restart: %q, %v", i, h.who, hosts[2].Name(), who, err)
		}
	}
	if err := sayVIP("again"); err != nil {
		t.Errorf("the connection held through the VIP after the kills: %v", err)
	}

	// Local replicas preferred (meshnet.publish-prefer=local on a third
	// replica, on host1: any replica asking is enough): what enters at host1
	// stays on host1's two replicas; host3, without one, spreads over all.
	args := []string{"run", "-d", "--label", harness.Label, "--network", "app", "--name", "web-3", "--hostname", "web-3",
		"--label", "meshnet.service=web", "--label", "meshnet.publish=8080:8080/tcp,9000:9000/tcp", "--label", "meshnet.publish-prefer=local",
		"--label", "meshnet.endpoint-mode=vip", harness.Image, "sh", "-c", whoScript}
	if _, err := harness.Docker(ctx, hosts[0], args...); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		for _, h := range hosts {
			if p, err := meshPort(ctx, c, h); err != nil || p.Backends != 3 || !p.PreferLocal {
				return fmt.Errorf("%s: web published as %+v (%v), want 3 backends, local first", h.Name(), p, err)
			}
		}
		return nil
	})
	url1 := fmt.Sprintf("http://%s/cgi-bin/who", netip.AddrPortFrom(hosts[0].Addr(), 8080))
	url3 := fmt.Sprintf("http://%s/cgi-bin/who", netip.AddrPortFrom(hosts[2].Addr(), 8080))
	if counts, failed, _ := httpWho(t, outside, url1, 12); failed > 0 || counts["web-2"] > 0 || counts["web-1"] == 0 || counts["web-3"] == 0 {
		t.Errorf("prefer local, entering at %s: %v, %d failed; want host1's web-1 and web-3 only", hosts[0].Name(), counts, failed)
	}
	if counts, failed, _ := httpWho(t, outside, url3, 12); failed > 0 || len(counts) != 3 {
		t.Errorf("prefer local, entering at %s (no replica): %v, %d failed; want all 3 replicas", hosts[2].Name(), counts, failed)
	}
	if _, err := harness.Docker(ctx, hosts[0], "rm", "-f", "web-3"); err != nil {
		t.Fatal(err)
	}

	// The host of a replica cut off the underlay: once host3 has it dead
	// with its data path down, what enters at host3 goes to web-1 alone,
	// none failing.
	if err := injectFault(ctx, hosts[1], []harness.Host{hosts[0], hosts[2]}, "drop", false); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	harness.Eventually(t, 60*time.Second, func() error { return expectDataPath(ctx, c, hosts[2], hosts[1].Name(), "dead", "down") })
	t.Logf("%s sees %s dead, its data path down, %s after the cut", hosts[2].Name(), hosts[1].Name(), time.Since(cut).Round(time.Millisecond))
	time.Sleep(time.Second)
	if counts, failed, _ := httpWho(t, outside, url3, 10); failed > 0 || counts["web-1"] != 10 {
		t.Errorf("with %s gone, 10 requests entering at %s: %v, %d failed; want all on web-1", hosts[1].Name(), hosts[2].Name(), counts, failed)
	}
	if err := clearFault(ctx, hosts[1]); err != nil {
		t.Fatal(err)
	}
	waitAllAlive(t, ctx, c, hosts, 60*time.Second)
	harness.Eventually(t, 30*time.Second, func() error {
		for _, h := range hosts {
			if p, err := meshPort(ctx, c, h); err != nil || p.Backends != 2 {
				return fmt.Errorf("%s: web published as %+v (%v), want 2 backends again", h.Name(), p, err)
			}
		}
		return nil
	})

	// A stopped replica gets no new connection once every host knows.
	if _, err := harness.Docker(ctx, hosts[1], "stop", "-t", "1", "web-2"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, func() error {
		for _, h := range hosts {
			if p, err := meshPort(ctx, c, h); err != nil || p.Backends != 1 {
				return fmt.Errorf("%s: web published as %+v (%v), want 1 backend", h.Name(), p, err)
			}
		}
		return nil
	})
	url := fmt.Sprintf("http://%s/cgi-bin/who", netip.AddrPortFrom(hosts[2].Addr(), 8080))
	counts, failed, _ := curlWho(t, ctx, hosts[0], url, 10, hosts[0].Addr(), "web-1", hosts[2].Addr())
	if failed > 0 || counts["web-1"] != 10 {
		t.Errorf("with web-2 stopped, 10 requests entering at %s: %v, %d failed; want all on web-1", hosts[2].Name(), counts, failed)
	}

	// Gone: nothing left.
	for i, h := range hosts[:2] {
		if _, err := harness.Docker(ctx, h, "rm", "-f", fmt.Sprintf("web-%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 15*time.Second, func() error {
		for _, h := range hosts {
			for cmd, gone := range map[string]string{"nft list ruleset": "mesh tcp 8080", "ip rule show": "lookup 18359",
				"iptables -S FORWARD": "mesh tcp", "ss -ltnH": ":8080"} {
				out, err := h.Exec(ctx, "sh", "-c", cmd)
				if err != nil {
					return fmt.Errorf("%s: %s: %v", h.Name(), cmd, err)
				}
				if strings.Contains(out, gone) {
					return fmt.Errorf("%s: %s still shows %q:\n%s", h.Name(), cmd, gone, out)
				}
			}
		}
		return nil
	})
}

// meshPort is the routing-mesh port of service web as h's meshctl shows it.
func meshPort(ctx context.Context, c *harness.Cluster, h harness.Host) (control.ServicePort, error) {
	out, err := c.Meshctl(ctx, h, "-o", "json", "services")
	if err != nil {
		return control.ServicePort{}, err
	}
	var svcs []control.Service
	if err := json.Unmarshal([]byte(out), &svcs); err != nil {
		return control.ServicePort{}, fmt.Errorf("meshctl services on %s: %w: %s", h.Name(), err, out)
	}
	for _, s := range svcs {
		for _, p := range s.Published {
			if s.Name == "web" && p.HostPort == 8080 {
				return p, nil
			}
		}
	}
	return control.ServicePort{}, fmt.Errorf("%s: service web has no published port 8080 in %s", h.Name(), out)
}

// curlWho makes n requests to url from host h's own namespace, a new
// connection each, and counts the answering replicas; others are client
// addresses the replicas saw other than want (wantOwn for replica own).
func curlWho(t *testing.T, ctx context.Context, h harness.Host, url string, n int, want netip.Addr, own string, wantOwn netip.Addr) (counts map[string]int, failed int, others []string) {
	t.Helper()
	out, err := h.Exec(ctx, "sh", "-c", curlLoop(url, n))
	if err != nil {
		t.Fatalf("requests from %s: %v", h.Name(), err)
	}
	return whoAnswers(out, func(replica string) netip.Addr {
		if replica == own {
			return wantOwn
		}
		return want
	})
}

// httpWho makes n requests to url from this process (the root namespace),
// from address from, a new connection each; others are client addresses
// the replicas saw other than from.
func httpWho(t *testing.T, from netip.Addr, url string, n int) (counts map[string]int, failed int, others []string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), Timeout: 3 * time.Second}
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	counts = map[string]int{}
	for range n {
		resp, err := client.Get(url)
		if err != nil {
			failed++
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		f := strings.Fields(string(body))
		if err != nil || len(f) != 2 {
			failed++
			continue
		}
		counts[f[0]]++
		if a, err := netip.ParseAddr(strings.Trim(f[1], "[]")); err != nil || a.Unmap() != from {
			others = append(others, f[1])
		}
	}
	return counts, failed, others
}

// heldConn is a connection held open to whoScript's echo server.
type heldConn struct {
	c   net.Conn
	r   *bufio.Reader
	who string // the replica it landed on
}

// echo sends word and returns the replica's name from the echoed line
// ("<hostname> <word>").
func (h *heldConn) echo(word string) (string, error) {
	_ = h.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(h.c, word); err != nil {
		return "", err
	}
	line, err := h.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[1] != word {
		return "", fmt.Errorf("echo server answered %q", line)
	}
	return f[0], nil
}
