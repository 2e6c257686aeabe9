package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/e2e/harness"
)

// TestForgedRecords: a node that holds the gossip key, but no other node's node key, joins
// over memberlist (the test-only helper e2e/forger) and hands every member, as messages and
// in its push/pull state, three times over: an endpoint in host2's name signed with its own
// key, a removal of host2 while it is alive, a record at version 2^64-1, and a node record in
// host2's name that claims host2's own address with the forger's key (what host2 restarted
// with a wiped state folder would send, but memberlist's member at that address does not
// advertise that key). Every host refuses all of it, logs each (owner, reason) once, counts
// every one in `meshctl status`, moves no name to another key, and keeps host2 alive and
// reachable with no forged endpoint anywhere.
func TestForgedRecords(t *testing.T) {
	if remoteHosts() {
		t.Skip("runs the forger from the test machine's file system: simulated hosts only")
	}
	start := time.Now()
	c, hosts, outsider, ctx, ip := meshWithOutsider(t, "forger", "f-")
	victim := hosts[1].Name()

	if err := outsider.WriteFile(harness.KeyFile, []byte(c.Key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := outsider.Start(ctx, "forger", forgerBinary(t), "-name", "forger", "-bind", outsider.Addr().String(),
		"-join", hosts[0].Addr().String(), "-key-file", harness.KeyFile, "-victim", victim,
		"-subnet", "10.42.0.0/24", "-addr", "10.42.0.250", "-rounds", "3")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill(syscall.SIGKILL) })
	harness.Eventually(t, 60*time.Second, func() error {
		if log, _ := p.Log(); !strings.Contains(log, "forger: sent") {
			if p.Exited() {
				return fmt.Errorf("the forger exited: %s", p.LogTail(20))
			}
			return fmt.Errorf("the forger has not sent its records yet")
		}
		return nil
	})

	reasons := []struct{ owner, reason string }{
		{victim, "signed by another key than the one pinned"},
		{"forger", "version too far ahead"},
		{"forger", "removal of a node that is alive"},
	}
	for _, h := range hosts {
		want := reasons
		if h.Name() == victim { // its own name, another key
			want = append([]struct{ owner, reason string }{{victim, "record of this node's name signed by another node key"}}, reasons[1:]...)
		}
		harness.Eventually(t, 30*time.Second, func() error {
			st, err := meshStatus(ctx, c, h)
			if err != nil {
				return err
			}
			for _, w := range want {
				n := uint64(0)
				for r, k := range st.Refused.ByReason {
					if strings.HasPrefix(r, w.reason) {
						n += k
					}
				}
				if n < 3 { // three rounds of messages, more by push/pull
					return fmt.Errorf("%s refused %d records for %q, want at least 3 (%v)", h.Name(), n, w.reason, st.Refused.ByReason)
				}
			}
			return nil
		})
		log, err := c.Daemon(h).Log()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if n := countRefusals(logSince(log, start), w.owner, w.reason); n != 1 {
				t.Errorf("%s logged the refusal of %s's records (%s) %d times, want once", h.Name(), w.owner, w.reason, n)
			}
		}
		if n := countLines(logSince(log, start), "a node name moves to a new node key"); n != 0 {
			t.Errorf("%s moved a node name to another key after the forger's node record", h.Name())
		}
		eps, err := c.Meshctl(ctx, h, "-o", "json", "endpoints")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(eps, "10.42.0.250") || strings.Contains(eps, "forged") {
			t.Errorf("%s lists a forged endpoint: %s", h.Name(), eps)
		}
	}
	// host2 was never removed: alive everywhere, its container reachable.
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	for _, h := range []harness.Host{hosts[0], hosts[2]} {
		harness.Eventually(t, 15*time.Second, func() error {
			return harness.Ping(ctx, h, "f-"+h.Name(), ip[victim])
		})
	}
}

// TestDuplicateNodeName: a second daemon (on the fourth host, with a node key of its own)
// started under host1's node name and joining host1 is refused on both sides: it exits with a
// message that names host1's address and --node-name; host1 logs the attempt once; host2 and
// host3 still list host1 alive at its own address, and its container stays reachable.
func TestDuplicateNodeName(t *testing.T) {
	start := time.Now()
	c, hosts, outsider, ctx, ip := meshWithOutsider(t, "duplicate", "d-")
	owner := hosts[0]
	// Let host1 be in its cluster for longer than a newcomer is (gossip's newcomerWindow).
	time.Sleep(11 * time.Second)

	dup, err := c.StartMeshnetWith(ctx, outsider, harness.MeshnetConfig{
		Key: c.Key, Join: []string{owner.Addr().String()}, NoWait: true,
		Flags: []string{"--node-name", owner.Name()},
	})
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 60*time.Second, func() error {
		if !dup.Process().Exited() {
			return fmt.Errorf("the duplicate %s is still running", owner.Name())
		}
		return nil
	})
	// Its last words: the log's slog lines are dated, meshnetd's exit line is not.
	tail := dup.Process().LogTail(5)
	said := ""
	for _, l := range strings.Split(tail, "\n") {
		if strings.Contains(l, "refused by the cluster") {
			said = l
		}
	}
	if !strings.Contains(said, "--node-name") || !strings.Contains(said, owner.Addr().String()) {
		t.Errorf("the duplicate's exit line does not name %s and --node-name:\n%s", owner.Addr(), dup.Process().LogTail(30))
	} else {
		t.Logf("the duplicate says: %s", said)
	}

	// The others: host1 alive at its own address, nothing at the duplicate's, for a while.
	for i := 0; i < 10; i++ {
		for _, h := range hosts[1:] {
			got, err := peerStates(ctx, c, h)
			if err != nil {
				t.Fatal(err)
			}
			p, ok := got[owner.Name()]
			if !ok || p.State != "alive" || !addrMatches(p.Address, owner.Addr()) {
				t.Fatalf("%s lists %s as %+v, want alive at %s", h.Name(), owner.Name(), p, owner.Addr())
			}
			for n, p := range got {
				if addrMatches(p.Address, outsider.Addr()) {
					t.Fatalf("%s lists %s at the duplicate's address %s", h.Name(), n, p.Address)
				}
			}
		}
		time.Sleep(time.Second)
	}
	ownerLog, err := c.Daemon(owner).Log()
	if err != nil {
		t.Fatal(err)
	}
	lines := logSince(ownerLog, start)
	joined := countLines(lines, "another node tries to join under this node's name")
	records := countRefusals(lines, owner.Name(), "record of this node's name signed by another node key")
	if joined+records == 0 || joined > 1 || records > 1 {
		t.Errorf("%s logged the duplicate %d times (join) and %d times (records); want each at most once and one at least", owner.Name(), joined, records)
	}
	for _, h := range hosts[1:] {
		harness.Eventually(t, 15*time.Second, func() error {
			return harness.Ping(ctx, h, "d-"+h.Name(), ip[owner.Name()])
		})
	}
}

// countRefusals counts the store's "refused a record" lines for owner and a reason prefix.
func countRefusals(lines []string, owner, reason string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, "refused a record") && strings.Contains(l, "owner="+owner+" ") && strings.Contains(l, reason) {
			n++
		}
	}
	return n
}

// logSince returns the lines of a daemon log written at or after since: a host's meshnetd
// log is one file for the whole run, every daemon started on the host appends to it.
func logSince(log string, since time.Time) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ts, _, ok := strings.Cut(strings.TrimPrefix(l, "time="), " ")
		if !ok || !strings.HasPrefix(l, "time=") {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil && !at.Before(since) {
			out = append(out, l)
		}
	}
	return out
}

func countLines(lines []string, substr string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func meshStatus(ctx context.Context, c *harness.Cluster, h harness.Host) (control.Status, error) {
	var st control.Status
	out, err := c.MeshctlStatus(ctx, h, "-o", "json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("meshctl -o json status on %s: %w", h.Name(), err)
	}
	return st, nil
}

var forger struct {
	once sync.Once
	path string
	err  error
}

// forgerBinary builds the test-only forger (e2e/forger) once per run.
func forgerBinary(t *testing.T) string {
	t.Helper()
	forger.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		dir := filepath.Dir(file)
		forger.path = filepath.Join(suite.workDir, "bin", "forger")
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		cmd := exec.Command(goBin, "build", "-o", forger.path, "./forger")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			forger.err = fmt.Errorf("building the forger: %w\n%s", err, out)
		}
	})
	if forger.err != nil {
		t.Fatal(forger.err)
	}
	return forger.path
}

// meshWithOutsider starts meshnet on the three cluster hosts with network app (10.42.0.0/24)
// and a container (prefix + host name) on each, and returns the fourth host, left out for
// the test's intruder (what), and the containers' addresses by host name.
func meshWithOutsider(t *testing.T, what, prefix string) (*harness.Cluster, []harness.Host, harness.Host, context.Context, map[string]netip.Addr) {
	t.Helper()
	c, hosts := meshHosts(t)
	if len(c.Hosts) < 4 {
		t.Fatalf("needs a fourth host for the %s; the cluster has %d", what, len(c.Hosts))
	}
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	ip := map[string]netip.Addr{}
	for _, h := range hosts {
		ip[h.Name()] = runContainer(t, ctx, h, prefix+h.Name(), "app")
	}
	return c, hosts, c.Hosts[3], ctx, ip
}
