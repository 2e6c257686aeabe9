package daemon

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/plugin"
)

func TestApplyNetworkOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts map[string]string
		want gossip.NetworkInfo // Dataplane, MTU, VNI; the defaults are vxlan, 0, 77
		err  string             // substring of the refusal
	}{
		{name: "none", want: gossip.NetworkInfo{Dataplane: "vxlan", VNI: 77}},
		{name: "meshnet's own", opts: map[string]string{"dataplane": "wireguard", "mtu": "1380", "vni": "4000"},
			want: gossip.NetworkInfo{Dataplane: "wireguard", MTU: 1380, VNI: 4000}},
		// Compose driver_opts copied from a network of Docker's overlay driver.
		{name: "overlay mtu", opts: map[string]string{"com.docker.network.driver.mtu": "1400"},
			want: gossip.NetworkInfo{Dataplane: "vxlan", MTU: 1400, VNI: 77}},
		{name: "both mtus agreeing", opts: map[string]string{"mtu": "1400", "com.docker.network.driver.mtu": "1400"},
			want: gossip.NetworkInfo{Dataplane: "vxlan", MTU: 1400, VNI: 77}},
		{name: "mtus disagreeing", opts: map[string]string{"mtu": "1400", "com.docker.network.driver.mtu": "1300"},
			err: "-o mtu=1400 and -o com.docker.network.driver.mtu=1300 disagree"},
		{name: "overlay mtu out of range", opts: map[string]string{"com.docker.network.driver.mtu": "100"},
			err: "-o com.docker.network.driver.mtu=100: give a number between 576 and 9000"},
		{name: "encrypted, empty", opts: map[string]string{"encrypted": ""},
			want: gossip.NetworkInfo{Dataplane: "wireguard", VNI: 77}},
		{name: "encrypted=true", opts: map[string]string{"encrypted": "true"},
			want: gossip.NetworkInfo{Dataplane: "wireguard", VNI: 77}},
		{name: "encrypted, any value", opts: map[string]string{"encrypted": "yes please"},
			want: gossip.NetworkInfo{Dataplane: "wireguard", VNI: 77}},
		{name: "encrypted with wireguard", opts: map[string]string{"encrypted": "", "dataplane": "wireguard"},
			want: gossip.NetworkInfo{Dataplane: "wireguard", VNI: 77}},
		{name: "encrypted with vxlan", opts: map[string]string{"encrypted": "", "dataplane": "vxlan"},
			err: "-o encrypted with -o dataplane=vxlan: a vxlan network is not encrypted"},
		{name: "bad dataplane", opts: map[string]string{"dataplane": "ipsec"}, err: "choose vxlan or wireguard"},
		{name: "ipv6-egress without IPv6", opts: map[string]string{"ipv6-egress": "routed"}, err: "on a network without IPv6: add --ipv6"},
		{name: "unknown", opts: map[string]string{"com.docker.network.driver.overlay.vxlanid_list": "4097"},
			err: "unknown option -o com.docker.network.driver.overlay.vxlanid_list; meshnet networks take: com.docker.network.driver.mtu (the same as mtu), dataplane"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := gossip.NetworkInfo{Dataplane: "vxlan", VNI: 77}
			err := applyNetworkOptions(&info, tc.opts)
			if tc.err != "" {
				var re *plugin.RequestError
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.As(err, &re) {
					t.Fatalf("error %v; want a request error saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(info, tc.want) {
				t.Errorf("got %+v, want %+v", info, tc.want)
			}
		})
	}
}

// Through the plugin protocol, as compose sends driver_opts: the generic options.
func TestCreateNetworkTakesOverlayDriverOpts(t *testing.T) {
	d, h := testDaemon(t, slog.New(slog.DiscardHandler), false)
	create := func(id, subnet, opts string) (int, string) {
		body := `{"NetworkID":"` + id + `","Options":{"com.docker.network.generic":` + opts + `},` +
			`"IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"` + subnet + `.0/24","Gateway":"` + subnet + `.1/24"}]}`
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/NetworkDriver.CreateNetwork", strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	if code, body := create("n-mtu", "10.42.0", `{"com.docker.network.driver.mtu":"1400"}`); code != http.StatusOK {
		t.Fatalf("create with the overlay's mtu option: %d %s", code, body)
	}
	nets := networks(d.store.Snapshot())
	if len(nets) != 1 || nets[0].info.MTU != 1400 || nets[0].info.Dataplane != "vxlan" {
		t.Fatalf("recorded %+v; want one vxlan network with MTU 1400", nets)
	}
	code, body := create("n-enc", "10.43.0", `{"encrypted":"","dataplane":"vxlan"}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "a vxlan network is not encrypted") {
		t.Fatalf("encrypted with dataplane=vxlan: %d %s; want 400 saying why", code, body)
	}
	if n := len(d.store.Snapshot().Records(gossip.KindNetwork)); n != 1 {
		t.Errorf("%d network records after the refusal, want 1", n)
	}
}
