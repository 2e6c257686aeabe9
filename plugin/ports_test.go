package plugin

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Shaped as engine 20.10 sends ProgramExternalConnectivity (logged in an e2e run for
// docker run -p 8081:8080: {"Proto":6,"IP":"","Port":8080,"HostIP":"","HostPort":8081,
// "HostPortEnd":8081} and exposedports [{"Proto":6,"Port":8080}]; the same Options arrive in
// Join), with more bindings of the kinds the engine makes.
const engineExternal = `{"NetworkID":"n1","EndpointID":"e1","Options":{
 "com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":8080},{"Proto":17,"Port":53},{"Proto":6,"Port":7000}],
 "com.docker.network.portmap":[
  {"Proto":6,"IP":"","Port":8080,"HostIP":"","HostPort":8081,"HostPortEnd":8081},
  {"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":9000,"HostPortEnd":9005},
  {"Proto":6,"IP":"","Port":8080,"HostIP":"","HostPort":0,"HostPortEnd":0},
  {"Proto":132,"IP":"","Port":9,"HostIP":"0.0.0.0","HostPort":99,"HostPortEnd":0},
  {"Proto":6,"IP":"","Port":8080,"HostIP":"::","HostPort":8081,"HostPortEnd":8081}]}}`

func TestProgramExternalConnectivityParsed(t *testing.T) {
	b, h := newTestHandler()
	wantJSON(t, "program", post(t, h, "/NetworkDriver.ProgramExternalConnectivity", engineExternal), `{}`)
	got := b.gotExternal
	if got.NetworkID != "n1" || got.EndpointID != "e1" {
		t.Errorf("IDs: %+v", got)
	}
	want := []PortBinding{
		{Proto: "tcp", Port: 8080, HostPort: 8081, HostPortEnd: 8081},
		{Proto: "udp", Port: 53, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 9000, HostPortEnd: 9005},
		{Proto: "tcp", Port: 8080},
		{Proto: "sctp", Port: 9, HostPort: 99, HostPortEnd: 99},
		{Proto: "tcp", Port: 8080, HostIP: netip.IPv6Unspecified(), HostPort: 8081, HostPortEnd: 8081},
	}
	if !slices.Equal(got.Ports, want) {
		t.Errorf("ports:\n got %+v\nwant %+v", got.Ports, want)
	}
	if !slices.Equal(got.Exposed, []string{"8080/tcp", "53/udp", "7000/tcp"}) {
		t.Errorf("exposed: %v", got.Exposed)
	}
	if s := want[1].String(); s != "127.0.0.1:9000-9005->53/udp" {
		t.Errorf("String: %s", s)
	}
	wantJSON(t, "revoke", post(t, h, "/NetworkDriver.RevokeExternalConnectivity", `{"NetworkID":"n1","EndpointID":"e1"}`), `{}`)
	if b.lastCall() != "RevokeExternalConnectivity" {
		t.Errorf("last call %s", b.lastCall())
	}
}

func TestProgramExternalConnectivityGarbage(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"no ids", `{"Options":{}}`, "needs NetworkID and EndpointID"},
		{"portmap not a list", `{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":"8080"}}`, "want a list"},
		{"protocol", `{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":[{"Proto":1,"Port":80}]}}`, "protocol 1"},
		{"port range", `{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":70000}]}}`, "outside 0..65535"},
		{"container port 0", `{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":0,"HostPort":80}]}}`, "container port 0"},
		{"backwards", `{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":90,"HostPortEnd":85}]}}`, "ends before"},
		{"host ip", `{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostIP":"localhost"}]}}`, "not an IP address"},
		{"exposed", `{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":0}]}}`, "exposedports[0]"},
	} {
		b, h := newTestHandler()
		r := post(t, h, "/NetworkDriver.ProgramExternalConnectivity", tc.body)
		if r.status != http.StatusBadRequest || !strings.Contains(asString(r.body["Err"]), tc.want) {
			t.Errorf("%s: status %d, body %v; want 400 with %q", tc.name, r.status, r.body, tc.want)
		}
		if b.lastCall() != "" {
			t.Errorf("%s: backend called (%s)", tc.name, b.lastCall())
		}
	}
}
