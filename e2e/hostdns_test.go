package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestHostDNS checks meshnet as the resolver of a whole host, as the README tells operators
// to set it up: with the engine's daemon.json {"dns": ["169.254.53.53"]}, a container on
// Docker's default bridge (which asks meshnet directly) and one on a user-defined bridge
// network (through Docker's resolver, 127.0.0.11) both resolve an outside name served by the
// test's upstream. From another host over the underlay the same query is REFUSED, also when
// it forges a source address of the host's docker0 subnet: it arrives on the underlay
// interface, and the upstream never hears of it.
func TestHostDNS(t *testing.T) {
	if remoteHosts() {
		t.Skip("needs the simulated underlay: the test serves the upstream resolver on it and forges packets on it")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	h1, other := hosts[0], hosts[1]
	up := startUpstream(t, ctx, c, h1.Addr())

	if err := harness.ConfigureEngine(ctx, h1, `{"dns": ["`+dnsAddr+`"]}`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Registered after the suite's reset, so it runs first: the containers go, then the
		// engine gets its default configuration back for the next test.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, _ = harness.Docker(ctx, h1, "rm", "-f", "onbridge", "onplain")
		_, _ = harness.Docker(ctx, h1, "network", "rm", "plain")
		if err := harness.ConfigureEngine(ctx, h1, ""); err != nil {
			t.Errorf("restoring the engine's configuration on %s: %v", h1.Name(), err)
		}
	})
	if _, err := c.StartMeshnet(ctx, h1, "--dns-upstream", up.addr); err != nil {
		t.Fatalf("starting meshnetd on %s: %v", h1.Name(), err)
	}

	t.Run("default bridge", func(t *testing.T) {
		runContainer(t, ctx, h1, "onbridge", "bridge")
		conf, err := harness.Docker(ctx, h1, "exec", "onbridge", "cat", "/etc/resolv.conf")
		if err != nil || !strings.Contains(conf, "nameserver "+dnsAddr) {
			t.Fatalf("resolv.conf of a container on the default bridge (engine dns %s): %v\n%s", dnsAddr, err, conf)
		}
		// Through the container's own resolver configuration, as an application resolves.
		harness.Eventually(t, 20*time.Second, func() error {
			out, err := harness.Docker(ctx, h1, "exec", "onbridge", "nslookup", "bridge.example.test")
			if err != nil || !strings.Contains(out, up.answer) {
				return fmt.Errorf("nslookup bridge.example.test on the default bridge: %v\n%s", err, out)
			}
			return nil
		})
		client := containerNetns{h: h1, name: "onbridge"}
		rcode, answers, err := client.dig(ctx, dnsAddr, "dig.example.test", "A")
		if err != nil || rcode != "NOERROR" || !slices.Equal(answers, []string{up.answer}) {
			t.Errorf("dig.example.test from the default bridge: %s %v %v; want NOERROR [%s]", rcode, answers, err, up.answer)
		}
	})

	t.Run("user-defined bridge through Docker's resolver", func(t *testing.T) {
		if _, err := harness.Docker(ctx, h1, "network", "create", "--label", harness.Label, "plain"); err != nil {
			t.Fatal(err)
		}
		runContainer(t, ctx, h1, "onplain", "plain")
		harness.Eventually(t, 20*time.Second, func() error {
			out, err := harness.Docker(ctx, h1, "exec", "onplain", "nslookup", "plain.example.test")
			if err != nil || !strings.Contains(out, up.answer) {
				return fmt.Errorf("nslookup plain.example.test on a user-defined bridge: %v\n%s", err, out)
			}
			return nil
		})
	})

	t.Run("refused to the underlay", func(t *testing.T) {
		// The other host sends to the DNS address through h1, as a router on the underlay can
		// (an address a meshnetd of an earlier test left on its lo would answer instead).
		_, _ = other.Exec(ctx, "ip", "addr", "del", dnsAddr+"/32", "dev", "lo")
		if _, err := other.Exec(ctx, "ip", "route", "replace", dnsAddr+"/32", "via", h1.Addr().String()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = other.Exec(context.Background(), "ip", "route", "del", dnsAddr+"/32") })
		out, err := other.Exec(ctx, "dig", "+tries=1", "+time=2", "@"+dnsAddr, "underlay.example.test", "A")
		if err != nil || !strings.Contains(out, "status: REFUSED") {
			t.Errorf("underlay.example.test from %s over the underlay: want REFUSED, got %v:\n%s", other.Name(), err, out)
		}
		if up.askedFor("underlay.example.test.") {
			t.Errorf("the upstream was asked underlay.example.test for %s", other.Name())
		}
	})

	t.Run("forged container source from the underlay", func(t *testing.T) {
		// A source in h1's docker0 subnet, sent from the other host: the reply would go to h1's
		// docker0, so the only evidence is the upstream's log and a counter on h1 showing the
		// query was delivered (a strict rp_filter would drop it; hosts run loose, as here).
		const forged = "172.17.0.99"
		h1If, err := underlayLink(ctx, h1)
		if err != nil {
			t.Fatal(err)
		}
		otherIf, err := underlayLink(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		restore := setSysctls(t, ctx, h1, map[string]string{
			"net.ipv4.conf.all.rp_filter":          "2",
			"net.ipv4.conf." + h1If + ".rp_filter": "2",
		})
		t.Cleanup(restore)
		// The other host's own docker0 has the same subnet, and Docker masquerades it on the
		// way out: exempt the forged address, or h1 would see the other host's address.
		for _, cmd := range [][]string{
			{"ip", "route", "replace", dnsAddr + "/32", "via", h1.Addr().String()},
			{"ip", "addr", "add", forged + "/32", "dev", otherIf},
			{"iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", forged + "/32", "-j", "RETURN"},
		} {
			if _, err := other.Exec(ctx, cmd...); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			bg := context.Background()
			_, _ = other.Exec(bg, "iptables", "-t", "nat", "-D", "POSTROUTING", "-s", forged+"/32", "-j", "RETURN")
			_, _ = other.Exec(bg, "ip", "addr", "del", forged+"/32", "dev", otherIf)
			_, _ = other.Exec(bg, "ip", "route", "del", dnsAddr+"/32")
		})
		for _, cmd := range [][]string{
			{"nft", "add", "table", "ip", "e2e_hostdns"},
			{"nft", "add", "chain", "ip", "e2e_hostdns", "in", "{ type filter hook input priority -10 ; }"},
			{"nft", "add", "rule", "ip", "e2e_hostdns", "in", "ip", "saddr", forged, "udp", "dport", "53", "counter"},
		} {
			if _, err := h1.Exec(ctx, cmd...); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { _, _ = h1.Exec(context.Background(), "nft", "delete", "table", "ip", "e2e_hostdns") })

		// No answer comes back here; dig's failure is expected.
		out, _ := other.Exec(ctx, "dig", "-b", forged, "+tries=1", "+time=2", "@"+dnsAddr, "forged.example.test", "A")
		if strings.Contains(out, "status: NOERROR") {
			t.Errorf("the forged query was answered to %s:\n%s", other.Name(), out)
		}
		n, err := nftCounter(ctx, h1, "e2e_hostdns", "in")
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			route, _ := other.Exec(ctx, "ip", "route", "get", dnsAddr, "from", forged)
			rp, _ := h1.Exec(ctx, "sh", "-c", "grep . /proc/sys/net/ipv4/conf/*/rp_filter")
			t.Fatalf("the forged query never reached %s's input: the check below would prove nothing\ndig:\n%s\n%s: %s\n%s rp_filter:\n%s", h1.Name(), out, other.Name(), route, h1.Name(), rp)
		}
		time.Sleep(2 * time.Second) // a forward would have reached the upstream by now
		if up.askedFor("forged.example.test.") {
			t.Errorf("%s forwarded a query from the underlay that forged its container source %s", h1.Name(), forged)
		} else {
			t.Logf("forged query delivered to %s (%d packets) and not forwarded", h1.Name(), n)
		}
	})

	for _, src := range up.sources() {
		if src != h1.Addr() {
			t.Errorf("the upstream was asked by %s; only %s (for its containers) should forward", src, h1.Addr())
		}
	}
}

// underlayLink names the interface that holds h's underlay address.
func underlayLink(ctx context.Context, h harness.Host) (string, error) {
	out, err := h.Exec(ctx, "ip", "-o", "-4", "addr", "show", "to", h.Addr().String()+"/32")
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) < 2 {
		return "", fmt.Errorf("no interface on %s holds %s: %q", h.Name(), h.Addr(), out)
	}
	name, _, _ := strings.Cut(f[1], "@")
	return name, nil
}

// setSysctls sets sysctls on h and returns a function that puts the old values back.
func setSysctls(t *testing.T, ctx context.Context, h harness.Host, set map[string]string) func() {
	t.Helper()
	old := map[string]string{}
	for k, v := range set {
		prev, err := h.Exec(ctx, "sysctl", "-n", k)
		if err != nil {
			t.Fatal(err)
		}
		old[k] = strings.TrimSpace(prev)
		if _, err := h.Exec(ctx, "sysctl", "-w", k+"="+v); err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		for k, v := range old {
			_, _ = h.Exec(context.Background(), "sysctl", "-w", k+"="+v)
		}
	}
}

var nftPackets = regexp.MustCompile(`counter packets (\d+)`)

// nftCounter sums the packet counters of a chain.
func nftCounter(ctx context.Context, h harness.Host, table, chain string) (int, error) {
	out, err := h.Exec(ctx, "nft", "list", "chain", "ip", table, chain)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range nftPackets.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n, nil
}
