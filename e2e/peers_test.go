package e2e

import (
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestMeshPeers checks membership as an operator sees it with `meshctl -o json peers`: three
// daemons find each other; a crashed daemon is declared dead by the others and alive again
// once restarted; a daemon with another gossip key never gets in, and its log says why.
func TestMeshPeers(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	ds := startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)

	victim, others := ds[2], hosts[:2]
	name := victim.Host.Name()
	if err := victim.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	sawSuspect := false
	// memberlist's LAN failure detection takes a few seconds (probe interval, then the
	// suspicion timeout); 30 s is generous.
	harness.Eventually(t, 30*time.Second, func() error {
		for _, h := range others {
			got, err := peerStates(ctx, c, h)
			if err != nil {
				return err
			}
			p, ok := got[name]
			if !ok {
				return errorf("%s no longer lists %s; want it listed as dead", h.Name(), name)
			}
			if p.State == "suspect" {
				sawSuspect = true
			}
			if p.State != "dead" {
				return errorf("%s sees %s as %s, want dead", h.Name(), name, p.State)
			}
		}
		return nil
	})
	t.Logf("killed daemon on %s seen dead everywhere after %s (suspect seen first: %v)", name, time.Since(killed).Round(time.Millisecond), sawSuspect)

	if err := victim.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)

	// An outsider with a key of its own must never get in.
	if len(c.Hosts) < 4 {
		t.Fatalf("the outsider check needs a 4th host; the cluster has %d", len(c.Hosts))
	}
	outsider := c.Hosts[3]
	out, err := c.Meshctl(ctx, outsider, "keygen")
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(out)
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 32 {
		t.Fatalf("meshctl keygen printed %q: want base64 of 32 bytes (%v)", out, err)
	}
	if key == c.Key {
		t.Fatal("meshctl keygen returned the cluster's key")
	}
	// The host's meshnetd log is one file for the whole run: only what this daemon wrote counts.
	started := time.Now()
	od, err := c.StartMeshnetWith(ctx, outsider, harness.MeshnetConfig{Key: key, Join: []string{hosts[0].Addr().String()}, NoWait: true})
	if err != nil {
		t.Fatal(err)
	}
	// A line that reports a failure and names the cause.
	failure := regexp.MustCompile(`(?i)(error|fail|warn|refus|reject|cannot|could not|unable|denied)`)
	cause := regexp.MustCompile(`(?i)(key|decrypt|label)`)
	said := ""
	start := time.Now()
	for time.Since(start) < 20*time.Second || said == "" {
		if time.Since(start) > 60*time.Second {
			break
		}
		for _, h := range hosts {
			got, err := peerStates(ctx, c, h)
			if err != nil {
				t.Fatal(err)
			}
			for n, p := range got {
				if n == outsider.Name() || addrMatches(p.Address, outsider.Addr()) {
					t.Fatalf("%s lists the outsider %s (%s, %s), which has another key", h.Name(), n, p.Address, p.State)
				}
			}
		}
		if said == "" {
			log, _ := od.Log()
			for _, l := range logSince(log, started) {
				if failure.MatchString(l) && cause.MatchString(l) && !strings.Contains(l, " start: ") {
					said = l
					break
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if said == "" {
		t.Errorf("the outsider's log does not say why it cannot join (no failure line mentioning the key, decryption or the label):\n%s", od.Process().LogTail(60))
	} else {
		t.Logf("outsider's log says: %s", said)
	}
	if od.Running() {
		if got, err := peerStates(ctx, c, outsider); err == nil {
			for _, h := range hosts {
				if p, ok := got[h.Name()]; ok && p.State == "alive" {
					t.Errorf("the outsider lists %s as alive", h.Name())
				}
			}
		}
	}
}
