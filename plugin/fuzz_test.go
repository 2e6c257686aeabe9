package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// fuzzPaths are the calls FuzzHandler posts to: every route and a few that do not exist.
var fuzzPaths = []string{
	"/Plugin.Activate",
	"/NetworkDriver.GetCapabilities", "/NetworkDriver.CreateNetwork", "/NetworkDriver.DeleteNetwork",
	"/NetworkDriver.CreateEndpoint", "/NetworkDriver.EndpointOperInfo", "/NetworkDriver.DeleteEndpoint",
	"/NetworkDriver.Join", "/NetworkDriver.Leave", "/NetworkDriver.DiscoverNew", "/NetworkDriver.DiscoverDelete",
	"/NetworkDriver.ProgramExternalConnectivity", "/NetworkDriver.RevokeExternalConnectivity",
	"/NetworkDriver.AllocateNetwork", "/NetworkDriver.FreeNetwork",
	"/IpamDriver.GetCapabilities", "/IpamDriver.GetDefaultAddressSpaces", "/IpamDriver.RequestPool",
	"/IpamDriver.ReleasePool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
	"/IpamDriver.GetPoolInfo", "/NetworkDriver.Nope", "/",
}

// fuzzBackend configures a fake backend from one byte: how it fails and what odd replies it gives.
func fuzzBackend(mode uint8) *fakeBackend {
	b := newFakeBackend()
	switch mode % 8 {
	case 1:
		b.err = errors.New("internal trouble")
	case 2:
		b.err = BadRequest("your fault")
	case 3:
		b.panicMsg = "fuzz panic"
	case 4: // replies the handler must refuse
		b.joinReply = JoinResponse{}
		b.poolReply = PoolResponse{}
		b.addressReply = AddressResponse{}
		b.infoReply = map[string]any{"nan": math.NaN()}
	case 5: // a backend that fills every interface field
		b.endpointReply = EndpointInterface{
			Address:     netip.MustParsePrefix("10.42.0.9/16"),
			AddressIPv6: netip.MustParsePrefix("fd00::9/64"),
			MacAddress:  net.HardwareAddr{2, 0x42, 10, 42, 0, 9},
		}
	}
	return b
}

// FuzzHandler posts arbitrary bodies to every call: the handler must never panic (other than a
// backend panic it recovers and logs), and every reply must be JSON with the error field its
// driver type reads.
func FuzzHandler(f *testing.F) {
	for i, c := range backendCalls {
		f.Add(uint8(slices.Index(fuzzPaths, c.path)), uint8(i%8), []byte(c.body))
	}
	f.Add(uint8(0), uint8(0), []byte(nil))
	f.Add(uint8(2), uint8(0), []byte(createNetworkBody))
	f.Add(uint8(4), uint8(5), []byte(`{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.42.0.5/16"}}`))

	f.Fuzz(func(t *testing.T, pathIdx, mode uint8, body []byte) {
		path := fuzzPaths[int(pathIdx)%len(fuzzPaths)]
		b := fuzzBackend(mode)
		logs := &recordingLog{}
		h := NewHandler(b, b, slog.New(logs))

		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))

		if mode%8 != 3 && logs.count("plugin call panicked") > 0 {
			t.Fatalf("%s %q: the handler panicked without a panicking backend", path, body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != ContentType {
			t.Fatalf("%s: Content-Type %q", path, ct)
		}
		var reply map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil {
			t.Fatalf("%s %q: reply %q is not a JSON object: %v", path, body, rec.Body.String(), err)
		}
		errField := "Err"
		if strings.HasPrefix(path, "/IpamDriver.") {
			errField = "Error"
		}
		msg, _ := reply[errField].(string)
		if rec.Code == http.StatusOK && msg != "" {
			t.Fatalf("%s: 200 reply carrying an error: %s", path, rec.Body.String())
		}
		errMsg, _ := reply["Err"].(string) // the engine's plugin client reads Err from any non-200
		if rec.Code != http.StatusOK && (msg == "" || errMsg == "") {
			t.Fatalf("%s: status %d without %s: %s", path, rec.Code, errField, rec.Body.String())
		}
	})
}
