package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/e2e/harness"
)

// gracefulWho is whoScript's web server as a replica that shuts down
// gracefully: on its stop signal it keeps serving for 3 s, then exits. It
// answers a healthcheck (wget) only once the server is up.
const gracefulWho = `mkdir -p /www/cgi-bin; ` +
	`printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$(hostname) $REMOTE_ADDR"\n' > /www/cgi-bin/who; ` +
	`chmod +x /www/cgi-bin/who; httpd -f -p 8080 -h /www & pid=$!; ` +
	`trap 'sleep 3; kill $pid; exit 0' TERM; wait $pid`

// TestRollingReplacement: a service of two replicas (host1, host2) with a
// VIP and a routing-mesh port, whose replicas stop gracefully and have a
// healthcheck, is replaced replica by replica (a new one started and
// healthy, then the old one stopped with docker stop), as a rolling update
// does, while a client container on host3 sends requests to the VIP and
// host3's own namespace to host1's published port, one new connection
// after another. No request fails: a replica leaves the VIP and the mesh
// at its stop signal, not at its death (plugin/watcher.go, Stopping), and
// joins only once healthy.
func TestRollingReplacement(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.49.0.0/24")

	start := func(h harness.Host, name string) {
		t.Helper()
		args := []string{"run", "-d", "--label", harness.Label, "--network", "app", "--name", name, "--hostname", name,
			"--label", "meshnet.service=roll", "--label", "meshnet.endpoint-mode=vip", "--label", "meshnet.publish=8090:8080/tcp",
			"--health-cmd", "wget -q -O /dev/null http://127.0.0.1:8080/cgi-bin/who", "--health-interval", "1s",
			"--health-start-period", "10s", "--stop-timeout", "10", harness.Image, "sh", "-c", gracefulWho}
		if _, err := harness.Docker(ctx, h, args...); err != nil {
			t.Fatalf("starting %s on %s: %v", name, h.Name(), err)
		}
	}
	// healthyEverywhere waits until every host hands out exactly names.
	healthyEverywhere := func(names ...string) {
		t.Helper()
		harness.Eventually(t, 30*time.Second, func() error {
			for _, h := range hosts {
				svcs, err := servicesOn(ctx, c, h)
				if err != nil {
					return err
				}
				var got []string
				for _, r := range svcs["roll"].Replicas {
					got = append(got, r.Container)
				}
				if strings.Join(sortedCopy(got), ",") != strings.Join(sortedCopy(names), ",") || len(svcs["roll"].VIPs) != 1 {
					return fmt.Errorf("%s hands out %v (VIPs %v), want %v", h.Name(), got, svcs["roll"].VIPs, names)
				}
			}
			return nil
		})
	}
	start(hosts[0], "roll-a1")
	start(hosts[1], "roll-b1")
	healthyEverywhere("roll-a1", "roll-b1")
	svcs, err := servicesOn(ctx, c, hosts[2])
	if err != nil {
		t.Fatal(err)
	}
	vip := svcs["roll"].VIPs[0].Addr
	runContainer(t, ctx, hosts[2], "roll-client", "app")

	// Two request loops, each until the stop file exists.
	stop := filepath.Join(t.TempDir(), "stop")
	vipURL := fmt.Sprintf("http://%s:8080/cgi-bin/who", vip)
	meshURL := fmt.Sprintf("http://%s/cgi-bin/who", netip.AddrPortFrom(hosts[0].Addr(), 8090))
	loop := func(url, until string) string {
		return fmt.Sprintf("while [ ! -e %s ]; do curl -s -m 2 %s || echo FAILED; done", until, url)
	}
	vipOut, meshOut := make(chan string, 1), make(chan string, 1)
	go func() {
		out, err := harness.Docker(ctx, hosts[2], "exec", "roll-client", "sh", "-c", loop(vipURL, "/tmp/stop"))
		vipOut <- out + errText(err)
	}()
	go func() {
		out, err := hosts[2].Exec(ctx, "sh", "-c", loop(meshURL, stop))
		meshOut <- out + errText(err)
	}()
	time.Sleep(2 * time.Second)

	for _, step := range []struct {
		h        harness.Host
		old, new string
		after    []string
	}{
		{hosts[0], "roll-a1", "roll-a2", []string{"roll-a2", "roll-b1"}},
		{hosts[1], "roll-b1", "roll-b2", []string{"roll-a2", "roll-b2"}},
	} {
		start(step.h, step.new)
		healthyEverywhere(append(step.after, step.old)...)
		began := time.Now()
		if _, err := harness.Docker(ctx, step.h, "stop", step.old); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s replaced by %s; docker stop took %s (3 s of graceful serving)", step.old, step.new, time.Since(began).Round(time.Millisecond))
		healthyEverywhere(step.after...)
	}
	time.Sleep(2 * time.Second)
	if _, err := harness.Docker(ctx, hosts[2], "exec", "roll-client", "touch", "/tmp/stop"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for what, ch := range map[string]chan string{"VIP " + vipURL + " from a container on host3": vipOut, "mesh port " + meshURL + " from host3": meshOut} {
		var out string
		select {
		case out = <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the request loop did not end", what)
		}
		counts, failed, _ := whoAnswers(out, nil)
		t.Logf("%s: %v, %d failed", what, counts, failed)
		if failed > 0 {
			t.Errorf("%s: %d requests failed during the rolling replacement; want none", what, failed)
		}
		for _, name := range []string{"roll-a1", "roll-b1", "roll-a2", "roll-b2"} {
			if counts[name] == 0 {
				t.Errorf("%s: %s answered nothing (%v): the loop did not span the replacement", what, name, counts)
			}
		}
	}
}

func errText(err error) string {
	if err != nil {
		return "\n" + err.Error()
	}
	return ""
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// servicesOn is meshctl services on h, by name.
func servicesOn(ctx context.Context, c *harness.Cluster, h harness.Host) (map[string]control.Service, error) {
	out, err := c.Meshctl(ctx, h, "-o", "json", "services")
	if err != nil {
		return nil, err
	}
	var svcs []control.Service
	if err := json.Unmarshal([]byte(out), &svcs); err != nil {
		return nil, fmt.Errorf("meshctl services on %s: %w: %s", h.Name(), err, out)
	}
	m := map[string]control.Service{}
	for _, s := range svcs {
		m[s.Name] = s
	}
	return m, nil
}
