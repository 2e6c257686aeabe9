package plugin

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

func TestChooseAPIVersion(t *testing.T) {
	for engine, want := range map[string]string{
		"1.41":  "1.41", // engine 20.10
		"1.44":  "1.44",
		"1.52":  "1.52", // engine 29.0
		"1.56":  "1.52", // newer than this client was checked against
		"2.0":   "1.52",
		"1.40":  "1.40", // older than supported: still what the engine speaks
		"":      "1.41", // names none
		"x.y":   "1.41",
		"1":     "1.41",
		"v1.43": "1.43",
	} {
		if got := chooseAPIVersion(engine).String(); got != want {
			t.Errorf("chooseAPIVersion(%q) = %s, want %s", engine, got, want)
		}
	}
}

func TestVersionRefused(t *testing.T) {
	for msg, want := range map[string]bool{
		`{"message":"client version 1.41 is too old. Minimum supported API version is 1.44, please upgrade your client to a newer version"}`: true,
		`{"message":"client version 1.52 is too new. Maximum supported API version is 1.41"}`:                                                true,
		`{"message":"invalid filter 'bogus'"}`: false,
		`{"message":"this client is too old"}`: false,
	} {
		if got := versionRefused(msg); got != want {
			t.Errorf("versionRefused(%s) = %v, want %v", msg, got, want)
		}
	}
}

// watchEngine starts a watcher against d and returns it with its collector.
func watchEngine(t *testing.T, d *fakeDocker) (*Watcher, *collector) {
	t.Helper()
	var w *Watcher
	col := startWatcher(t, d.path, func(x *Watcher) { w = x })
	return w, col
}

// followsEngine checks the watcher's whole path on d: listing, inspecting, events.
func followsEngine(t *testing.T, d *fakeDocker, col *collector) {
	t.Helper()
	col.waitIDs(t, "c1")
	if c, _ := col.container("c1"); c.Labels["meshnet.service"] != "web" || c.Networks["app"].EndpointID != "ep1" {
		t.Errorf("c1 as inspected: %+v", c)
	}
	waitFor(t, "subscription", func() bool { return d.subscribers() == 1 })
	d.update(func(d *fakeDocker) { d.containers["c2"] = &fakeContainer{name: "two", running: true} })
	d.emit("container", "start", "c2", nil)
	col.waitIDs(t, "c1", "c2")
}

func oneContainer(d *fakeDocker) {
	d.update(func(d *fakeDocker) {
		d.networks = map[string]string{"n-app": "app"}
		d.containers["c1"] = &fakeContainer{
			name: "one", running: true, labels: map[string]string{"meshnet.service": "web"},
			networks: map[string]dockerEndpoint{"app": {NetworkID: "n-app", EndpointID: "ep1", IPAddress: "10.42.0.5"}},
		}
	})
}

// An engine 29 refuses API versions below 1.44: the watcher must ask which it speaks.
func TestWatcherNegotiatesWithEngine29(t *testing.T) {
	d := newFakeDocker(t, sockPath(t)) // 1.44 .. 1.52
	oneContainer(d)
	d.start()
	w, col := watchEngine(t, d)
	followsEngine(t, d, col)
	if n := d.versionCount("1.52"); n == 0 {
		t.Error("no request at API 1.52")
	}
	for _, v := range []string{"1.41", "1.44", "1.53"} {
		if n := d.versionCount(v); n != 0 {
			t.Errorf("%d requests at API %s; want every one at 1.52", n, v)
		}
	}
	if n, p := d.versionCount(""), d.pingCount(); n != p {
		t.Errorf("%d unversioned requests, %d of them pings: only /_ping may go unversioned", n, p)
	}
	st := w.State()
	if !st.Connected || st.APIVersion != "1.52" || st.EngineAPIVersion != "1.52" || st.Since.IsZero() {
		t.Errorf("state %+v; want connected at API 1.52", st)
	}
}

// Engine 20.10 speaks up to 1.41 and refuses anything newer.
func TestWatcherNegotiatesWithEngine2010(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.setAPI("1.12", "1.41")
	oneContainer(d)
	d.start()
	w, col := watchEngine(t, d)
	followsEngine(t, d, col)
	if n := d.versionCount("1.52"); n != 0 {
		t.Errorf("%d requests at API 1.52 to an engine that speaks up to 1.41", n)
	}
	if st := w.State(); st.APIVersion != "1.41" {
		t.Errorf("API version %q, want 1.41", st.APIVersion)
	}
}

// An engine newer than the client: the client speaks the newest it knows.
func TestWatcherSpeaksItsNewestToANewerEngine(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.setAPI("1.44", "1.60")
	oneContainer(d)
	d.start()
	w, col := watchEngine(t, d)
	followsEngine(t, d, col)
	if st := w.State(); st.APIVersion != "1.52" || st.EngineAPIVersion != "1.60" {
		t.Errorf("state %+v; want API 1.52 with an engine at 1.60", st)
	}
}

// The engine upgraded while it was away: the reconnection negotiates again.
func TestWatcherRenegotiatesOnReconnect(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.setAPI("1.12", "1.41")
	oneContainer(d)
	d.start()
	w, col := watchEngine(t, d)
	col.waitIDs(t, "c1")
	d.stop()
	waitFor(t, "the watcher to see the engine gone", func() bool { return !w.State().Connected })
	d.setAPI("1.44", "1.52")
	d.update(func(d *fakeDocker) { d.containers["c5"] = &fakeContainer{name: "five", running: true} })
	d.start()
	col.waitIDs(t, "c1", "c5")
	waitFor(t, "connected at 1.52", func() bool { st := w.State(); return st.Connected && st.APIVersion == "1.52" })
	waitFor(t, "subscription", func() bool { return d.subscribers() == 1 })
	d.update(func(d *fakeDocker) { d.containers["c6"] = &fakeContainer{name: "six", running: true} })
	d.emit("container", "start", "c6", nil)
	col.waitIDs(t, "c1", "c5", "c6")
}

// A call the engine refuses as "client version ... is too old" is retried after a new
// negotiation, without waiting for the connection to break.
func TestDockerClientRenegotiatesWhenRefused(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	d.setAPI("1.12", "1.41")
	oneContainer(d)
	d.start()
	w, col := watchEngine(t, d)
	col.waitIDs(t, "c1")
	waitFor(t, "subscription", func() bool { return d.subscribers() == 1 })
	subscribed := d.versionCount("1.41")

	d.setAPI("1.44", "1.52") // the stream stays; the next inspect is refused
	d.update(func(d *fakeDocker) { d.containers["c2"] = &fakeContainer{name: "two", running: true} })
	d.emit("container", "start", "c2", nil)
	col.waitIDs(t, "c1", "c2")
	if st := w.State(); st.APIVersion != "1.52" || !st.Connected {
		t.Errorf("state %+v; want still connected, now at 1.52", st)
	}
	if d.subscribers() != 1 || d.versionCount("1.41") != subscribed+1 {
		t.Errorf("%d subscribers, %d more requests at 1.41: want the stream kept and one refused inspect",
			d.subscribers(), d.versionCount("1.41")-subscribed)
	}
}

// HeldBy may run before the watcher ever connected: it negotiates on its own.
func TestHeldByNegotiates(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	oneContainer(d)
	d.start()
	w := NewWatcher("unix://"+d.path, nil)
	defer w.client.close()
	h, err := w.HeldBy(context.Background(), "meshnet")
	if err != nil {
		t.Fatalf("HeldBy: %v", err)
	}
	if !h.Endpoints["ep1"] || !h.Addrs[netip.MustParseAddr("10.42.0.5")] {
		t.Errorf("HeldBy = %+v; want ep1 and 10.42.0.5", h)
	}
	if n := d.versionCount("1.52"); n == 0 {
		t.Error("HeldBy did not speak 1.52 to an engine 29")
	}
}

func TestWatcherStateWithoutEngine(t *testing.T) {
	d := newFakeDocker(t, sockPath(t))
	before := time.Now()
	w, col := watchEngine(t, d)
	waitFor(t, "a failed attempt", func() bool { return w.State().LastError != "" })
	st := w.State()
	if st.Connected || st.Since.Before(before) || st.APIVersion != "" || st.LastErrorAt.IsZero() {
		t.Errorf("state with no engine: %+v", st)
	}
	oneContainer(d)
	d.start()
	col.waitIDs(t, "c1")
	waitFor(t, "connected", func() bool { return w.State().Connected })
	if st := w.State(); st.LastError == "" {
		t.Error("the last error was forgotten on connecting; it should stay for meshctl status")
	}
}
