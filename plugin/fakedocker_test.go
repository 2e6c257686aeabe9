package plugin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeContainer is one container of the fake engine.
type fakeContainer struct {
	name     string
	labels   map[string]string
	running  bool
	paused   bool
	health   string
	stopSig  string                    // Config.StopSignal ("" = the engine's default)
	networks map[string]dockerEndpoint // by network name
	// gone404: listed by /containers/json but 404 on inspect (died and was removed in between).
	gone404 bool
}

// fakeDocker is a minimal Docker Engine API on a unix socket: /_ping, /containers/json,
// /containers/{id}/json, /networks and a streaming /events.
//
// It checks API versions as a real engine does: /_ping answers without a version and names
// the engine's newest in its API-Version header; a versioned path outside [minAPI, maxAPI]
// gets 400 with the engine's own message. Unversioned paths other than /_ping get 400 too
// (a real engine serves them at its newest version, whose fields may differ from what the
// client checked: the client must never send one).
type fakeDocker struct {
	t    *testing.T
	path string

	mu             sync.Mutex
	minAPI, maxAPI string         // default: engine 29's range, 1.44 to 1.52
	versionsSeen   map[string]int // requests per API version asked for ("" unversioned)
	pings          int
	containers     map[string]*fakeContainer
	networks       map[string]string // ID → name
	subs           map[chan dockerEvent]bool
	inspects       map[string]int // inspect requests per container ID
	lists          int            // /containers/json requests
	srv            *httptest.Server
	closing        chan struct{}
}

func newFakeDocker(t *testing.T, path string) *fakeDocker {
	return &fakeDocker{
		t:            t,
		path:         path,
		containers:   map[string]*fakeContainer{},
		networks:     map[string]string{},
		subs:         map[chan dockerEvent]bool{},
		inspects:     map[string]int{},
		minAPI:       "1.44",
		maxAPI:       "1.52",
		versionsSeen: map[string]int{},
	}
}

// setAPI sets the range of API versions the engine speaks.
func (d *fakeDocker) setAPI(minV, maxV string) {
	d.update(func(d *fakeDocker) { d.minAPI, d.maxAPI = minV, maxV })
}

// versionCount returns how many requests asked for API version v.
func (d *fakeDocker) versionCount(v string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.versionsSeen[v]
}

func (d *fakeDocker) pingCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pings
}

// checkVersion strips the version from the path and answers as the engine's version
// middleware does; ok=false when it answered.
func (d *fakeDocker) checkVersion(w http.ResponseWriter, r *http.Request) (path string, ok bool) {
	d.mu.Lock()
	minV, maxV := d.minAPI, d.maxAPI
	d.mu.Unlock()
	w.Header().Set("Api-Version", maxV)
	path = r.URL.Path
	version := ""
	if rest, found := strings.CutPrefix(path, "/v"); found {
		if v, p, found := strings.Cut(rest, "/"); found {
			version, path = v, "/"+p
		}
	}
	d.mu.Lock()
	d.versionsSeen[version]++
	if path == "/_ping" {
		d.pings++
	}
	d.mu.Unlock()
	if path == "/_ping" && version == "" {
		return path, true
	}
	refuse := func(msg string) (string, bool) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		writeTestJSON(w, map[string]string{"message": msg})
		return "", false
	}
	if version == "" {
		return refuse("fake engine: unversioned path " + r.URL.Path)
	}
	v, err := parseAPIVersion(version)
	if err != nil {
		return refuse("fake engine: bad version " + version)
	}
	if v.less(mustAPIVersion(minV)) {
		return refuse(fmt.Sprintf("client version %s is too old. Minimum supported API version is %s, please upgrade your client to a newer version", version, minV))
	}
	if mustAPIVersion(maxV).less(v) {
		return refuse(fmt.Sprintf("client version %s is too new. Maximum supported API version is %s", version, maxV))
	}
	return path, true
}

// start serves on the socket (again, after stop: an engine restart).
func (d *fakeDocker) start() {
	d.t.Helper()
	ln, err := net.Listen("unix", d.path)
	if err != nil {
		d.t.Fatalf("fake docker: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(d.serve))
	srv.Listener.Close()
	srv.Listener = ln
	d.mu.Lock()
	d.srv = srv
	d.closing = make(chan struct{})
	d.mu.Unlock()
	srv.Start()
	d.t.Cleanup(d.stop)
}

// stop takes the engine away: streams end, the socket disappears.
func (d *fakeDocker) stop() {
	d.mu.Lock()
	srv := d.srv
	d.srv = nil
	if srv != nil {
		close(d.closing)
	}
	d.mu.Unlock()
	if srv == nil {
		return
	}
	srv.CloseClientConnections()
	srv.Close()
}

func (d *fakeDocker) subscribers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.subs)
}

func (d *fakeDocker) inspectCount(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inspects[id]
}

func (d *fakeDocker) listCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lists
}

// update changes the engine's state under its lock.
func (d *fakeDocker) update(f func(d *fakeDocker)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

// emit sends an event to every subscriber.
func (d *fakeDocker) emit(typ, action, actorID string, attrs map[string]string) {
	var ev dockerEvent
	ev.Type, ev.Action, ev.Actor.ID, ev.Actor.Attributes = typ, action, actorID, attrs
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch := range d.subs {
		ch <- ev
	}
}

func (d *fakeDocker) serve(w http.ResponseWriter, r *http.Request) {
	path, ok := d.checkVersion(w, r)
	if !ok {
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, `{"message":"bad request"}`, http.StatusBadRequest)
		return
	}
	switch {
	case path == "/_ping":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("OK"))
	case path == "/events":
		d.serveEvents(w, r)
	case path == "/containers/json":
		d.mu.Lock()
		d.lists++
		var list []dockerContainerSummary
		for id, c := range d.containers {
			if c.running || c.gone404 {
				list = append(list, dockerContainerSummary{ID: id})
			}
		}
		d.mu.Unlock()
		writeTestJSON(w, list)
	case path == "/networks":
		d.mu.Lock()
		var list []dockerNetworkSummary
		for id, name := range d.networks {
			list = append(list, dockerNetworkSummary{ID: id, Name: name})
		}
		d.mu.Unlock()
		writeTestJSON(w, list)
	case strings.HasPrefix(path, "/networks/"):
		id := strings.TrimPrefix(path, "/networks/")
		d.mu.Lock()
		name, ok := d.networks[id]
		var in map[string]any
		if ok {
			in = d.networkJSON(id, name)
		}
		d.mu.Unlock()
		if in == nil {
			w.WriteHeader(http.StatusNotFound)
			writeTestJSON(w, map[string]string{"message": "network " + id + " not found"})
			return
		}
		writeTestJSON(w, in)
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json"):
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), "/json")
		d.mu.Lock()
		d.inspects[id]++
		c, ok := d.containers[id]
		var in map[string]any
		if ok && !c.gone404 {
			in = inspectJSON(id, c)
		}
		d.mu.Unlock()
		if in == nil {
			w.WriteHeader(http.StatusNotFound)
			writeTestJSON(w, map[string]string{"message": "No such container: " + id})
			return
		}
		writeTestJSON(w, in)
	default:
		http.Error(w, `{"message":"page not found"}`, http.StatusNotFound)
	}
}

// inspectJSON renders a container as the engine's inspect does (the fields the watcher reads,
// plus some it does not).
func inspectJSON(id string, c *fakeContainer) map[string]any {
	state := map[string]any{"Status": "running", "Running": c.running, "Paused": c.paused, "Restarting": false, "Pid": 42}
	if c.health != "" {
		state["Health"] = map[string]any{"Status": c.health, "FailingStreak": 0}
	}
	nets := map[string]any{}
	for name, ep := range c.networks {
		nets[name] = map[string]any{
			"NetworkID": ep.NetworkID, "EndpointID": ep.EndpointID, "IPAddress": ep.IPAddress,
			"IPPrefixLen": 16, "MacAddress": ep.MacAddress, "Aliases": ep.Aliases, "Links": nil,
		}
	}
	return map[string]any{
		"Id":              id,
		"Name":            "/" + c.name,
		"Config":          map[string]any{"Labels": c.labels, "Image": "busybox", "StopSignal": c.stopSig},
		"State":           state,
		"NetworkSettings": map[string]any{"Networks": nets, "SandboxKey": "/var/run/docker/netns/x"},
	}
}

// networkJSON renders a network as the engine's inspect does: every network of the fake is a
// meshnet network on meshnet's IPAM, holding the endpoints of its running containers.
// Called with d.mu held.
func (d *fakeDocker) networkJSON(id, name string) map[string]any {
	containers := map[string]any{}
	for cid, c := range d.containers {
		if !c.running {
			continue
		}
		for _, ep := range c.networks {
			if ep.NetworkID == id {
				containers[cid] = map[string]any{"Name": c.name, "EndpointID": ep.EndpointID, "IPv4Address": ep.IPAddress + "/24", "IPv6Address": ""}
			}
		}
	}
	return map[string]any{
		"Id": id, "Name": name, "Driver": "meshnet",
		"IPAM":       map[string]any{"Driver": "meshnet", "Config": []any{}},
		"Containers": containers,
	}
}

func writeTestJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (d *fakeDocker) serveEvents(w http.ResponseWriter, r *http.Request) {
	ch := make(chan dockerEvent, 4096)
	d.mu.Lock()
	d.subs[ch] = true
	closing := d.closing
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.subs, ch)
		d.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush() // the engine sends headers at once, before any event
	enc := json.NewEncoder(w)
	for {
		select {
		case ev := <-ch:
			if err := enc.Encode(ev); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		case <-closing:
			return
		}
	}
}
