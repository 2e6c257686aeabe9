package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestDaemonCrash checks what a crash of meshnetd must not do: running containers keep
// talking while it is down and after it is back, and the restarted daemon adopts the kernel
// state it finds (nothing recreated, duplicated or lost). It then checks what the death of a
// host must do: the others withdraw its forwarding and neighbour entries once it is dead, and
// put them back when it returns.
func TestDaemonCrash(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	var ips []netip.Addr
	for i, h := range hosts {
		ips = append(ips, runContainer(t, ctx, h, fmt.Sprintf("k%d", i+1), "app"))
	}
	for i, h := range hosts {
		for j, ip := range ips {
			if i != j {
				harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, h, fmt.Sprintf("k%d", i+1), ip) })
			}
		}
	}

	t.Run("kill -9 keeps traffic and kernel state", func(t *testing.T) {
		h1, h2 := hosts[0], hosts[1]
		before, err := kernelState(ctx, h1)
		if err != nil {
			t.Fatal(err)
		}
		// 40 pings 0.2 s apart span the crash, the restart and the first reconcile.
		pings := make(chan string, 1)
		go func() {
			out, _ := harness.Docker(ctx, h2, "exec", "k2", "ping", "-c", "40", "-i", "0.2", "-W", "1", ips[0].String())
			pings <- out
		}()
		time.Sleep(time.Second)
		d := c.Daemon(h1)
		if err := d.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if err := d.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitAllAlive(t, ctx, c, hosts, 30*time.Second)
		sent, received, err := pingCounts(<-pings)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("k2 -> k1 across the crash and restart of meshnetd on %s: %d of %d answered", h1.Name(), received, sent)
		if received < sent {
			t.Errorf("%d of %d pings from k2 to k1 were lost while meshnetd on %s crashed and restarted; want none", sent-received, sent, h1.Name())
		}
		// The restarted daemon has reconciled by now (it does at start); give it one more pass.
		harness.Eventually(t, 10*time.Second, func() error {
			after, err := kernelState(ctx, h1)
			if err != nil {
				return err
			}
			return diffKernelState(before, after)
		})
		for _, ip := range ips[1:] {
			harness.Eventually(t, 10*time.Second, func() error { return harness.Ping(ctx, h1, "k1", ip) })
		}
	})

	t.Run("dead host withdrawn and restored", func(t *testing.T) {
		h3 := hosts[2]
		mac, err := harness.Docker(ctx, h3, "exec", "k3", "cat", "/sys/class/net/eth0/address")
		if err != nil {
			t.Fatal(err)
		}
		mac = strings.ToLower(strings.TrimSpace(mac))
		observers := hosts[:2]
		want := func(present bool) func() error {
			return func() error {
				for _, h := range observers {
					fdb, neigh, err := overlayEntries(ctx, h, mac, ips[2])
					if err != nil {
						return err
					}
					if present && (len(fdb) == 0 || len(neigh) == 0) {
						return fmt.Errorf("%s has fdb %q and neighbour %q for k3 on %s; want both", h.Name(), fdb, neigh, h3.Name())
					}
					if !present && (len(fdb) > 0 || len(neigh) > 0) {
						return fmt.Errorf("%s still has fdb %q and neighbour %q for k3 on the dead %s", h.Name(), fdb, neigh, h3.Name())
					}
				}
				return nil
			}
		}
		harness.Eventually(t, 10*time.Second, want(true))
		// The host "dies": its daemon is gone and so is its data path (nothing of it
		// reaches the others). A daemon killed on a host that still carries traffic keeps
		// its entries (TestNoLossRestart).
		d := c.Daemon(h3)
		if err := d.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		if err := injectFault(ctx, h3, observers, "drop", false); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		harness.Eventually(t, 60*time.Second, func() error {
			return expectStates(ctx, c, observers, map[string]string{h3.Name(): "dead"})
		})
		dead := time.Since(killed)
		harness.Eventually(t, 5*time.Second, want(false))
		t.Logf("k3's entries withdrawn from %d hosts %s after its host's daemon was killed (declared dead after %s)",
			len(observers), time.Since(killed).Round(time.Millisecond), dead.Round(time.Millisecond))
		if err := clearFault(ctx, h3); err != nil {
			t.Fatal(err)
		}
		if err := d.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitAllAlive(t, ctx, c, hosts, 30*time.Second)
		harness.Eventually(t, 10*time.Second, want(true))
		harness.Eventually(t, 10*time.Second, func() error { return harness.Ping(ctx, hosts[0], "k1", ips[2]) })
	})
}

var (
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingReply   = regexp.MustCompile(`\b(?:icmp_)?seq=(\d+)`)
	pingStamp   = regexp.MustCompile(`^\[(\d+)\.(\d+)\]`)
)

// pingCounts reads ping's summary line.
func pingCounts(out string) (sent, received int, err error) {
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no summary in ping output:\n%s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, nil
}

// pingGaps lists the sequence numbers from first on (busybox's ping counts
// from 0, iputils' from 1) that ping printed no reply for, as ranges
// ("412-418 (4.12 s)"), with when each range was sent given ping's
// interval and, where replies carry iputils' -D stamps, the last reply
// before the range and the first after it in UTC: what to look for in the
// daemons' logs when pings are lost.
func pingGaps(out string, first, sent int, interval time.Duration) string {
	answered := make([]bool, sent)
	stamps := map[int]time.Time{}
	for _, line := range strings.Split(out, "\n") {
		m := pingReply.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n-first < 0 || n-first >= sent {
			continue
		}
		answered[n-first] = true
		if d := pingStamp.FindStringSubmatch(line); d != nil {
			sec, _ := strconv.ParseInt(d[1], 10, 64)
			ns, _ := strconv.ParseInt((d[2] + "000000000")[:9], 10, 64)
			stamps[n] = time.Unix(sec, ns).UTC()
		}
	}
	stamp := func(n int) string {
		if at, ok := stamps[n]; ok {
			return at.Format("15:04:05.000")
		}
		return "?"
	}
	var gaps []string
	for i := 0; i < sent; i++ {
		if answered[i] {
			continue
		}
		j := i
		for j+1 < sent && !answered[j+1] {
			j++
		}
		at := (time.Duration(i) * interval).Seconds()
		g := fmt.Sprintf("%d (%.2f s", i+first, at)
		if j > i {
			g = fmt.Sprintf("%d-%d (%.2f s", i+first, j+first, at)
		}
		if len(stamps) > 0 {
			g += fmt.Sprintf("; replies stop after %s and resume at %s UTC", stamp(i+first-1), stamp(j+first+1))
		}
		gaps = append(gaps, g+")")
		i = j
	}
	return strings.Join(gaps, ", ")
}

// kernelState lists, one entry per line, what meshnet's dataplane put in h's kernel: its
// links (with their indexes, so a recreated link shows), bridge port flags, addresses,
// routes, permanent forwarding and neighbour entries, the bridges' static entries, and its
// firewall rules (without counters).
func kernelState(ctx context.Context, h harness.Host) ([]string, error) {
	var out []string
	add := func(prefix string, args ...string) error {
		s, err := h.Exec(ctx, args...)
		if err != nil {
			return err
		}
		// nft prints rules under "chain NAME {": keep the chain with each rule, so that a
		// rule repeated in one chain shows and one in two chains does not.
		section := ""
		for _, line := range strings.Split(s, "\n") {
			line = strings.TrimSpace(counters.ReplaceAllString(line, ""))
			switch {
			case line == "" || line == "}":
				continue
			case strings.HasSuffix(line, "{"):
				section = strings.TrimSuffix(line, " {") + ": "
				continue
			}
			out = append(out, prefix+": "+section+line)
		}
		return nil
	}
	links, err := hostLinks(ctx, h)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		name := strings.SplitN(l.name, "@", 2)[0]
		if !strings.HasPrefix(name, "mn") {
			continue
		}
		// Index, name, flags, master: what a recreation or a lost enslavement would change.
		entry := l.index + " " + name + " " + l.flags
		if l.master != "" {
			entry += " master " + l.master
		}
		out = append(out, "link: "+entry)
		if strings.HasPrefix(name, "mnvx") {
			if err := add("fdb "+name, "sh", "-c", "bridge fdb show dev "+name+" | grep -v ' master '"); err != nil {
				return nil, err
			}
			if err := add("neigh "+name, "ip", "neigh", "show", "dev", name, "nud", "permanent"); err != nil {
				return nil, err
			}
		}
		if strings.HasPrefix(name, "mnh") || strings.HasPrefix(name, "mnvx") {
			// Bridge port flags: learning, flood, hairpin.
			if err := add("port "+name, "bridge", "-d", "link", "show", "dev", name); err != nil {
				return nil, err
			}
		}
		if strings.HasPrefix(name, "mnbr") {
			// The bridge's own static entries (every container's MAC and its port).
			if err := add("brfdb "+name, "sh", "-c", "bridge fdb show br "+name+" | grep ' static' || true"); err != nil {
				return nil, err
			}
			// IPv4 only: the kernel's IPv6 link-local address flips "tentative" on its own.
			if err := add("addr "+name, "ip", "-4", "-o", "addr", "show", "dev", name); err != nil {
				return nil, err
			}
			if err := add("route "+name, "ip", "route", "show", "dev", name); err != nil {
				return nil, err
			}
		}
	}
	steps := []struct {
		prefix string
		args   []string
	}{
		{"lo", []string{"ip", "-o", "addr", "show", "dev", "lo", "label", "lo:meshnet"}},
		{"nft", []string{"nft", "list", "table", "inet", "meshnet"}},
		{"nft bridge", []string{"nft", "list", "table", "bridge", "meshnet"}},
		{"iptables DOCKER-USER", []string{"iptables", "-S", "DOCKER-USER"}},
		{"iptables FORWARD", []string{"iptables", "-S", "FORWARD"}},
	}
	for _, s := range steps {
		if err := add(s.prefix, s.args...); err != nil {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}

var counters = regexp.MustCompile(`counter packets \d+ bytes \d+|valid_lft \S+ preferred_lft \S+`)

func indexOf(f []string, s string) int {
	for i, x := range f {
		if x == s {
			return i
		}
	}
	return -1
}

// diffKernelState says what differs between two kernelState listings: entries lost,
// entries gained, entries present more than once.
func diffKernelState(before, after []string) error {
	count := func(l []string) map[string]int {
		m := map[string]int{}
		for _, s := range l {
			m[s]++
		}
		return m
	}
	b, a := count(before), count(after)
	var problems []string
	for s, n := range b {
		if a[s] < n {
			problems = append(problems, "lost: "+s)
		}
	}
	for s, n := range a {
		if b[s] < n {
			problems = append(problems, "gained: "+s)
		}
		if n > 1 {
			problems = append(problems, fmt.Sprintf("present %d times: %s", n, s))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("kernel state changed across the restart:\n%s", strings.Join(problems, "\n"))
	}
	return nil
}
