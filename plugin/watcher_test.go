package plugin

import (
	"context"
	"net/netip"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// collector keeps what onChange delivered.
type collector struct {
	mu    sync.Mutex
	calls int
	cs    []ContainerInfo
	nets  map[string]string
}

func (c *collector) onChange(cs []ContainerInfo, nets map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.cs, c.nets = cs, nets
}

func (c *collector) last() (int, []ContainerInfo, map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.cs, c.nets
}

// ids lists the container IDs of the last delivered set.
func (c *collector) ids() []string {
	_, cs, _ := c.last()
	var ids []string
	for _, ci := range cs {
		ids = append(ids, ci.ID)
	}
	return ids
}

func (c *collector) container(id string) (ContainerInfo, bool) {
	_, cs, _ := c.last()
	for _, ci := range cs {
		if ci.ID == id {
			return ci, true
		}
	}
	return ContainerInfo{}, false
}

func (c *collector) waitIDs(t *testing.T, want ...string) {
	t.Helper()
	waitFor(t, "containers "+strings.Join(want, ","), func() bool {
		return slices.Equal(c.ids(), want)
	})
}

// startWatcher runs a watcher against the fake engine at path, with short timers. It stops it at
// cleanup and checks that Run returned nil.
func startWatcher(t *testing.T, path string, tune func(w *Watcher)) *collector {
	t.Helper()
	w := NewWatcher("unix://"+path, nil)
	w.backoffMin, w.backoffMax = 10*time.Millisecond, 100*time.Millisecond
	if tune != nil {
		tune(w)
	}
	col := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, col.onChange) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return col
}

func sockPath(t *testing.T) string { return filepath.Join(t.TempDir(), "docker.sock") }

func TestWatcherFollowsContainersAndNetworks(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.update(func(d *fakeDocker) {
		d.networks = map[string]string{"n-app": "app", "n-bridge": "bridge"}
		d.containers["c1"] = &fakeContainer{
			name: "web-1", running: true, labels: map[string]string{"meshnet.service": "web"},
			networks: map[string]dockerEndpoint{"app": {
				NetworkID: "n-app", EndpointID: "ep1", IPAddress: "10.42.0.5", MacAddress: "02:42:0a:2a:00:05",
				Aliases: []string{"c1short", "web"},
			}},
		}
		d.containers["stopped"] = &fakeContainer{name: "old"}
	})
	d.start()
	col := startWatcher(t, d.path, nil)

	col.waitIDs(t, "c1")
	got, _ := col.container("c1")
	want := ContainerInfo{
		ID: "c1", Name: "web-1", Labels: map[string]string{"meshnet.service": "web"}, Running: true,
		Networks: map[string]EndpointSettings{"app": {
			NetworkID: "n-app", EndpointID: "ep1", IPAddress: netip.MustParseAddr("10.42.0.5"),
			MacAddress: "02:42:0a:2a:00:05", Aliases: []string{"c1short", "web"},
		}},
		// Where the container DNS enters its namespace.
		SandboxKey: "/var/run/docker/netns/x", Pid: 42,
		StopSignal: 15, // no STOPSIGNAL: SIGTERM
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("first set:\n got %+v\nwant %+v", got, want)
	}
	if !got.Healthy() {
		t.Error("a running container without healthcheck is not Healthy")
	}
	if _, _, nets := col.last(); !reflect.DeepEqual(nets, map[string]string{"n-app": "app", "n-bridge": "bridge"}) {
		t.Errorf("networks %v", nets)
	}

	// start
	d.update(func(d *fakeDocker) {
		d.containers["c2"] = &fakeContainer{name: "db", running: true, health: "starting"}
	})
	d.emit("container", "start", "c2", map[string]string{"name": "db"})
	col.waitIDs(t, "c1", "c2")
	if c2, _ := col.container("c2"); c2.Healthy() || c2.Health != "starting" {
		t.Errorf("c2 %+v: a container whose healthcheck is starting must not be Healthy", c2)
	}

	// health_status
	d.update(func(d *fakeDocker) { d.containers["c2"].health = "healthy" })
	d.emit("container", "health_status: healthy", "c2", nil)
	waitFor(t, "c2 healthy", func() bool { c, _ := col.container("c2"); return c.Healthy() })

	// die: the container leaves the set
	d.update(func(d *fakeDocker) { d.containers["c1"].running = false })
	d.emit("container", "die", "c1", map[string]string{"exitCode": "0"})
	col.waitIDs(t, "c2")

	// network connect / disconnect, by the container ID in the event's attributes
	d.update(func(d *fakeDocker) {
		d.containers["c2"].networks = map[string]dockerEndpoint{"app": {NetworkID: "n-app", EndpointID: "ep2", IPAddress: "10.42.0.6", Aliases: []string{"db"}}}
	})
	d.emit("network", "connect", "n-app", map[string]string{"container": "c2", "name": "app", "type": "meshnet"})
	waitFor(t, "c2 connected to app", func() bool {
		c, _ := col.container("c2")
		return c.Networks["app"].EndpointID == "ep2" && slices.Equal(c.Networks["app"].Aliases, []string{"db"})
	})
	d.update(func(d *fakeDocker) { d.containers["c2"].networks = nil })
	d.emit("network", "disconnect", "n-app", map[string]string{"container": "c2"})
	waitFor(t, "c2 disconnected", func() bool { c, _ := col.container("c2"); return len(c.Networks) == 0 })

	// pause: stays in the set, flagged, not healthy
	d.update(func(d *fakeDocker) { d.containers["c2"].paused = true })
	d.emit("container", "pause", "c2", nil)
	waitFor(t, "c2 paused", func() bool { c, ok := col.container("c2"); return ok && c.Paused && !c.Healthy() })

	// network create / destroy re-list the networks
	d.update(func(d *fakeDocker) { d.networks["n-db"] = "db" })
	d.emit("network", "create", "n-db", map[string]string{"name": "db", "type": "meshnet"})
	waitFor(t, "network db", func() bool { _, _, n := col.last(); return n["n-db"] == "db" })
	d.update(func(d *fakeDocker) { delete(d.networks, "n-app") })
	d.emit("network", "destroy", "n-app", nil)
	waitFor(t, "network app gone", func() bool { _, _, n := col.last(); _, ok := n["n-app"]; return !ok })

	// destroy removes without asking the engine
	before := d.inspectCount("c2")
	d.update(func(d *fakeDocker) { delete(d.containers, "c2") })
	d.emit("container", "destroy", "c2", nil)
	col.waitIDs(t)
	if got := d.inspectCount("c2"); got != before {
		t.Errorf("destroy led to %d inspects, want none", got-before)
	}
}

func TestWatcherDropsContainersGoneBeforeInspect(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.update(func(d *fakeDocker) {
		d.containers["alive"] = &fakeContainer{name: "alive", running: true}
		d.containers["ghost"] = &fakeContainer{name: "ghost", running: true, gone404: true}
	})
	d.start()
	col := startWatcher(t, d.path, nil)
	col.waitIDs(t, "alive")
	if d.inspectCount("ghost") == 0 {
		t.Error("ghost was listed but never inspected")
	}

	// Started and removed before the watcher looked: the start event must not add it.
	d.emit("container", "start", "flash", nil)
	// A member that 404s on its next inspect (removed with --rm before "destroy" reached us).
	d.update(func(d *fakeDocker) { d.containers["alive"].gone404 = true })
	d.emit("container", "die", "alive", nil)
	col.waitIDs(t)
	if d.inspectCount("flash") == 0 {
		t.Error("flash was never inspected")
	}
}

func TestWatcherReconnectsAndRelists(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.update(func(d *fakeDocker) {
		d.networks = map[string]string{"n1": "app"}
		d.containers["c1"] = &fakeContainer{name: "one", running: true}
	})
	d.start()
	col := startWatcher(t, d.path, nil)
	col.waitIDs(t, "c1")

	// The engine goes away. What the watcher reported stays (live-restore keeps containers).
	d.stop()
	calls, _, _ := col.last()
	d.update(func(d *fakeDocker) {
		delete(d.containers, "c1")
		d.containers["c5"] = &fakeContainer{name: "five", running: true}
		d.networks["n2"] = "db"
	})
	time.Sleep(50 * time.Millisecond) // let a few reconnection attempts fail
	if n, _, _ := col.last(); n != calls {
		t.Errorf("onChange called %d times while the engine was away", n-calls)
	}
	if got := col.ids(); !slices.Equal(got, []string{"c1"}) {
		t.Errorf("set while the engine was away: %v, want the last one", got)
	}

	// It comes back with other containers: a full re-list, no event needed.
	d.start()
	col.waitIDs(t, "c5")
	waitFor(t, "network list after reconnect", func() bool {
		_, _, n := col.last()
		return reflect.DeepEqual(n, map[string]string{"n1": "app", "n2": "db"})
	})
	// And it follows events on the new connection.
	waitFor(t, "resubscription", func() bool { return d.subscribers() == 1 })
	d.update(func(d *fakeDocker) { d.containers["c6"] = &fakeContainer{name: "six", running: true} })
	d.emit("container", "start", "c6", nil)
	col.waitIDs(t, "c5", "c6")
}

func TestWatcherWaitsForAnEngineThatIsNotUpYet(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.update(func(d *fakeDocker) { d.containers["c1"] = &fakeContainer{name: "one", running: true} })
	col := startWatcher(t, d.path, nil)
	time.Sleep(30 * time.Millisecond)
	if n, _, _ := col.last(); n != 0 {
		t.Fatalf("onChange called %d times with no engine", n)
	}
	d.start()
	col.waitIDs(t, "c1")
}

func TestWatcherCoalescesBursts(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.update(func(d *fakeDocker) { d.containers["c1"] = &fakeContainer{name: "one", running: true} })
	d.start()
	col := startWatcher(t, d.path, func(w *Watcher) { w.coalesce = 300 * time.Millisecond })
	col.waitIDs(t, "c1")
	waitFor(t, "subscription", func() bool { return d.subscribers() == 1 })

	const burst = 200
	before := d.inspectCount("c1")
	d.update(func(d *fakeDocker) { d.containers["c1"].labels = map[string]string{"v": "2"} })
	for range burst {
		d.emit("container", "rename", "c1", nil)
	}
	// A last event marks the end of the burst: events are handled in order.
	d.update(func(d *fakeDocker) { d.containers["end"] = &fakeContainer{name: "end", running: true} })
	d.emit("container", "start", "end", nil)
	col.waitIDs(t, "c1", "end")
	if c, _ := col.container("c1"); c.Labels["v"] != "2" {
		t.Errorf("labels after the burst: %v", c.Labels)
	}
	if n := d.inspectCount("c1") - before; n >= burst/2 {
		t.Errorf("%d events caused %d inspects: bursts are not coalesced", burst, n)
	}
}

func TestWatcherSkipsUnchangedAndResyncs(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.update(func(d *fakeDocker) { d.containers["c1"] = &fakeContainer{name: "one", running: true} })
	d.start()
	col := startWatcher(t, d.path, func(w *Watcher) { w.resync = 20 * time.Millisecond })
	col.waitIDs(t, "c1")
	// Without any event, the periodic re-list notices a container the stream never mentioned.
	d.update(func(d *fakeDocker) { d.containers["c2"] = &fakeContainer{name: "two", running: true} })
	col.waitIDs(t, "c1", "c2")
	calls, _, _ := col.last()
	lists := d.listCount()
	waitFor(t, "more re-lists", func() bool { return d.listCount() >= lists+5 })
	if n, _, _ := col.last(); n != calls {
		t.Errorf("%d onChange calls for re-lists that changed nothing", n-calls)
	}
}

func TestWatcherDeliversCopies(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.update(func(d *fakeDocker) {
		d.containers["c1"] = &fakeContainer{name: "one", running: true, labels: map[string]string{"a": "1"}}
	})
	d.start()
	col := startWatcher(t, d.path, nil)
	col.waitIDs(t, "c1")
	c, _ := col.container("c1")
	c.Labels["a"] = "scribbled" // the callee owns what it got
	d.update(func(d *fakeDocker) { d.containers["c2"] = &fakeContainer{name: "two", running: true} })
	d.emit("container", "start", "c2", nil)
	col.waitIDs(t, "c1", "c2")
	if c, _ := col.container("c1"); c.Labels["a"] != "1" {
		t.Errorf("watcher state was changed through a delivered copy: %v", c.Labels)
	}
}

func TestWatcherRejectsUnsupportedHost(t *testing.T) {
	for _, host := range []string{"tcp://127.0.0.1:2375", "unix://", "npipe:////./pipe/docker_engine"} {
		err := NewWatcher(host, nil).Run(context.Background(), func([]ContainerInfo, map[string]string) {})
		if err == nil {
			t.Errorf("Run with docker host %q succeeded", host)
		}
	}
}

func TestDockerSocketPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "/var/run/docker.sock",
		"unix:///var/run/docker.sock": "/var/run/docker.sock",
		"unix:///run/x/d.sock":        "/run/x/d.sock",
		"/run/d.sock":                 "/run/d.sock",
	} {
		if got, err := dockerSocketPath(in); err != nil || got != want {
			t.Errorf("dockerSocketPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestWatcherLeaksNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("run", func(t *testing.T) {
		d := newFakeDocker(t, sockPath(t))
		d.update(func(d *fakeDocker) { d.containers["c1"] = &fakeContainer{name: "one", running: true} })
		d.start()
		col := startWatcher(t, d.path, nil)
		col.waitIDs(t, "c1")
		d.stop() // one reconnection cycle too
		d.start()
		waitFor(t, "resubscription", func() bool { return d.subscribers() == 1 })
	})
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

func TestExposedPorts(t *testing.T) {
	got := exposedPorts(map[string]struct{}{"8080/tcp": {}, "53/udp": {}, "80/tcp": {}, "80": {}, "x/tcp": {}, "0/tcp": {}, "9/bogus": {}})
	want := []Port{{"udp", 53}, {"tcp", 80}, {"tcp", 8080}}
	if !slices.Equal(got, want) {
		t.Fatalf("exposedPorts = %v, want %v", got, want)
	}
}

// docker stop: the kill event with the container's stop signal marks it
// stopping (not Healthy) while it still runs; another signal does not
// (docker kill -s HUP, a reload); dying and starting again clears it.
func TestWatcherMarksStoppingContainers(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.update(func(d *fakeDocker) {
		d.containers["c1"] = &fakeContainer{name: "web-1", running: true}
		d.containers["c2"] = &fakeContainer{name: "nginx-1", running: true, stopSig: "SIGQUIT"}
	})
	d.start()
	col := startWatcher(t, d.path, nil)
	col.waitIDs(t, "c1", "c2")
	stopping := func(id string) bool { c, _ := col.container(id); return c.Stopping }

	d.emit("container", "kill", "c2", map[string]string{"signal": "1"}) // HUP: a reload
	d.emit("container", "kill", "c1", map[string]string{"signal": "15"})
	waitFor(t, "c1 stopping", func() bool { return stopping("c1") })
	if c, _ := col.container("c1"); c.Healthy() {
		t.Error("a stopping container is Healthy")
	}
	if stopping("c2") {
		t.Error("SIGHUP marked a container whose stop signal is SIGQUIT as stopping")
	}
	d.emit("container", "kill", "c2", map[string]string{"signal": "3"})
	waitFor(t, "c2 stopping on SIGQUIT", func() bool { return stopping("c2") })

	// docker restart: dies, starts again: serving.
	d.emit("container", "die", "c1", nil)
	d.emit("container", "start", "c1", nil)
	waitFor(t, "c1 no longer stopping", func() bool { c, ok := col.container("c1"); return ok && !c.Stopping })
	if !stopping("c2") {
		t.Error("c2 lost its stopping mark on another container's events")
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{"SIGTERM": 15, "quit": 3, "SIGRTMIN+3": 37, "9": 9, " SIGUSR1 ": 10} {
		got, ok := parseSignal(in)
		if ok != (want != 0) || got != want {
			t.Errorf("parseSignal(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	if _, ok := parseSignal(""); ok {
		t.Error(`"" parsed as a signal`)
	}
}
