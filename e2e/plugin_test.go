package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// The managed plugin's name on every host; the engine addresses it as meshnet:latest.
const pluginName = "meshnet"

var bundle struct {
	once sync.Once
	dir  string
	err  error
}

// pluginBundle writes the plugin bundle once per run, from the binaries the suite built, the
// way `make plugin` writes build/plugin.
func pluginBundle(t *testing.T) string {
	t.Helper()
	bin := binaries(t)
	bundle.once.Do(func() {
		bundle.dir = filepath.Join(suite.workDir, "plugin")
		bundle.err = harness.WritePluginBundle(bin, bundle.dir)
	})
	if bundle.err != nil {
		t.Fatalf("writing the plugin bundle: %v", bundle.err)
	}
	return bundle.dir
}

// installPlugin creates, sets and enables the plugin on h with the cluster's key, joining
// join, with extra settings (NAME=VALUE), and removes it (with the containers and networks
// using it) when the test ends.
// installPluginEverywhere installs meshnet as a managed plugin on every host of hosts, each
// joining all of them, and returns the plugins by host name.
func installPluginEverywhere(t *testing.T, ctx context.Context, c *harness.Cluster, hosts []harness.Host) map[string]*harness.Plugin {
	t.Helper()
	var seeds []string
	for _, h := range hosts {
		seeds = append(seeds, h.Addr().String())
	}
	plugins := map[string]*harness.Plugin{}
	for _, h := range hosts {
		plugins[h.Name()] = installPlugin(t, ctx, c, h, strings.Join(seeds, ","))
	}
	return plugins
}

func installPlugin(t *testing.T, ctx context.Context, c *harness.Cluster, h harness.Host, join string, extra ...string) *harness.Plugin {
	t.Helper()
	sim := h.(*harness.SimHost)
	settings := []string{
		"KEY=" + c.Key,
		"ADVERTISE_ADDR=" + h.Addr().String(),
		"LOG_LEVEL=debug",
		// The plugin shares the host's network namespace: this is the host's loopback.
		"METRICS_ADDR=" + metricsAddr,
		"state.source=" + sim.StateSource(),
	}
	if join != "" {
		settings = append(settings, "JOIN="+join)
	}
	settings = append(settings, extra...)
	p, err := harness.InstallPlugin(ctx, h, pluginName, pluginBundle(t), settings...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if p == nil {
			return
		}
		if err := p.Remove(ctx); err != nil {
			t.Errorf("removing the plugin from %s: %v", h.Name(), err)
		}
	})
	if err != nil {
		t.Fatalf("installing the managed plugin on %s: %v\n%s", h.Name(), err, engineLogTail(sim))
	}
	return p
}

// engineLogTail is the end of the host's dockerd log, which carries the plugin's output.
func engineLogTail(h *harness.SimHost) string {
	if e := h.Engine(); e != nil {
		return e.LogTail(30)
	}
	return "(no engine)"
}

// allocations is what must survive a plugin restart: each container's address, and every
// address block's owner, per subnet.
type allocations struct {
	containers map[string]netip.Addr
	blocks     map[string]string // subnet prefix -> owner
}

func snapshotAllocations(t *testing.T, ctx context.Context, c *harness.Cluster, hosts []harness.Host, network string, ctrs map[string]harness.Host) allocations {
	t.Helper()
	a := allocations{containers: map[string]netip.Addr{}, blocks: map[string]string{}}
	for name, h := range ctrs {
		ip, err := harness.ContainerIP(ctx, h, name, network)
		if err != nil {
			t.Fatal(err)
		}
		a.containers[name] = ip
	}
	for _, h := range hosts {
		out, err := c.Meshctl(ctx, h, "-o", "json", "networks")
		if err != nil {
			t.Fatal(err)
		}
		var nets []struct {
			Subnet string `json:"subnet"`
			Blocks []struct {
				Prefix string `json:"prefix"`
				Owner  string `json:"owner"`
			} `json:"blocks"`
		}
		if err := json.Unmarshal([]byte(out), &nets); err != nil {
			t.Fatalf("parsing meshctl -o json networks on %s: %v\n%s", h.Name(), err, out)
		}
		for _, n := range nets {
			for _, b := range n.Blocks {
				key := h.Name() + " sees " + b.Prefix
				a.blocks[key] = b.Owner
			}
		}
	}
	return a
}

func (a allocations) diff(b allocations) string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(a.containers)) {
		if a.containers[k] != b.containers[k] {
			d = append(d, fmt.Sprintf("%s: %s -> %s", k, a.containers[k], b.containers[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(a.blocks)) {
		if a.blocks[k] != b.blocks[k] {
			d = append(d, fmt.Sprintf("%s: owner %q -> %q", k, a.blocks[k], b.blocks[k]))
		}
	}
	if len(b.blocks) != len(a.blocks) {
		d = append(d, fmt.Sprintf("%d block views before, %d after", len(a.blocks), len(b.blocks)))
	}
	return strings.Join(d, "\n")
}

// pingAll checks that every container reaches every other within timeout.
func pingAll(t *testing.T, ctx context.Context, ctrs map[string]harness.Host, ips map[string]netip.Addr, timeout time.Duration) {
	t.Helper()
	for _, from := range slices.Sorted(maps.Keys(ctrs)) {
		for _, to := range slices.Sorted(maps.Keys(ctrs)) {
			if from != to {
				harness.Eventually(t, timeout, func() error { return harness.Ping(ctx, ctrs[from], from, ips[to]) })
			}
		}
	}
}

// lookup resolves name from inside container on h through meshnet's DNS (the container runs
// with --dns 169.254.53.53) and returns the addresses in the answer.
func lookup(ctx context.Context, h harness.Host, container, name string) ([]netip.Addr, error) {
	out, err := harness.Docker(ctx, h, "exec", container, "nslookup", name)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	answers := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Name:") {
			answers = true
		}
		if f := strings.Fields(l); answers && len(f) == 2 && f[0] == "Address:" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				addrs = append(addrs, a)
			}
		}
	}
	return addrs, nil
}

// applyClean checks that the daemon on h applied its last desired state without an error.
func applyClean(ctx context.Context, c *harness.Cluster, h harness.Host) error {
	out, err := c.MeshctlStatus(ctx, h, "-o", "json")
	if err != nil {
		return err
	}
	var st struct {
		Dataplane struct {
			LastError string `json:"last_error"`
			Applies   uint64 `json:"applies"`
		} `json:"dataplane"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return fmt.Errorf("parsing meshctl -o json status on %s: %w\n%s", h.Name(), err, out)
	}
	if st.Dataplane.Applies == 0 || st.Dataplane.LastError != "" {
		return fmt.Errorf("the plugin's dataplane on %s: %d applies, last error %q", h.Name(), st.Dataplane.Applies, st.Dataplane.LastError)
	}
	return nil
}

// TestManagedPlugin installs meshnet on three hosts only as Docker's managed plugin (create,
// set, enable; no meshnetd started by hand) and checks that it is a working mesh: meshctl on
// each host reaches the plugin's daemon, networks are created on every host, containers ping
// across hosts and resolve each other through meshnet's DNS. Then, with the plugins of the
// two other hosts disabled, it restarts one host's engine with a container running under a
// restart policy: it comes back with its address, answered by a plugin that has no peer. The
// plugin is enabled again on one host and replaced on the other (the upgrade path without a
// registry): every address and block owner is unchanged, and the mesh carries traffic again.
func TestManagedPlugin(t *testing.T) {
	if remoteHosts() {
		t.Skip("the managed plugin is installed from a bundle on the test machine's file system: simulated hosts only")
	}
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	plugins := installPluginEverywhere(t, ctx, c, hosts)
	c.DumpOnFailure(t) // again: runs before the plugins' removal, which the first dump follows
	// meshctl on the host, with its default socket, reaches the plugin's daemon.
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)

	for _, h := range hosts {
		if err := harness.CreatePluginNetwork(ctx, plugins[h.Name()], "app", "10.47.0.0/24"); err != nil {
			t.Fatalf("creating network app on %s: %v", h.Name(), err)
		}
	}
	ctrs := map[string]harness.Host{}
	for i, h := range hosts {
		name := fmt.Sprintf("web%d", i+1)
		runContainer(t, ctx, h, name, "app", "--restart", "always", "--dns", dnsAddr, "--label", "meshnet.service=web")
		ctrs[name] = h
	}
	before := snapshotAllocations(t, ctx, c, hosts, "app", ctrs)
	t.Logf("containers: %v", before.containers)
	pingAll(t, ctx, ctrs, before.containers, 30*time.Second)
	// The plugin's sandbox lets the dataplane do all it does on a plain host (its sysctls
	// under a /proc/sys the engine mounts read-only, nftables, links).
	for _, h := range hosts {
		if err := applyClean(ctx, c, h); err != nil {
			t.Error(err)
		}
		// The bridge bypass's BPF program loads in the plugin (CAP_SYS_ADMIN): with
		// DOCKER-USER empty, auto is on, not off for want of BPF.
		if st, err := meshStatus(ctx, c, h); err != nil || !strings.HasPrefix(st.Dataplane.BridgeBypass, "on") {
			t.Errorf("the plugin's bridge bypass on %s: %q (%v), want on", h.Name(), st.Dataplane.BridgeBypass, err)
		}
		// METRICS_ADDR reaches the plugin's meshnetd: ready, and its scrape sees the mesh.
		if _, err := h.Exec(ctx, "curl", "-sSf", "--max-time", "5", "http://"+metricsAddr+"/readyz"); err != nil {
			t.Errorf("the plugin's /readyz on %s: %v", h.Name(), err)
		}
		harness.Eventually(t, 30*time.Second, func() error {
			out, err := h.Exec(ctx, "curl", "-sSf", "--max-time", "5", "http://"+metricsAddr+"/metrics")
			if err != nil {
				return err
			}
			if got := parseScrape(out).get("meshnet_peers", "state", "alive"); got != float64(len(hosts)) {
				return fmt.Errorf("the plugin's meshnet_peers{state=\"alive\"} on %s is %v, want %d", h.Name(), got, len(hosts))
			}
			return nil
		})
	}

	// DNS: a container's name and the service resolve from another host.
	harness.Eventually(t, 30*time.Second, func() error {
		got, err := lookup(ctx, hosts[0], "web1", "web3.meshnet")
		if err != nil {
			return err
		}
		if !slices.Equal(got, []netip.Addr{before.containers["web3"]}) {
			return fmt.Errorf("web3.meshnet from web1: %v, want %s", got, before.containers["web3"])
		}
		got, err = lookup(ctx, hosts[0], "web1", "web.meshnet")
		if err != nil {
			return err
		}
		if len(got) != len(ctrs) {
			return fmt.Errorf("web.meshnet from web1: %v, want all %d replicas", got, len(ctrs))
		}
		// The bare name, as compose files write it: answered in the
		// container's own namespace, which the plugin enters through
		// /proc/<pid>/ns/net (it does not see the engine's namespace
		// mounts).
		got, err = lookup(ctx, hosts[0], "web1", "web")
		if err != nil {
			return err
		}
		if len(got) != len(ctrs) {
			return fmt.Errorf("web from web1: %v, want all %d replicas", got, len(ctrs))
		}
		return nil
	})

	// Engine restart while the rest of the mesh is down (the plugins of host1 and host3
	// disabled): the engine stops its containers and the plugin, starts the plugin again and
	// restarts web2 at once, and the plugin must answer from its persisted state, without a
	// peer to converge with.
	p1, p3 := plugins[hosts[0].Name()], plugins[hosts[2].Name()]
	for _, p := range []*harness.Plugin{p1, p3} {
		if err := p.Disable(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h2 := hosts[1].(*harness.SimHost)
	if err := h2.Engine().Stop(ctx, 60*time.Second); err != nil {
		t.Fatalf("stopping the engine on %s: %v", h2.Name(), err)
	}
	if err := h2.StartEngine(ctx); err != nil {
		t.Fatalf("starting the engine on %s again: %v", h2.Name(), err)
	}
	harness.Eventually(t, 60*time.Second, func() error {
		out, err := harness.Docker(ctx, h2, "inspect", "-f", "{{.State.Running}}", "web2")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "true" {
			return fmt.Errorf("web2 on %s is not running after the engine restart: %s", h2.Name(), out)
		}
		return nil
	})
	if ip, err := harness.ContainerIP(ctx, h2, "web2", "app"); err != nil || ip != before.containers["web2"] {
		t.Errorf("web2 came back with %v (%v), want its address %s", ip, err, before.containers["web2"])
	}
	peers, err := peerStates(ctx, c, h2)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []harness.Host{hosts[0], hosts[2]} {
		if p := peers[h.Name()]; p.State == "alive" {
			t.Fatalf("%s sees %s alive while its plugin is disabled: the restart did not happen without the mesh", h2.Name(), h.Name())
		}
	}

	// Enable again on host1; replace (upgrade) on host3.
	if err := p1.Enable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p3.Replace(ctx); err != nil {
		t.Fatalf("replacing the plugin on %s: %v", hosts[2].Name(), err)
	}
	waitAllAlive(t, ctx, c, hosts, 30*time.Second)
	after := snapshotAllocations(t, ctx, c, hosts, "app", ctrs)
	if d := before.diff(after); d != "" {
		t.Errorf("allocations changed across disable/enable and replace:\n%s", d)
	}
	// Every daemon restarted, and each kept only its own records: two that did not join each
	// other directly learn the other's endpoints from memberlist's push/pull, which runs
	// every 30 s with a random peer. So traffic may take a minute or so to be whole again.
	start := time.Now()
	pingAll(t, ctx, ctrs, after.containers, 2*time.Minute)
	t.Logf("every container reaches every other %s after the mesh was whole again", time.Since(start).Round(time.Millisecond))
	// A new container after the upgrade gets an address nobody holds.
	ip := runContainer(t, ctx, hosts[2], "web4", "app", "--dns", dnsAddr)
	for name, held := range after.containers {
		if held == ip {
			t.Errorf("web4 got %s, which %s holds", ip, name)
		}
	}
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, hosts[0], "web1", ip) })
}

// TestManagedPluginJoinByName brings a fourth host into a mesh of three with nothing but a
// host name for JOIN. The name stands for two seeds in the host's /etc/hosts (which the
// engine gives the plugin): the first an address where no host answers, the second host2.
func TestManagedPluginJoinByName(t *testing.T) {
	if remoteHosts() {
		t.Skip("the test gives the fourth host an /etc/hosts of its own: simulated hosts only")
	}
	c := sharedCluster(t)
	if len(c.Hosts) < 4 {
		t.Fatalf("the test needs 4 hosts, the cluster has %d", len(c.Hosts))
	}
	ctx := testCtx(t)
	mesh, fourth := c.Hosts[:3], c.Hosts[3].(*harness.SimHost)
	var p1 *harness.Plugin
	for _, h := range mesh {
		p := installPlugin(t, ctx, c, h, mesh[0].Addr().String())
		if p1 == nil {
			p1 = p
		}
	}
	waitAllAlive(t, ctx, c, mesh, 30*time.Second)

	// A seed that is down: an underlay address no host holds.
	a := mesh[0].Addr().As4()
	a[3] = 99
	down := netip.AddrFrom4(a)
	const name = "seeds.meshnet.test"
	hosts := fmt.Sprintf("127.0.0.1 localhost\n%s %s\n%s %s\n", down, name, mesh[1].Addr(), name)
	hostsFile := filepath.Join(fourth.Dir(), "hosts")
	if err := os.WriteFile(hostsFile, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := fourth.Exec(ctx, "mount", "--bind", hostsFile, "/etc/hosts"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := fourth.Exec(context.Background(), "umount", "/etc/hosts"); err != nil {
			t.Errorf("restoring /etc/hosts on %s: %v", fourth.Name(), err)
		}
	})
	p4 := installPlugin(t, ctx, c, fourth, name)
	c.DumpOnFailure(t)
	all := append(slices.Clone(mesh), harness.Host(fourth))
	waitAllAlive(t, ctx, c, all, 60*time.Second)
	// It joined through the name's second address, after trying the first: the plugin's
	// output is in the engine's log.
	log, err := fourth.Engine().Log()
	if err != nil {
		t.Fatal(err)
	}
	if via := "via=" + mesh[1].Addr().String() + ":7946"; !strings.Contains(log, via) {
		t.Errorf("%s's plugin did not log joining %s:\n%s", fourth.Name(), via, fourth.Engine().LogTail(40))
	}

	// The joined host carries traffic like the others.
	for _, p := range []*harness.Plugin{p1, p4} {
		if err := harness.CreatePluginNetwork(ctx, p, "app", "10.48.0.0/24"); err != nil {
			t.Fatalf("creating network app on %s: %v", p.Host.Name(), err)
		}
	}
	ip1 := runContainer(t, ctx, mesh[0], "n1", "app")
	runContainer(t, ctx, fourth, "n4", "app")
	harness.Eventually(t, 30*time.Second, func() error { return harness.Ping(ctx, fourth, "n4", ip1) })
}
