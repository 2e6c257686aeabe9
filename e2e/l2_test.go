package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestSniffSpoof is issue 15 as a hostile user would try it, on real engines: containers A
// and B on host1, C on host2, one network. A captures on its interface (a raw socket in its
// namespace, as any container with Docker's default CAP_NET_RAW can) while B pings C and
// fetches a page from it: A sees none of it, not even B's ARP for C. Then A forges frames
// with C's MAC and address, with its own MAC and C's address, and ARP claiming C's address
// is at A's MAC, for five seconds, while B keeps pinging C: B loses nothing, neither B nor
// C receives a forged frame, the drops are counted in table bridge meshnet, and C's MAC
// stays a static entry of host1's bridge behind the vxlan port. The same on a wireguard
// network.
func TestSniffSpoof(t *testing.T) {
	if remoteHosts() {
		t.Skip("runs l2probe from the test machine's file system: simulated hosts only")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts[:2], "app", "10.42.0.0/24")
	createNetworkEverywhere(t, ctx, hosts[:2], "sec", "10.44.0.0/24", "-o", "dataplane=wireguard")

	t.Run("vxlan", func(t *testing.T) { sniffSpoof(t, ctx, hosts, "app", "v", 0x5a00, true) })
	t.Run("wireguard", func(t *testing.T) { sniffSpoof(t, ctx, hosts, "sec", "w", 0x5b00, false) })
}

// l2ctr is a container of TestSniffSpoof.
type l2ctr struct {
	h    harness.Host
	name string
	ep   harness.Endpoint
	pid  string
}

func sniffSpoof(t *testing.T, ctx context.Context, hosts []harness.Host, network, prefix string, id int, vxlan bool) {
	bin := l2probeBinary(t)
	start := func(h harness.Host, name string) l2ctr {
		runContainer(t, ctx, h, name, network)
		ep, err := harness.ContainerEndpoint(ctx, h, name, network)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := harness.Docker(ctx, h, "inspect", "-f", "{{.State.Pid}}", name)
		if err != nil {
			t.Fatal(err)
		}
		return l2ctr{h, name, ep, strings.TrimSpace(pid)}
	}
	a, b, cc := start(hosts[0], prefix+"a"), start(hosts[0], prefix+"b"), start(hosts[1], prefix+"c")
	t.Logf("A %s %s, B %s %s (host1), C %s %s (host2)", a.ep.IP, a.ep.MAC, b.ep.IP, b.ep.MAC, cc.ep.IP, cc.ep.MAC)
	if _, err := harness.Docker(ctx, cc.h, "exec", "-d", cc.name, "httpd", "-p", "8080", "-h", "/etc"); err != nil {
		t.Fatal(err)
	}
	fetch := func() error {
		out, err := harness.Docker(ctx, b.h, "exec", b.name, "timeout", "5", "wget", "-qO-",
			fmt.Sprintf("http://%s:8080/hostname", cc.ep.IP))
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, b.h, b.name, cc.ep.IP) })
	harness.Eventually(t, 15*time.Second, fetch)
	harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, a.h, a.name, b.ep.IP) })
	// Forget what the setup taught B: its first ping to C after this asks ARP again.
	// (The container itself may not: it has no CAP_NET_ADMIN.)
	if out, err := b.h.Exec(ctx, "nsenter", "-t", b.pid, "-n", "ip", "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatalf("flushing B's neighbours: %v\n%s", err, out)
	}

	// Sniffing: A captures while B talks to C.
	sniffA := startSniff(t, ctx, a, bin, "sniff-a-"+prefix, 12*time.Second)
	out, err := harness.Docker(ctx, b.h, "exec", b.name, "ping", "-c", "6", "-W", "1", cc.ep.IP.String())
	if err != nil {
		t.Errorf("B pinging C: %v\n%s", err, out)
	}
	for range 5 {
		if err := fetch(); err != nil {
			t.Errorf("B fetching from C: %v", err)
		}
	}
	lines := sniffA()
	theirs := 0
	for _, l := range lines {
		if incoming(l) && (mentions(l, cc.ep.MAC, cc.ep.IP.String()) || strings.Contains(l, "> "+b.ep.MAC+" ")) {
			t.Errorf("A captured traffic between B and C: %s", l)
			theirs++
		}
	}
	t.Logf("A captured %d frames while B talked to C, %d of theirs:\n%s", len(lines), theirs, strings.Join(lines, "\n"))

	// Spoofing: A forges as C towards B while B keeps pinging C.
	before := l2Drops(t, ctx, hosts[0])
	sniffB := startSniff(t, ctx, b, bin, "sniff-b-"+prefix, 14*time.Second)
	sniffC := startSniff(t, ctx, cc, bin, "sniff-c-"+prefix, 14*time.Second)
	forge, err := a.h.Start(ctx, "forge-"+prefix, "nsenter", "-t", a.pid, "-n", bin, "forge", "-i", "eth0",
		"-mac", a.ep.MAC, "-ip", a.ep.IP.String(), "-victim-mac", cc.ep.MAC, "-victim-ip", cc.ep.IP.String(),
		"-to-mac", b.ep.MAC, "-to-ip", b.ep.IP.String(), "-rounds", "50", "-every", "100ms", "-id", strconv.Itoa(id))
	if err != nil {
		t.Fatal(err)
	}
	out, err = harness.Docker(ctx, b.h, "exec", b.name, "ping", "-c", "10", "-W", "1", cc.ep.IP.String())
	if err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Errorf("B pinging C while A forges: %v\n%s", err, out)
	}
	for range 3 {
		if err := fetch(); err != nil {
			t.Errorf("B fetching from C while A forges: %v", err)
		}
	}
	if err := forge.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if log, _ := forge.Log(); !strings.Contains(log, "l2probe: sent 50 rounds") {
		t.Fatalf("the forger did not finish: %s", forge.LogTail(10))
	}
	ids := []string{fmt.Sprintf("id %#x", id), fmt.Sprintf("id %#x", id+1)}
	for who, lines := range map[string][]string{"B": sniffB(), "C": sniffC()} {
		for _, l := range lines {
			forgedARP := strings.Contains(l, " ARP ") && strings.Contains(l, "sender "+a.ep.MAC+" "+cc.ep.IP.String()+" ")
			if incoming(l) && (strings.Contains(l, ids[0]) || strings.Contains(l, ids[1]) || forgedARP) {
				t.Errorf("%s received a forged frame: %s", who, l)
			}
		}
	}
	out, err = harness.Docker(ctx, b.h, "exec", b.name, "ip", "neigh", "show", cc.ep.IP.String())
	if err != nil || strings.Contains(out, a.ep.MAC) {
		t.Errorf("B's neighbour entry for C after the forgery: %v %s", err, out)
	}
	after := l2Drops(t, ctx, hosts[0])
	for _, rule := range []string{
		"from container: source MAC not its own",
		"from container: IPv4 source not its own",
		"from container: ARP sender address not its own",
	} {
		if after[rule]-before[rule] < 50 {
			t.Errorf("rule %q dropped %d frames during the forgery, want at least 50 (counters %v)", rule, after[rule]-before[rule], after)
		}
	}
	if vxlan {
		out, err := hosts[0].Exec(ctx, "bridge", "fdb", "show")
		re := regexp.MustCompile(regexp.QuoteMeta(cc.ep.MAC) + ` dev mnvx\d+ master mnbr\d+ static`)
		if err != nil || !re.MatchString(out) {
			t.Errorf("C's MAC is not a static entry behind host1's vxlan port after the forgery: %v\n%s", err, out)
		}
	}
}

// startSniff runs l2probe sniff in ctr's namespace for d and returns a function that waits
// for it and returns the frames it printed.
func startSniff(t *testing.T, ctx context.Context, ctr l2ctr, bin, name string, d time.Duration) func() []string {
	t.Helper()
	p, err := ctr.h.Start(ctx, name, "nsenter", "-t", ctr.pid, "-n", bin, "sniff", "-i", "eth0", "-for", d.String())
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if log, _ := p.Log(); !strings.Contains(log, "l2probe: capturing") {
			if p.Exited() {
				return fmt.Errorf("l2probe sniff exited: %s", p.LogTail(10))
			}
			return fmt.Errorf("l2probe sniff in %s not capturing yet", ctr.name)
		}
		return nil
	})
	return func() []string {
		t.Helper()
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		log, _ := p.Log()
		if !strings.Contains(log, "l2probe: captured") {
			t.Fatalf("l2probe sniff in %s failed: %s", ctr.name, p.LogTail(10))
		}
		var frames []string
		for _, l := range strings.Split(log, "\n") {
			if strings.HasPrefix(l, "in ") || strings.HasPrefix(l, "out ") {
				frames = append(frames, l)
			}
		}
		return frames
	}
}

func incoming(line string) bool { return strings.HasPrefix(line, "in ") }

// mentions reports whether a captured line names mac or ip as a whole word.
func mentions(line, mac, ip string) bool {
	for _, f := range strings.Fields(line) {
		if f == mac || f == ip {
			return true
		}
	}
	return false
}

// l2Drops reads the packet counters of table bridge meshnet on h, by rule comment.
func l2Drops(t *testing.T, ctx context.Context, h harness.Host) map[string]int {
	t.Helper()
	m := map[string]int{}
	out, err := h.Exec(ctx, "nft", "list", "table", "bridge", "meshnet")
	if err != nil {
		// Not fatal: what B and C received says more.
		t.Errorf("table bridge meshnet on %s: %v\n%s", h.Name(), err, out)
		return m
	}
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "meshnet: ([^"]+)"`)
	for _, s := range re.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(s[1])
		m[s[2]] = n
	}
	if len(m) == 0 {
		t.Errorf("no counters in table bridge meshnet on %s:\n%s", h.Name(), out)
	}
	return m
}

var l2probe struct {
	once sync.Once
	path string
	err  error
}

// l2probeBinary builds the test-only helper e2e/l2probe once per run.
func l2probeBinary(t *testing.T) string {
	t.Helper()
	l2probe.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		l2probe.path = filepath.Join(suite.workDir, "bin", "l2probe")
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		cmd := exec.Command(goBin, "build", "-o", l2probe.path, "./l2probe")
		cmd.Dir = filepath.Dir(file)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			l2probe.err = fmt.Errorf("building l2probe: %w\n%s", err, out)
		}
	})
	if l2probe.err != nil {
		t.Fatal(l2probe.err)
	}
	return l2probe.path
}
