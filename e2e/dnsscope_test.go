package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDNSScopedByNetwork: networks app and other on two hosts. A container on other labels
// itself meshnet.service=api, the name app's replicas serve, to draw their traffic. From a
// container on app, through the resolver it uses without any setting (127.0.0.11) and through
// meshnet's DNS address: api is app's two replicas only, with and without the domain. From a
// container on other: api is the intruder alone, and a container name of app (secret-db) is
// not answered, neither bare nor in the meshnet zone.
func TestDNSScopedByNetwork(t *testing.T) {
	c, all := meshHosts(t)
	ctx := testCtx(t)
	hosts := all[:2]
	h1, h2 := hosts[0], hosts[1]
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	createNetworkEverywhere(t, ctx, hosts, "other", "10.43.0.0/24")

	api := map[netip.Addr]bool{}
	for i, h := range hosts {
		api[runContainer(t, ctx, h, fmt.Sprintf("api-%d", i), "app", "--label", "meshnet.service=api")] = true
	}
	secret := runContainer(t, ctx, h2, "secret-db", "app")
	intruder := map[netip.Addr]bool{runContainer(t, ctx, h2, "intruder", "other", "--label", "meshnet.service=api"): true}
	runContainer(t, ctx, h1, "client-a", "app")
	runContainer(t, ctx, h1, "client-b", "other")
	a := containerNetns{h: h1, name: "client-a"}
	b := containerNetns{h: h1, name: "client-b"}

	// Both views converge first (records of the other host arrive by gossip); then each
	// must be exactly its network's.
	a.waitAFrom(t, ctx, "127.0.0.11", "api", api, 30*time.Second)
	b.waitAFrom(t, ctx, "127.0.0.11", "api", intruder, 30*time.Second)
	for _, q := range []struct {
		from         containerNetns
		server, name string
		want         map[netip.Addr]bool
	}{
		{a, "127.0.0.11", "api", api},
		{a, "127.0.0.11", "api.meshnet", api},
		{a, dnsAddr, "api.meshnet", api},
		{a, "127.0.0.11", "secret-db", map[netip.Addr]bool{secret: true}},
		{b, "127.0.0.11", "api", intruder},
		{b, "127.0.0.11", "api.meshnet", intruder},
		{b, dnsAddr, "api.meshnet", intruder},
	} {
		if err := q.from.expectAFrom(ctx, q.server, q.name, q.want); err != nil {
			t.Errorf("from %s: %v", q.from.name, err)
		}
	}
	for _, q := range []struct{ server, name string }{
		{"127.0.0.11", "secret-db"},
		{"127.0.0.11", "secret-db.meshnet"},
		{dnsAddr, "secret-db.meshnet"},
	} {
		rcode, answers, err := b.dig(ctx, q.server, q.name, "A")
		if err != nil && strings.Contains(err.Error(), "exit status 9") {
			// dig got no reply: meshnet passed the name it does not know on this
			// network to Docker's resolver, which forwards it to the host's
			// resolvers, and the simulated hosts have none that answers.
			t.Logf("from client-b, %s at %s: no reply (forwarded past meshnet)", q.name, q.server)
			continue
		}
		if err != nil {
			t.Errorf("from client-b, %s at %s: %v", q.name, q.server, err)
			continue
		}
		if slices.Contains(answers, secret.String()) || (rcode == "NOERROR" && len(answers) > 0) {
			t.Errorf("from client-b on other, %s at %s answers %s %v: app's container leaks into other", q.name, q.server, rcode, answers)
		}
		t.Logf("from client-b, %s at %s: %s", q.name, q.server, rcode)
	}
}
