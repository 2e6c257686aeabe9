package e2e

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestCleanup is the uninstall: on a host with a vxlan and a wireguard network, containers on
// both and a published port, `meshnetd --cleanup` is refused while meshnetd runs (nothing
// removed), and once the daemon is stopped it leaves the host's links, addresses, routes,
// nftables ruleset and iptables rules as they were before meshnet ran; a second run finds
// nothing and succeeds.
func TestCleanup(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	h1, h2 := hosts[0], hosts[1]
	before, err := hostNetState(ctx, h1)
	if err != nil {
		t.Fatal(err)
	}
	startMesh(t, ctx, c, hosts[:2])
	waitAllAlive(t, ctx, c, hosts[:2], 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts[:2], "app", "10.42.0.0/24")
	createNetworkEverywhere(t, ctx, hosts[:2], "wg", "10.44.0.0/24", "-o", "dataplane=wireguard")
	runContainer(t, ctx, h1, "a1", "app", "-p", "8081:80")
	runContainer(t, ctx, h1, "w1", "wg")
	a2 := runContainer(t, ctx, h2, "a2", "app")
	w2 := runContainer(t, ctx, h2, "w2", "wg")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h1, "a1", a2) })
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h1, "w1", w2) })

	during, err := hostNetState(ctx, h1)
	if err != nil {
		t.Fatal(err)
	}
	if diffNetState(before, during) == nil {
		t.Fatal("meshnet running with two networks changed nothing in the host's state as this test reads it: the comparison below could not fail")
	}
	bin, err := c.InstalledBinaries(ctx, h1)
	if err != nil {
		t.Fatal(err)
	}

	out, err := h1.Exec(ctx, bin.Meshnetd, "--cleanup")
	var ce *harness.CommandError
	if !errors.As(err, &ce) || ce.ExitCode() == 0 || !strings.Contains(out+ce.Output, "cleanup refused: a meshnetd is running") {
		t.Fatalf("--cleanup under a running meshnetd: err %v, output %q; want a refusal", err, out)
	}
	t.Logf("refused while running: %s", strings.TrimSpace(ce.Output))
	if err := harness.Ping(ctx, h1, "a1", a2); err != nil {
		t.Fatalf("the refused cleanup cut a1 off: %v", err)
	}

	if err := c.Daemon(h1).Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		start := time.Now()
		out, err := h1.Exec(ctx, bin.Meshnetd, "--cleanup")
		if err != nil {
			t.Fatalf("--cleanup run %d with meshnetd stopped: %v", run, err)
		}
		t.Logf("cleanup run %d took %s: %s", run, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		after, err := hostNetState(ctx, h1)
		if err != nil {
			t.Fatal(err)
		}
		if err := diffNetState(before, after); err != nil {
			t.Errorf("after cleanup run %d the host differs from before meshnet ran:\n%v", run, err)
		}
	}
}

// netStateNoise is what changes on a host by itself: counters, address lifetimes, nft handles.
var netStateNoise = regexp.MustCompile(`counter packets \d+ bytes \d+|valid_lft \S+ preferred_lft \S+| # handle \d+|\[\d+:\d+\]`)

// hostNetState lists, one line each, h's links (name, kind, master), addresses, routes of
// every table, the nftables ruleset and the iptables and ip6tables rules of every table.
func hostNetState(ctx context.Context, h harness.Host) ([]string, error) {
	var out []string
	links, err := hostLinks(ctx, h)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		entry := "link: " + l.name
		if l.master != "" {
			entry += " master " + l.master
		}
		out = append(out, entry)
	}
	for _, cmd := range [][]string{
		{"ip", "-o", "addr", "show"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"nft", "list", "ruleset"},
		{"iptables-save"},
		{"ip6tables-save"},
	} {
		s, err := h.Exec(ctx, cmd...)
		if err != nil {
			return nil, fmt.Errorf("%s on %s: %w", strings.Join(cmd, " "), h.Name(), err)
		}
		for _, line := range strings.Split(s, "\n") {
			line = strings.TrimSpace(netStateNoise.ReplaceAllString(line, ""))
			// IPv6 link-local addresses (and their local routes) are the kernel's: on a
			// host made seconds ago eth0's is still "tentative" (duplicate address
			// detection), and its route appears once that ends. meshnet's bridges' own
			// go with the bridges, which the links show.
			if line == "" || line == "}" || strings.HasPrefix(line, "#") || strings.Contains(line, "fe80:") {
				continue
			}
			out = append(out, cmd[0]+": "+line)
		}
	}
	return out, nil
}

// diffNetState says which lines one state has more often than the other.
func diffNetState(before, after []string) error {
	count := map[string]int{}
	for _, s := range before {
		count[s]++
	}
	for _, s := range after {
		count[s]--
	}
	var problems []string
	for s, n := range count {
		switch {
		case n > 0:
			problems = append(problems, "missing: "+s)
		case n < 0:
			problems = append(problems, "extra:   "+s)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return errors.New(strings.Join(problems, "\n"))
}

// ipLink is one line of `ip -o link show`: index ("5:"), name as ip prints
// it ("mnh1@if4"), flags ("<BROADCAST,UP>") and master ("" when none).
type ipLink struct{ index, name, flags, master string }

// hostLinks lists h's links.
func hostLinks(ctx context.Context, h harness.Host) ([]ipLink, error) {
	out, err := h.Exec(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return nil, err
	}
	var links []ipLink
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		l := ipLink{index: f[0], name: strings.TrimSuffix(f[1], ":"), flags: f[2]}
		if i := indexOf(f, "master"); i >= 0 && i+1 < len(f) {
			l.master = f[i+1]
		}
		links = append(links, l)
	}
	return links, nil
}
