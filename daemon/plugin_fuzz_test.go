package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
)

// nopDataplane applies nothing: the fuzz target checks what the daemon
// records, not the kernel.
type nopDataplane struct{}

func (nopDataplane) Apply(context.Context, dataplane.State) error { return nil }
func (nopDataplane) Close() error                                 { return nil }
func (nopDataplane) PublicKey() string                            { return "" }
func (nopDataplane) WireGuardStatus() (dataplane.WireGuardStatus, bool) {
	return dataplane.WireGuardStatus{}, false
}

// panicLog counts "panicked" records: the plugin handler recovers a
// backend panic into a 500 and logs it.
type panicLog struct {
	mu sync.Mutex
	n  int
}

func (p *panicLog) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panicked") {
		p.mu.Lock()
		p.n++
		p.mu.Unlock()
	}
	return nil
}
func (p *panicLog) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicLog) WithGroup(string) slog.Handler      { return p }

var daemonFuzzPaths = []string{
	"/NetworkDriver.CreateNetwork", "/NetworkDriver.DeleteNetwork", "/NetworkDriver.CreateEndpoint",
	"/NetworkDriver.EndpointOperInfo", "/NetworkDriver.DeleteEndpoint", "/NetworkDriver.Join",
	"/NetworkDriver.Leave", "/IpamDriver.RequestPool", "/IpamDriver.ReleasePool",
	"/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
	"/NetworkDriver.ProgramExternalConnectivity", "/NetworkDriver.RevokeExternalConnectivity",
}

// FuzzPluginDaemon posts arbitrary bodies to the daemon's own plugin
// backends (real store and IPAM, no kernel), after a valid network and
// endpoint exist. Nothing may panic, and whatever the daemon records for
// this node must make sense: networks with an IPv4 subnet holding their
// gateway, endpoints inside their network.
// Run it for real with: go test ./daemon/ -run XXX -fuzz FuzzPluginDaemon
func FuzzPluginDaemon(f *testing.F) {
	f.Add(uint8(0), []byte(`{"NetworkID":"n2","Options":{"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"meshnet-local","Gateway":"10.50.0.1/24"}]}`))
	f.Add(uint8(0), []byte(`{"NetworkID":"n2","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"fd00::/64","Gateway":"fd00::1/64"}]}`))
	f.Add(uint8(0), []byte(`{"NetworkID":"n2","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.60.0.0/24","Gateway":"10.61.0.1/24"}]}`))
	f.Add(uint8(0), []byte(`{"NetworkID":"n2","Options":{"com.docker.network.generic":{"mtu":"1","vni":"1"}},"IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.60.0.0/24","Gateway":"10.60.0.1/24"}]}`))
	f.Add(uint8(2), []byte(`{"NetworkID":"net1","EndpointID":"ep2","Interface":{"Address":"10.42.0.9/24"}}`))
	f.Add(uint8(2), []byte(`{"NetworkID":"net1","EndpointID":"ep2","Interface":{"Address":"10.99.0.9/24"}}`))
	f.Add(uint8(2), []byte(`{"NetworkID":"net1","EndpointID":"`+strings.Repeat("e", 300)+`","Interface":{"Address":"10.42.0.9/24"}}`))
	f.Add(uint8(7), []byte(`{"AddressSpace":"meshnet-local","Pool":"0.0.0.0/0"}`))
	f.Add(uint8(9), []byte(`{"PoolID":"10.42.0.0/24","Address":"10.42.0.200"}`))
	f.Add(uint8(10), []byte(`{"PoolID":"10.42.0.0/24","Address":"10.42.0.1"}`))
	f.Add(uint8(1), []byte(`{"NetworkID":"net1"}`))
	f.Add(uint8(11), []byte(`{"NetworkID":"net1","EndpointID":"ep1","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostIP":"127.0.0.1"}]}}`))
	f.Add(uint8(11), []byte(`{"NetworkID":"net1","EndpointID":"ep1","Options":{"com.docker.network.portmap":[{"Proto":17,"Port":80,"HostIP":"127.0.0.1","HostPort":1}]}}`))
	f.Add(uint8(12), []byte(`{"NetworkID":"net1","EndpointID":"ep1"}`))
	f.Fuzz(func(t *testing.T, pathIdx uint8, body []byte) {
		plog := &panicLog{}
		log := slog.New(plog)
		d, h := testDaemon(t, log, true)
		call := func(path, body string) int {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s: reply is not JSON: %q", path, rec.Body.String())
			}
			return rec.Code
		}
		// A network with an endpoint, as the engine makes them.
		for _, c := range [][2]string{
			{"/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"10.42.0.0/24"}`},
			{"/IpamDriver.RequestAddress", `{"PoolID":"10.42.0.0/24","Options":{"RequestAddressType":"com.docker.network.gateway"}}`},
			{"/NetworkDriver.CreateNetwork", `{"NetworkID":"net1","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"10.42.0.0/24","Gateway":"10.42.0.1/24"}]}`},
			{"/IpamDriver.RequestAddress", `{"PoolID":"10.42.0.0/24"}`},
			{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"net1","EndpointID":"ep1","Interface":{"Address":"10.42.0.2/24"}}`},
		} {
			if code := call(c[0], c[1]); code != http.StatusOK {
				t.Fatalf("setup %s: %d", c[0], code)
			}
		}
		path := daemonFuzzPaths[int(pathIdx)%len(daemonFuzzPaths)]
		code := call(path, string(bytes.ToValidUTF8(body, nil)))
		if plog.n > 0 {
			t.Fatalf("%s %q: a backend panicked", path, body)
		}
		snap := d.store.Snapshot()
		nets := networks(snap)
		if len(nets) != len(snap.Records(gossip.KindNetwork)) {
			t.Fatalf("%s %q (%d): recorded a network that does not parse", path, body, code)
		}
		for _, n := range nets {
			if !n.subnet.Addr().Is4() || n.subnet != n.subnet.Masked() || !n.subnet.Contains(n.gateway) {
				t.Fatalf("%s %q (%d): recorded network %s with gateway %s", path, body, code, n.subnet, n.gateway)
			}
		}
		eps := endpoints(snap, false)
		if len(eps) != len(snap.Records(gossip.KindEndpoint)) {
			t.Fatalf("%s %q (%d): recorded an endpoint that does not parse", path, body, code)
		}
		for _, e := range eps {
			if !e.subnet.Contains(e.addr) {
				t.Fatalf("%s %q (%d): endpoint %s at %s outside its subnet %s", path, body, code, e.id, e.addr, e.subnet)
			}
		}
	})
}
