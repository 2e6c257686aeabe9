package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestPluginSocketBadInput sends what Docker never should to the plugin socket — malformed
// JSON, unknown IDs, a Join for an endpoint that does not exist — and checks that each gets
// a JSON error naming the problem and that the daemon keeps serving Docker afterwards.
func TestPluginSocketBadInput(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	h := hosts[0]
	createNetworkEverywhere(t, ctx, hosts[:1], "app", "10.42.0.0/24")
	const socket = "/run/docker/plugins/meshnet.sock"

	post := func(path, body string) (int, map[string]any, error) {
		out, err := h.Exec(ctx, "curl", "-sS", "--max-time", "10", "--unix-socket", socket,
			"-H", "Content-Type: application/vnd.docker.plugins.v1.2+json",
			"-w", "\n%{http_code}", "-d", body, "http://meshnet"+path)
		if err != nil {
			return 0, nil, err
		}
		i := strings.LastIndex(out, "\n")
		var code int
		if _, err := fmt.Sscan(out[i+1:], &code); err != nil {
			return 0, nil, fmt.Errorf("no status code in %q", out)
		}
		var reply map[string]any
		if err := json.Unmarshal([]byte(out[:i]), &reply); err != nil {
			return code, nil, fmt.Errorf("reply to %s is not JSON: %q", path, out[:i])
		}
		return code, reply, nil
	}

	cases := []struct {
		path, body string
		// errField is where the protocol puts the message: "Err" for the network driver;
		// IPAM replies carry it under "Error" too.
		errFields []string
		mentions  string
	}{
		{"/NetworkDriver.CreateNetwork", `{"NetworkID": "abc", "IPv4Data": [`, []string{"Err"}, "JSON"},
		{"/NetworkDriver.CreateNetwork", `[1,2,3]`, []string{"Err"}, ""},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"nosuchnetwork","EndpointID":"e1","Interface":{"Address":"10.42.0.9/24"}}`, []string{"Err"}, "unknown network"},
		{"/NetworkDriver.Join", `{"NetworkID":"nosuchnetwork","EndpointID":"nosuchendpoint","SandboxKey":"/var/run/docker/netns/x"}`, []string{"Err"}, ""},
		{"/NetworkDriver.DeleteEndpoint", `{"NetworkID":"nosuchnetwork","EndpointID":"nosuchendpoint"}`, []string{}, ""},
		{"/NetworkDriver.EndpointOperInfo", `{"NetworkID":"nosuchnetwork","EndpointID":"nosuchendpoint"}`, []string{"Err"}, ""},
		{"/IpamDriver.RequestAddress", `{"PoolID":"192.0.2.0/24","Address":""}`, []string{"Err", "Error"}, "192.0.2.0/24"},
		{"/IpamDriver.RequestPool", `{"AddressSpace":"global","Pool":"not-a-subnet"}`, []string{"Err", "Error"}, "not-a-subnet"},
		{"/IpamDriver.ReleaseAddress", `{"PoolID":"nosuchpool","Address":"garbage"}`, []string{"Err", "Error"}, ""},
		{"/NoSuch.Method", `{}`, []string{"Err"}, ""},
	}
	for _, tc := range cases {
		code, reply, err := post(tc.path, tc.body)
		if err != nil {
			t.Errorf("%s %s: %v", tc.path, tc.body, err)
			continue
		}
		if len(tc.errFields) == 0 {
			// Deleting what does not exist is success: Docker retries deletes after crashes.
			if msg, _ := reply["Err"].(string); msg != "" {
				t.Errorf("%s %s: want success, got %d %v", tc.path, tc.body, code, reply)
			}
			continue
		}
		for _, f := range tc.errFields {
			msg, _ := reply[f].(string)
			if msg == "" {
				t.Errorf("%s %s: reply %d %v has no %q message", tc.path, tc.body, code, reply, f)
				continue
			}
			if tc.mentions != "" && !strings.Contains(msg, tc.mentions) {
				t.Errorf("%s %s: message %q does not mention %q", tc.path, tc.body, msg, tc.mentions)
			}
		}
		t.Logf("%s %.40s -> %d %v", tc.path, tc.body, code, reply)
	}

	// A body far larger than any request Docker sends is refused, not buffered.
	if out, err := h.Exec(ctx, "sh", "-c", "head -c 33554432 /dev/zero | tr '\\0' 'a' | curl -sS --max-time 20 --unix-socket "+socket+
		" -o /dev/null -w '%{http_code}' --data-binary @- http://meshnet/NetworkDriver.CreateNetwork"); err != nil {
		t.Logf("oversized request: %v (the daemon may close the connection early)", err)
	} else if strings.TrimSpace(out) == "200" {
		t.Errorf("a 32 MiB request was accepted with 200")
	}

	// Still serving Docker: a container starts on the network and reaches its gateway.
	runContainer(t, ctx, h, "after-bad-input", "app")
	ep, err := harness.ContainerEndpoint(ctx, h, "after-bad-input", "app")
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, func() error { return harness.Ping(ctx, h, "after-bad-input", ep.Gateway) })
	if !c.Daemon(h).Running() {
		t.Fatalf("meshnetd on %s exited after bad input", h.Name())
	}
}
