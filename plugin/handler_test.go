package plugin

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

type reply struct {
	status int
	ctype  string
	raw    string
	body   map[string]any
}

func post(t *testing.T, h http.Handler, path, body string) reply {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := reply{status: rec.Code, ctype: rec.Header().Get("Content-Type"), raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &r.body); err != nil {
		t.Fatalf("POST %s: reply is not a JSON object: %v: %q", path, err, r.raw)
	}
	if r.ctype != ContentType {
		t.Errorf("POST %s: Content-Type %q, want %q", path, r.ctype, ContentType)
	}
	return r
}

// wantJSON compares a reply body with the JSON text want, field names and all.
func wantJSON(t *testing.T, path string, r reply, want string) {
	t.Helper()
	var w map[string]any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad test JSON %q: %v", want, err)
	}
	if r.status != http.StatusOK {
		t.Errorf("%s: status %d, want 200 (%s)", path, r.status, r.raw)
	}
	if !reflect.DeepEqual(r.body, w) {
		t.Errorf("%s: reply %s, want %s", path, strings.TrimSpace(r.raw), want)
	}
}

func newTestHandler() (*fakeBackend, http.Handler) {
	b := newFakeBackend()
	return b, NewHandler(b, b, nil)
}

func TestHandshakeReplies(t *testing.T) {
	_, h := newTestHandler()
	for _, tc := range []struct{ path, body, want string }{
		{"/Plugin.Activate", "", `{"Implements":["NetworkDriver","IpamDriver"]}`},
		{"/NetworkDriver.GetCapabilities", "null", `{"Scope":"local","ConnectivityScope":"global"}`},
		{"/IpamDriver.GetCapabilities", "{}", `{"RequiresMACAddress":false,"RequiresRequestReplay":false}`},
		{"/IpamDriver.GetDefaultAddressSpaces", "null",
			`{"LocalDefaultAddressSpace":"meshnet-local","GlobalDefaultAddressSpace":"meshnet-global"}`},
		{"/NetworkDriver.DiscoverNew", `{"DiscoveryType":1,"DiscoveryData":{"Address":"198.18.0.1"}}`, `{}`},
		{"/NetworkDriver.DiscoverDelete", `{"DiscoveryType":1,"DiscoveryData":{}}`, `{}`},
		{"/NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"n","EndpointID":"e","Options":{}}`, `{}`},
		{"/NetworkDriver.RevokeExternalConnectivity", `{"NetworkID":"n","EndpointID":"e"}`, `{}`},
	} {
		wantJSON(t, tc.path, post(t, h, tc.path, tc.body), tc.want)
	}
}

func TestGlobalScopeCallsRefused(t *testing.T) {
	_, h := newTestHandler()
	for _, path := range []string{"/NetworkDriver.AllocateNetwork", "/NetworkDriver.FreeNetwork"} {
		r := post(t, h, path, `{"NetworkID":"n"}`)
		if r.status == http.StatusOK || !strings.Contains(asString(r.body["Err"]), "global") {
			t.Errorf("%s: got %d %s, want an Err about global scope", path, r.status, r.raw)
		}
	}
}

func asString(v any) string { s, _ := v.(string); return s }

// A CreateNetwork body as engine 20.10 sends it for
// docker network create -d meshnet --ipam-driver meshnet --subnet 10.42.0.0/16 --aux-address a=10.42.0.3 -o dataplane=vxlan --internal app
const createNetworkBody = `{
  "NetworkID": "4d2fd1b6e4a6",
  "Options": {
    "com.docker.network.enable_ipv6": false,
    "com.docker.network.internal": true,
    "com.docker.network.generic": {"dataplane": "vxlan", "com.docker.network.driver.mtu": "1400", "n": 7}
  },
  "IPv4Data": [{"AddressSpace": "meshnet-local", "Pool": "10.42.0.0/16", "Gateway": "10.42.0.1/16",
                "AuxAddresses": {"a": "10.42.0.3/16"}}],
  "IPv6Data": []
}`

func TestCreateNetworkFlattensOptions(t *testing.T) {
	b, h := newTestHandler()
	wantJSON(t, "CreateNetwork", post(t, h, "/NetworkDriver.CreateNetwork", createNetworkBody), `{}`)
	want := CreateNetworkRequest{
		NetworkID:  "4d2fd1b6e4a6",
		Options:    map[string]string{"dataplane": "vxlan", "com.docker.network.driver.mtu": "1400", "n": "7"},
		Internal:   true,
		EnableIPv6: false,
		IPv4Data: []IPAMData{{
			AddressSpace: "meshnet-local",
			Pool:         netip.MustParsePrefix("10.42.0.0/16"),
			Gateway:      netip.MustParsePrefix("10.42.0.1/16"),
			AuxAddresses: map[string]netip.Prefix{"a": netip.MustParsePrefix("10.42.0.3/16")},
		}},
	}
	if !reflect.DeepEqual(b.gotNetwork, want) {
		t.Errorf("backend got\n%+v\nwant\n%+v", b.gotNetwork, want)
	}
}

func TestCreateEndpointSendsOnlyNewFields(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	for _, tc := range []struct {
		name    string
		request string
		backend EndpointInterface
		want    string
	}{
		{
			name:    "address set by engine, backend echoes it and adds a MAC",
			request: `{"Address":"10.42.0.5/16"}`,
			backend: EndpointInterface{Address: netip.MustParsePrefix("10.42.0.5/16"), MacAddress: mac("02:42:0a:2a:00:05")},
			want:    `{"Interface":{"MacAddress":"02:42:0a:2a:00:05"}}`,
		},
		{
			name:    "engine set everything, backend returns everything",
			request: `{"Address":"10.42.0.5/16","AddressIPv6":"fd00::5/64","MacAddress":"02:42:0a:2a:00:05"}`,
			backend: EndpointInterface{
				Address:     netip.MustParsePrefix("10.42.0.6/16"),
				AddressIPv6: netip.MustParsePrefix("fd00::6/64"),
				MacAddress:  mac("02:42:0a:2a:00:06"),
			},
			want: `{"Interface":null}`,
		},
		{
			name:    "empty request, backend fills the address",
			request: `{}`,
			backend: EndpointInterface{Address: netip.MustParsePrefix("10.42.0.9/16")},
			want:    `{"Interface":{"Address":"10.42.0.9/16"}}`,
		},
		{
			name:    "backend fills nothing",
			request: `{"Address":"10.42.0.5/16"}`,
			want:    `{"Interface":null}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, h := newTestHandler()
			b.endpointReply = tc.backend
			body := `{"NetworkID":"n1","EndpointID":"e1","Interface":` + tc.request + `,"Options":{"com.docker.network.endpoint.exposedports":[]}}`
			wantJSON(t, tc.name, post(t, h, "/NetworkDriver.CreateEndpoint", body), tc.want)
			if b.gotEndpoint.NetworkID != "n1" || b.gotEndpoint.EndpointID != "e1" || b.gotEndpoint.Options == nil {
				t.Errorf("backend got %+v", b.gotEndpoint)
			}
		})
	}
}

func TestCreateEndpointParsesInterface(t *testing.T) {
	b, h := newTestHandler()
	post(t, h, "/NetworkDriver.CreateEndpoint",
		`{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.42.0.5/16","MacAddress":"02:42:0a:2a:00:05"}}`)
	got := b.gotEndpoint.Interface
	if got.Address != netip.MustParsePrefix("10.42.0.5/16") || got.MacAddress.String() != "02:42:0a:2a:00:05" || got.AddressIPv6.IsValid() {
		t.Errorf("backend got interface %+v", got)
	}
}

func TestJoinReply(t *testing.T) {
	b, h := newTestHandler()
	b.joinReply = JoinResponse{
		InterfaceName: InterfaceName{SrcName: "mnv1234", DstPrefix: "eth"},
		Gateway:       netip.MustParseAddr("10.42.0.1"),
		StaticRoutes: []StaticRoute{
			{Destination: netip.MustParsePrefix("169.254.53.53/32"), RouteType: RouteNextHop, NextHop: netip.MustParseAddr("10.42.0.1")},
			{Destination: netip.MustParsePrefix("10.43.0.0/16"), RouteType: RouteConnected},
		},
		DisableGatewayService: true,
	}
	r := post(t, h, "/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/var/run/docker/netns/abc","Options":{}}`)
	wantJSON(t, "Join", r, `{
		"InterfaceName": {"SrcName": "mnv1234", "DstPrefix": "eth"},
		"Gateway": "10.42.0.1",
		"StaticRoutes": [
			{"Destination": "169.254.53.53/32", "RouteType": 0, "NextHop": "10.42.0.1"},
			{"Destination": "10.43.0.0/16", "RouteType": 1}
		],
		"DisableGatewayService": true
	}`)
	if b.gotJoin.SandboxKey != "/var/run/docker/netns/abc" {
		t.Errorf("backend got %+v", b.gotJoin)
	}
}

func TestJoinReplyValidated(t *testing.T) {
	for name, resp := range map[string]JoinResponse{
		"no interface name":   {},
		"route without a hop": {InterfaceName: InterfaceName{SrcName: "v"}, StaticRoutes: []StaticRoute{{Destination: netip.MustParsePrefix("10.0.0.0/8")}}},
	} {
		b, h := newTestHandler()
		b.joinReply = resp
		r := post(t, h, "/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1"}`)
		if r.status != http.StatusInternalServerError || asString(r.body["Err"]) == "" {
			t.Errorf("%s: got %d %s, want 500 with Err", name, r.status, r.raw)
		}
	}
}

func TestEndpointIDCalls(t *testing.T) {
	b, h := newTestHandler()
	b.infoReply = map[string]any{"veth": "mnv1234"}
	for _, tc := range []struct{ path, call, want string }{
		{"/NetworkDriver.EndpointOperInfo", "EndpointInfo", `{"Value":{"veth":"mnv1234"}}`},
		{"/NetworkDriver.DeleteEndpoint", "DeleteEndpoint", `{}`},
		{"/NetworkDriver.Leave", "Leave", `{}`},
	} {
		wantJSON(t, tc.path, post(t, h, tc.path, `{"NetworkID":"n1","EndpointID":"e1"}`), tc.want)
		if b.lastCall() != tc.call || !reflect.DeepEqual(b.gotIDs, []string{"n1", "e1"}) {
			t.Errorf("%s: backend call %s%v", tc.path, b.lastCall(), b.gotIDs)
		}
	}
	b.infoReply = nil
	wantJSON(t, "EndpointOperInfo nil", post(t, h, "/NetworkDriver.EndpointOperInfo", `{"NetworkID":"n1","EndpointID":"e1"}`), `{"Value":{}}`)
	wantJSON(t, "DeleteNetwork", post(t, h, "/NetworkDriver.DeleteNetwork", `{"NetworkID":"n1"}`), `{}`)
	if b.lastCall() != "DeleteNetwork" || !reflect.DeepEqual(b.gotIDs, []string{"n1"}) {
		t.Errorf("DeleteNetwork: backend call %s%v", b.lastCall(), b.gotIDs)
	}
}

func TestIPAMCalls(t *testing.T) {
	b, h := newTestHandler()
	b.poolReply = PoolResponse{
		PoolID: "meshnet/10.42.0.0/16",
		Pool:   netip.MustParsePrefix("10.42.0.0/16"),
		Data:   map[string]string{PoolDataGateway: "10.42.0.1/16"},
	}
	r := post(t, h, "/IpamDriver.RequestPool",
		`{"AddressSpace":"meshnet-local","Pool":"10.42.0.0/16","SubPool":"10.42.1.0/24","Options":{"k":"v"},"V6":false}`)
	wantJSON(t, "RequestPool", r, `{"PoolID":"meshnet/10.42.0.0/16","Pool":"10.42.0.0/16","Data":{"com.docker.network.gateway":"10.42.0.1/16"}}`)
	wantPool := PoolRequest{AddressSpace: "meshnet-local", Pool: netip.MustParsePrefix("10.42.0.0/16"),
		SubPool: netip.MustParsePrefix("10.42.1.0/24"), Options: map[string]string{"k": "v"}}
	if !reflect.DeepEqual(b.gotPool, wantPool) {
		t.Errorf("RequestPool: backend got %+v", b.gotPool)
	}

	r = post(t, h, "/IpamDriver.RequestAddress",
		`{"PoolID":"p","Address":"10.42.0.1","Options":{"RequestAddressType":"com.docker.network.gateway"}}`)
	wantJSON(t, "RequestAddress", r, `{"Address":"10.42.0.5/16","Data":null}`)
	if !b.gotAddress.IsGateway() || b.gotAddress.Address != netip.MustParseAddr("10.42.0.1") || b.gotAddress.PoolID != "p" {
		t.Errorf("RequestAddress: backend got %+v", b.gotAddress)
	}
	post(t, h, "/IpamDriver.RequestAddress", `{"PoolID":"p","Address":"","Options":null}`)
	if b.gotAddress.IsGateway() || b.gotAddress.Address.IsValid() {
		t.Errorf("RequestAddress for any address: backend got %+v", b.gotAddress)
	}

	wantJSON(t, "ReleaseAddress", post(t, h, "/IpamDriver.ReleaseAddress", `{"PoolID":"p","Address":"10.42.0.5"}`), `{}`)
	if !reflect.DeepEqual(b.gotIDs, []string{"p", "10.42.0.5"}) {
		t.Errorf("ReleaseAddress: backend got %v", b.gotIDs)
	}
	wantJSON(t, "ReleasePool", post(t, h, "/IpamDriver.ReleasePool", `{"PoolID":"p"}`), `{}`)
	if b.lastCall() != "ReleasePool" || !reflect.DeepEqual(b.gotIDs, []string{"p"}) {
		t.Errorf("ReleasePool: backend call %s%v", b.lastCall(), b.gotIDs)
	}
}

// Every backend-facing call, with a body that decodes, for the error tests.
var backendCalls = []struct{ path, body string }{
	{"/NetworkDriver.CreateNetwork", createNetworkBody},
	{"/NetworkDriver.DeleteNetwork", `{"NetworkID":"n1"}`},
	{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.42.0.5/16"}}`},
	{"/NetworkDriver.EndpointOperInfo", `{"NetworkID":"n1","EndpointID":"e1"}`},
	{"/NetworkDriver.DeleteEndpoint", `{"NetworkID":"n1","EndpointID":"e1"}`},
	{"/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/k"}`},
	{"/NetworkDriver.Leave", `{"NetworkID":"n1","EndpointID":"e1"}`},
	{"/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"10.42.0.0/16"}`},
	{"/IpamDriver.ReleasePool", `{"PoolID":"p"}`},
	{"/IpamDriver.RequestAddress", `{"PoolID":"p"}`},
	{"/IpamDriver.ReleaseAddress", `{"PoolID":"p","Address":"10.42.0.5"}`},
}

// checkErrorField asserts the error reply of path carries msg in the field its driver type reads:
// "Err" for the network driver, "Error" for IPAM (a 200 IPAM reply without "Error" is success
// to the engine).
func checkErrorField(t *testing.T, path string, r reply, status int, msg string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d (%s)", path, r.status, status, r.raw)
	}
	field := "Err"
	if strings.HasPrefix(path, "/IpamDriver.") {
		field = "Error"
	} else if _, ok := r.body["Error"]; ok {
		t.Errorf("%s: network reply carries Error: %s", path, r.raw)
	}
	if got := asString(r.body[field]); !strings.Contains(got, msg) {
		t.Errorf("%s: %s = %q, want it to contain %q (reply %s)", path, field, got, msg, r.raw)
	}
	if asString(r.body["Err"]) == "" {
		// The engine's plugin client reads Err from any non-200 reply.
		t.Errorf("%s: non-200 reply without Err: %s", path, r.raw)
	}
}

func TestBackendErrorsUseTheRightField(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
	}{
		{"internal", errors.New("store unavailable"), http.StatusInternalServerError},
		{"bad request", BadRequest("subnet %s overlaps network %q", "10.42.0.0/16", "other"), http.StatusBadRequest},
		{"wrapped bad request", errors.Join(errors.New("ctx"), BadRequest("no --subnet given")), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, h := newTestHandler()
			b.err = tc.err
			for _, c := range backendCalls {
				checkErrorField(t, c.path, post(t, h, c.path, c.body), tc.status, tc.err.Error())
			}
		})
	}
}

func TestMalformedRequests(t *testing.T) {
	_, h := newTestHandler()
	for _, c := range backendCalls {
		for _, body := range []string{`{"NetworkID":`, `[1,2]`, `"x"`, `{"NetworkID":"n1"} trailing`} {
			checkErrorField(t, c.path, post(t, h, c.path, body), http.StatusBadRequest, "decoding request")
		}
	}
	for _, tc := range []struct{ path, body, msg string }{
		{"/NetworkDriver.CreateNetwork", `{"Options":{}}`, "NetworkID"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"n","Options":{"com.docker.network.generic":"x"}}`, "com.docker.network.generic"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"n","Options":{"com.docker.network.internal":7}}`, "com.docker.network.internal"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"n","IPv4Data":[{"Pool":"10.42.0.0/33"}]}`, "IPv4Data[0].Pool"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"n","IPv4Data":[null]}`, "IPv4Data[0]"},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.42.0.5"}}`, "Interface.Address"},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"n","EndpointID":"e","Interface":{"MacAddress":"zz"}}`, "Interface.MacAddress"},
		{"/NetworkDriver.Join", `{"NetworkID":"n"}`, "EndpointID"},
		{"/NetworkDriver.Leave", `{}`, "NetworkID"},
		{"/IpamDriver.RequestPool", `{"Pool":"banana"}`, "Pool"},
		{"/IpamDriver.RequestAddress", `{"PoolID":"p","Address":"10.42.0.5/16"}`, "Address"},
		{"/IpamDriver.ReleaseAddress", `{"PoolID":"p"}`, "Address"},
		{"/IpamDriver.ReleasePool", `{}`, "PoolID"},
	} {
		checkErrorField(t, tc.path, post(t, h, tc.path, tc.body), http.StatusBadRequest, tc.msg)
	}
}

func TestBackendRepliesValidated(t *testing.T) {
	b, h := newTestHandler()
	b.poolReply = PoolResponse{PoolID: "p"}
	checkErrorField(t, "/IpamDriver.RequestPool", post(t, h, "/IpamDriver.RequestPool", `{}`), http.StatusInternalServerError, "pool")
	b.addressReply = AddressResponse{}
	checkErrorField(t, "/IpamDriver.RequestAddress", post(t, h, "/IpamDriver.RequestAddress", `{"PoolID":"p"}`), http.StatusInternalServerError, "no address")
	b.infoReply = map[string]any{"c": make(chan int)}
	checkErrorField(t, "/NetworkDriver.EndpointOperInfo", post(t, h, "/NetworkDriver.EndpointOperInfo", `{"NetworkID":"n","EndpointID":"e"}`), http.StatusInternalServerError, "encoding reply")
}

func TestOversizedBody(t *testing.T) {
	_, h := newTestHandler()
	big := `{"NetworkID":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	for _, path := range []string{"/NetworkDriver.CreateNetwork", "/IpamDriver.RequestPool"} {
		checkErrorField(t, path, post(t, h, path, big), http.StatusRequestEntityTooLarge, "too large")
	}
}

func TestUnknownPathAndMethod(t *testing.T) {
	_, h := newTestHandler()
	checkErrorField(t, "/NetworkDriver.Frobnicate", post(t, h, "/NetworkDriver.Frobnicate", `{}`), http.StatusNotFound, "does not implement")
	checkErrorField(t, "/IpamDriver.GetPoolInfo", post(t, h, "/IpamDriver.GetPoolInfo", `{}`), http.StatusNotFound, "does not implement")
	checkErrorField(t, "/", post(t, h, "/", ``), http.StatusNotFound, "does not implement")

	req := httptest.NewRequest(http.MethodGet, "/Plugin.Activate", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest || !json.Valid(rec.Body.Bytes()) {
		t.Errorf("GET: got %d %q, want 400 with JSON", rec.Code, rec.Body.String())
	}
}

func TestBackendPanicIsAnErrorReply(t *testing.T) {
	b := newFakeBackend()
	logs := &recordingLog{}
	h := NewHandler(b, b, slog.New(logs))
	b.panicMsg = "boom"
	for _, c := range backendCalls {
		checkErrorField(t, c.path, post(t, h, c.path, c.body), http.StatusInternalServerError, "boom")
	}
	if got := logs.count("plugin call panicked"); got != len(backendCalls) {
		t.Errorf("logged %d panics, want %d", got, len(backendCalls))
	}
	b.panicMsg = nil
	wantJSON(t, "Leave after panics", post(t, h, "/NetworkDriver.Leave", `{"NetworkID":"n1","EndpointID":"e1"}`), `{}`)
}

func TestNilBackends(t *testing.T) {
	h := NewHandler(nil, nil, nil)
	for _, c := range backendCalls {
		checkErrorField(t, c.path, post(t, h, c.path, c.body), http.StatusInternalServerError, "serves no")
	}
	wantJSON(t, "Activate", post(t, h, "/Plugin.Activate", ""), `{"Implements":["NetworkDriver","IpamDriver"]}`)
}
