package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDockerHost is the engine's socket when none is given.
const DefaultDockerHost = "unix:///var/run/docker.sock"

const (
	dockerRequestTimeout = 10 * time.Second
	dockerMaxReplyBytes  = 32 << 20
	// Starting a container runs the network driver's Join and more.
	dockerStartTimeout = time.Minute
)

var errDockerNotFound = errors.New("docker: no such object")

// dockerClient is the little of the Engine API the watcher needs, plain HTTP over the engine's
// unix socket (no SDK: it would pull in half of moby for four GET requests). It speaks the
// version negotiate chose (apiversion.go); safe for concurrent use (HeldBy runs beside Run).
type dockerClient struct {
	http *http.Client

	mu sync.Mutex
	// version is the negotiated API version, zero until the first negotiation; engine is
	// what the engine's /_ping named ("" if nothing).
	version apiVersion
	engine  string
}

// dockerSocketPath turns a DOCKER_HOST-style address into a socket path.
func dockerSocketPath(host string) (string, error) {
	if host == "" {
		host = DefaultDockerHost
	}
	switch {
	case strings.HasPrefix(host, "unix://"):
		p := strings.TrimPrefix(host, "unix://")
		if p == "" {
			return "", fmt.Errorf("docker host %q: empty socket path", host)
		}
		return p, nil
	case strings.HasPrefix(host, "/"):
		return host, nil
	default:
		return "", fmt.Errorf("docker host %q: only unix:// sockets are supported", host)
	}
}

func newDockerClient(host string) (*dockerClient, error) {
	path, err := dockerSocketPath(host)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		// Also bounds the events subscription: the engine sends its headers at once.
		ResponseHeaderTimeout: dockerRequestTimeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
	}
	// No Client.Timeout: it would cut the event stream. Requests carry deadlines instead.
	return &dockerClient{http: &http.Client{Transport: tr}}, nil
}

func (c *dockerClient) close() {
	c.http.CloseIdleConnections()
}

// negotiate asks the engine which API version it speaks (GET /_ping, unversioned: every
// engine answers it) and from now on speaks the lower of that and maxDockerAPIVersion.
func (c *dockerClient) negotiate(ctx context.Context) (apiVersion, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return apiVersion{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return apiVersion{}, fmt.Errorf("docker: GET /_ping: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	engine := resp.Header.Get("API-Version")
	// An engine that is not well (500) still names its version, and the docker CLI uses
	// it; without one there is nothing to learn from the reply.
	if engine == "" && resp.StatusCode != http.StatusOK {
		return apiVersion{}, fmt.Errorf("docker: GET /_ping: %s", resp.Status)
	}
	v := chooseAPIVersion(engine)
	c.mu.Lock()
	c.version, c.engine = v, engine
	c.mu.Unlock()
	return v, nil
}

// apiVersion returns the negotiated version, negotiating when none was.
func (c *dockerClient) apiVersion(ctx context.Context) (apiVersion, error) {
	c.mu.Lock()
	v := c.version
	c.mu.Unlock()
	if v != (apiVersion{}) {
		return v, nil
	}
	return c.negotiate(ctx)
}

// versions returns the version in use and the one the engine named, "" before any.
func (c *dockerClient) versions() (using, engine string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != (apiVersion{}) {
		using = c.version.String()
	}
	return using, c.engine
}

// request sends method on the versioned path and returns the reply, whatever its status.
// An engine that refuses the version (upgraded or downgraded since the negotiation: 400
// "client version 1.41 is too old") is asked again and the request sent once more.
func (c *dockerClient) request(ctx context.Context, method, path string, query url.Values) (*http.Response, error) {
	v, err := c.apiVersion(ctx)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		u := "http://docker/v" + v.String() + path
		if len(query) > 0 {
			u += "?" + query.Encode()
		}
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusBadRequest || attempt > 0 {
			return resp, nil
		}
		// Keep the body readable for the caller: it may be another 400.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if !versionRefused(string(body)) {
			return resp, nil
		}
		prev := v
		if v, err = c.negotiate(ctx); err != nil {
			return nil, fmt.Errorf("docker: %s %s: engine refused API %s (%s); asking it again: %w", method, path, prev, strings.TrimSpace(string(body)), err)
		}
		if v == prev {
			return resp, nil // it names a version it then refuses: nothing better to try
		}
	}
}

// do sends a GET and returns the response if it is 200; 404 is errDockerNotFound.
func (c *dockerClient) do(ctx context.Context, path string, query url.Values) (*http.Response, error) {
	resp, err := c.request(ctx, http.MethodGet, path, query)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%w: GET %s: %s", errDockerNotFound, path, strings.TrimSpace(string(msg)))
	}
	return nil, fmt.Errorf("docker: GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
}

// get decodes the JSON reply of a GET into v, within dockerRequestTimeout.
func (c *dockerClient) get(ctx context.Context, path string, query url.Values, v any) error {
	ctx, cancel := context.WithTimeout(ctx, dockerRequestTimeout)
	defer cancel()
	resp, err := c.do(ctx, path, query)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, dockerMaxReplyBytes)).Decode(v); err != nil {
		return fmt.Errorf("docker: decoding GET %s: %w", path, err)
	}
	return nil
}

// watchedActions are the engine events that change what the watcher reports. Docker matches
// "health_status" against "health_status: healthy" and the like.
var watchedActions = []string{
	"start", "kill", "die", "stop", "pause", "unpause", "destroy", "rename", "health_status", // containers
	"connect", "disconnect", "create", // networks ("destroy" too)
}

// events subscribes to the event stream; the body is a sequence of JSON messages.
func (c *dockerClient) events(ctx context.Context) (io.ReadCloser, error) {
	filters, _ := json.Marshal(map[string][]string{
		"type":  {"container", "network"},
		"event": watchedActions,
	})
	resp, err := c.do(ctx, "/events", url.Values{"filters": {string(filters)}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

type dockerEvent struct {
	Type   string `json:"Type"`
	Action string `json:"Action"`
	Actor  struct {
		ID         string            `json:"ID"`
		Attributes map[string]string `json:"Attributes"`
	} `json:"Actor"`
}

type dockerContainerSummary struct {
	ID string `json:"Id"`
}

type dockerNetworkSummary struct {
	ID   string `json:"Id"`
	Name string `json:"Name"`
}

type dockerEndpoint struct {
	NetworkID  string   `json:"NetworkID"`
	EndpointID string   `json:"EndpointID"`
	IPAddress  string   `json:"IPAddress"`
	MacAddress string   `json:"MacAddress"`
	Aliases    []string `json:"Aliases"`
}

type dockerInspect struct {
	ID     string `json:"Id"`
	Name   string `json:"Name"`
	Config *struct {
		Labels       map[string]string   `json:"Labels"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		StopSignal   string              `json:"StopSignal"`
	} `json:"Config"`
	State *struct {
		Running    bool `json:"Running"`
		Paused     bool `json:"Paused"`
		Restarting bool `json:"Restarting"`
		Pid        int  `json:"Pid"`
		Health     *struct {
			Status string `json:"Status"`
		} `json:"Health"`
	} `json:"State"`
	NetworkSettings *struct {
		SandboxKey string                     `json:"SandboxKey"`
		Networks   map[string]*dockerEndpoint `json:"Networks"`
	} `json:"NetworkSettings"`
}

// runningContainerIDs lists running (and paused) containers.
func (c *dockerClient) runningContainerIDs(ctx context.Context) ([]string, error) {
	var list []dockerContainerSummary
	if err := c.get(ctx, "/containers/json", nil, &list); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(list))
	for _, s := range list {
		if s.ID != "" {
			ids = append(ids, s.ID)
		}
	}
	return ids, nil
}

// inspect returns the container, ok=false if it is gone or no longer running.
func (c *dockerClient) inspect(ctx context.Context, id string) (ContainerInfo, bool, error) {
	var in dockerInspect
	err := c.get(ctx, "/containers/"+url.PathEscape(id)+"/json", nil, &in)
	if errors.Is(err, errDockerNotFound) {
		return ContainerInfo{}, false, nil
	}
	if err != nil {
		return ContainerInfo{}, false, err
	}
	if in.State == nil || !in.State.Running || in.ID == "" {
		return ContainerInfo{}, false, nil
	}
	info := ContainerInfo{
		ID:      in.ID,
		Name:    strings.TrimPrefix(in.Name, "/"),
		Running: in.State.Running && !in.State.Restarting,
		Paused:  in.State.Paused,
		Pid:     in.State.Pid,
	}
	if in.State.Health != nil {
		info.Health = in.State.Health.Status
	}
	if in.Config != nil && len(in.Config.Labels) > 0 {
		info.Labels = in.Config.Labels
	}
	info.StopSignal = int(unix.SIGTERM)
	if in.Config != nil {
		info.Ports = exposedPorts(in.Config.ExposedPorts)
		if sig, ok := parseSignal(in.Config.StopSignal); ok {
			info.StopSignal = sig
		}
	}
	if in.NetworkSettings != nil {
		info.SandboxKey = in.NetworkSettings.SandboxKey
	}
	if in.NetworkSettings != nil && len(in.NetworkSettings.Networks) > 0 {
		info.Networks = make(map[string]EndpointSettings, len(in.NetworkSettings.Networks))
		for name, ep := range in.NetworkSettings.Networks {
			if ep == nil {
				continue
			}
			es := EndpointSettings{
				NetworkID:  ep.NetworkID,
				EndpointID: ep.EndpointID,
				MacAddress: ep.MacAddress,
				Aliases:    ep.Aliases,
			}
			if a, err := netip.ParseAddr(ep.IPAddress); err == nil {
				es.IPAddress = a.Unmap()
			}
			info.Networks[name] = es
		}
	}
	return info, true, nil
}

// networks lists every network, ID → name.
func (c *dockerClient) networks(ctx context.Context) (map[string]string, error) {
	var list []dockerNetworkSummary
	if err := c.get(ctx, "/networks", nil, &list); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list))
	for _, n := range list {
		if n.ID != "" {
			out[n.ID] = n.Name
		}
	}
	return out, nil
}

// exposedPorts turns the engine's "80/tcp" keys into sorted ports; keys
// that are not a port/protocol pair are skipped.
func exposedPorts(m map[string]struct{}) []Port {
	var out []Port
	for k := range m {
		num, proto, _ := strings.Cut(k, "/")
		if proto == "" {
			proto = "tcp"
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 || (proto != "tcp" && proto != "udp" && proto != "sctp") {
			continue
		}
		out = append(out, Port{Proto: proto, Port: uint16(n)})
	}
	slices.SortFunc(out, func(a, b Port) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return strings.Compare(a.Proto, b.Proto)
	})
	return slices.Compact(out)
}

// parseSignal reads a STOPSIGNAL as the engine takes it: a name with or
// without SIG ("SIGQUIT", "quit") or a number. "" is not one (SIGTERM then).
func parseSignal(s string) (int, bool) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if s == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return n, true
	}
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	// Real-time signals, as systemd images stop with (SIGRTMIN+3).
	if rest, ok := strings.CutPrefix(s, "SIGRTMIN"); ok {
		n := 0
		if rest != "" {
			if v, err := strconv.Atoi(strings.TrimPrefix(rest, "+")); err == nil && v >= 0 {
				n = v
			} else {
				return 0, false
			}
		}
		return 34 + n, true // SIGRTMIN as Linux numbers it for processes (glibc reserves 32, 33)
	}
	if sig := unix.SignalNum(s); sig != 0 {
		return int(sig), true
	}
	return 0, false
}
