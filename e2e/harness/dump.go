package harness

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// dumpCommands are what an engineer looks at first when the overlay misbehaves.
var dumpCommands = [][]string{
	{"docker", "ps", "-a"},
	{"docker", "network", "ls"},
	{"ip", "-d", "link"},
	{"ip", "addr"},
	{"ip", "route"},
	{"bridge", "fdb", "show"},
	{"ip", "neigh"},
	{"iptables", "-S"},
	{"iptables", "-t", "nat", "-S"},
	{"nft", "list", "ruleset"},
}

// DumpHost collects the state of h for a failure report: the tails of the logs of the
// processes the harness started there (meshnetd, dockerd, ...), then the output of
// dumpCommands.
func DumpHost(ctx context.Context, h Host) string {
	var b strings.Builder
	fmt.Fprintf(&b, "===== %s (%s) =====\n", h.Name(), h.Addr())
	seen := map[string]bool{}
	ps := h.Processes()
	for i := len(ps) - 1; i >= 0; i-- { // latest process per log
		p := ps[i]
		if seen[p.Name()] {
			continue
		}
		seen[p.Name()] = true
		n := 40
		if p.Name() == "meshnetd" {
			n = 120
		}
		fmt.Fprintf(&b, "----- %s log (pid %d, %s), last %d lines:\n%s\n", p.Name(), p.Pid(), p.LogPath(), n, p.LogTail(n))
	}
	for _, args := range dumpCommands {
		out, err := h.Exec(ctx, args...)
		fmt.Fprintf(&b, "----- %s\n%s", shellJoin(args), out)
		if err != nil && out == "" {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}

// Dump logs every host's state to t.
func (c *Cluster) Dump(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, h := range c.Hosts {
		t.Log("\n" + DumpHost(ctx, h))
	}
}

// DumpOnFailure registers a cleanup that dumps every host's state when t has failed. Register
// it after the cleanups that tear things down: cleanups run last-registered first.
func (c *Cluster) DumpOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			c.Dump(t)
		}
	})
}
