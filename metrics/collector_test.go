package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/dns"
)

// testState is a daemon's state as a scrape would read it: three peers,
// one dead; endpoints on two nodes; one pool; a WireGuard peer.
func testState(t *testing.T) State {
	counts := new(dns.Counts)
	srv := dns.NewServer(dns.Config{Domain: "meshnet", Counts: counts, Upstreams: []string{}}, nil)
	w := &nullWriter{}
	for _, q := range []uint16{mdns.TypeA, mdns.TypeA, mdns.TypeSRV} {
		m := new(mdns.Msg)
		m.SetQuestion("nothing.meshnet.", q)
		srv.ServeDNS(w, m)
	}
	hs := time.Unix(1_700_000_000, 0)
	return State{
		Status: control.Status{
			Node: "h1", Version: "v1.2.3", Networks: 1,
			Dataplane: control.DataplaneInfo{LastApply: time.Unix(1_700_000_100, 500_000_000), Applies: 4, BridgeBypassOn: true,
				BridgeBypassFrames: &control.BypassFrames{ToOtherHosts: 12, ToContainers: 34},
				WireGuard: &control.WireGuardInfo{Peers: []control.WireGuardPeer{
					{Node: "h2", LastHandshake: hs, RxBytes: 1000, TxBytes: 2000},
					{PublicKey: "k3=", RxBytes: 0, TxBytes: 148},
				}}},
			IPAM: []control.PoolUsage{{Subnet: "10.42.0.0/24", Nodes: []control.NodeUsage{
				{Node: "h1", Blocks: 1, Owned: 64, Allocated: 3},
				{Node: "h2", Blocks: 2, Owned: 128, Allocated: 1},
			}}},
			Conflicts: []control.Conflict{{Subnet: "10.42.0.0/24", Addr: "10.42.0.9", Nodes: []string{"h1", "h2"}}},
			Problems:  []string{"1 addresses are held by more than one node"},
		},
		Peers: []control.Peer{
			{Name: "h1", State: "alive", Self: true},
			{Name: "h2", State: "alive", DataPath: "down", Tunnels: []control.TunnelPath{
				{Tunnel: "vxlan", State: "up", RTTSeconds: 0.0004}, {Tunnel: "wireguard", State: "down"}}},
			{Name: "h3", State: "dead", DataPath: "unknown", Tunnels: []control.TunnelPath{{Tunnel: "vxlan", State: "unknown"}}},
		},
		Endpoints:  []control.Endpoint{{Node: "h1"}, {Node: "h1"}, {Node: "h2"}},
		Records:    map[string]int{"node": 3, "endpoint": 3, "network": 2, "block": 3},
		Pools:      []Pool{{Subnet: "10.42.0.0/24", Size: 256}},
		FDBEntries: 1, NeighborEntries: 1, DNSListening: true,
		DNS: map[string]*dns.Counts{"host": counts},
	}
}

type nullWriter struct{ mdns.ResponseWriter }

func (nullWriter) WriteMsg(*mdns.Msg) error    { return nil }
func (nullWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nullWriter) RemoteAddr() net.Addr        { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353} }

func TestCollectorReadsState(t *testing.T) {
	st := testState(t)
	c := collector{src: func() State { return st }}
	want := `
# HELP meshnet_peers Nodes of the cluster as this daemon sees them, itself included, by gossip state (alive, suspect, dead, left).
# TYPE meshnet_peers gauge
meshnet_peers{state="alive"} 2
meshnet_peers{state="dead"} 1
meshnet_peers{state="left"} 0
meshnet_peers{state="suspect"} 0
# HELP meshnet_peer_up 1 while a node carries traffic (gossip alive or suspect; this node always), else 0.
# TYPE meshnet_peer_up gauge
meshnet_peer_up{peer="h1"} 1
meshnet_peer_up{peer="h2"} 1
meshnet_peer_up{peer="h3"} 0
# HELP meshnet_peer_data_path_up 1 while the data-path probe through a tunnel (vxlan, wireguard) to a peer is answered, 0 when it is not (not exported while unknown or not probed).
# TYPE meshnet_peer_data_path_up gauge
meshnet_peer_data_path_up{peer="h2",tunnel="vxlan"} 1
meshnet_peer_data_path_up{peer="h2",tunnel="wireguard"} 0
# HELP meshnet_peer_data_path_rtt_seconds Round trip of the last answered data-path probe to a peer through a tunnel (exported while that data path is up).
# TYPE meshnet_peer_data_path_rtt_seconds gauge
meshnet_peer_data_path_rtt_seconds{peer="h2",tunnel="vxlan"} 0.0004
# HELP meshnet_endpoints Container endpoints known cluster-wide, by the node holding them (meshctl endpoints).
# TYPE meshnet_endpoints gauge
meshnet_endpoints{node="h1"} 2
meshnet_endpoints{node="h2"} 1
# HELP meshnet_ipam_allocated_addresses Addresses a node has handed out, per subnet (exact for this node; for others as they last published).
# TYPE meshnet_ipam_allocated_addresses gauge
meshnet_ipam_allocated_addresses{node="h1",subnet="10.42.0.0/24"} 3
meshnet_ipam_allocated_addresses{node="h2",subnet="10.42.0.0/24"} 1
# HELP meshnet_ipam_free_addresses Addresses of a subnet no node has handed out (size minus every node's allocated).
# TYPE meshnet_ipam_free_addresses gauge
meshnet_ipam_free_addresses{subnet="10.42.0.0/24"} 252
# HELP meshnet_ipam_conflicts Addresses held by more than one node (should be 0; meshctl status lists them).
# TYPE meshnet_ipam_conflicts gauge
meshnet_ipam_conflicts 1
# HELP meshnet_dns_responses_total DNS replies by server (host: the DNS address; container: the servers in containers' namespaces), query type and rcode.
# TYPE meshnet_dns_responses_total counter
meshnet_dns_responses_total{rcode="NXDOMAIN",server="host",type="A"} 2
meshnet_dns_responses_total{rcode="NXDOMAIN",server="host",type="SRV"} 1
# HELP meshnet_wireguard_peer_last_handshake_timestamp_seconds Last WireGuard handshake with a peer (Unix time; 0: never). Its age: time() - this.
# TYPE meshnet_wireguard_peer_last_handshake_timestamp_seconds gauge
meshnet_wireguard_peer_last_handshake_timestamp_seconds{peer="h2"} 1.7e+09
meshnet_wireguard_peer_last_handshake_timestamp_seconds{peer="k3="} 0
# HELP meshnet_wireguard_peer_transmit_bytes_total Bytes sent to a WireGuard peer since its device started.
# TYPE meshnet_wireguard_peer_transmit_bytes_total counter
meshnet_wireguard_peer_transmit_bytes_total{peer="h2"} 2000
meshnet_wireguard_peer_transmit_bytes_total{peer="k3="} 148
# HELP meshnet_dataplane_last_apply_timestamp_seconds When the last dataplane apply finished (Unix time); 0 before the first.
# TYPE meshnet_dataplane_last_apply_timestamp_seconds gauge
meshnet_dataplane_last_apply_timestamp_seconds 1.7000001005e+09
# HELP meshnet_problems Problems meshctl status lists (it exits 1 when this is not 0).
# TYPE meshnet_problems gauge
meshnet_problems 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"meshnet_peers", "meshnet_peer_up", "meshnet_peer_data_path_up", "meshnet_peer_data_path_rtt_seconds", "meshnet_endpoints", "meshnet_ipam_allocated_addresses",
		"meshnet_ipam_free_addresses", "meshnet_ipam_conflicts", "meshnet_dns_responses_total",
		"meshnet_wireguard_peer_last_handshake_timestamp_seconds", "meshnet_wireguard_peer_transmit_bytes_total",
		"meshnet_dataplane_last_apply_timestamp_seconds", "meshnet_problems"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(registryOf(c)); err != nil || n == 0 {
		t.Fatalf("gather: %d metrics, %v", n, err)
	}
}

func registryOf(cs ...prometheus.Collector) *prometheus.Registry {
	r := prometheus.NewPedanticRegistry()
	r.MustRegister(cs...)
	return r
}

// A scrape of /metrics, with events and gossip traffic counted, passes
// `promtool check metrics` (names, units, _total on counters, help) and
// /healthz and /readyz answer as the daemon's readiness says.
func TestScrapePassesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		// Not a skip: CI installs it (scripts/install-deps.sh), and a check
		// that silently does not run is worse than none.
		t.Fatal("promtool not found: install Debian's prometheus package (apt-get install prometheus; scripts/install-deps.sh does)")
	}
	st := testState(t)
	var notReady []string
	m := New(func() State { return st }, func(context.Context) []string { return notReady })
	m.Events().Applied(3*time.Millisecond, nil)
	m.Events().Applied(40*time.Millisecond, errors.New("boom"))
	sink.incr([]string{"memberlist", "udp", "sent"}, 120)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	body := get(t, srv.URL+"/metrics", http.StatusOK)
	for _, want := range []string{
		"meshnet_dataplane_applies_total 2", "meshnet_dataplane_apply_errors_total 1",
		`meshnet_dataplane_apply_duration_seconds_bucket{le="0.005"} 1`,
		`meshnet_gossip_packets_total{direction="sent"}`, `meshnet_build_info{node="h1",version="v1.2.3"} 1`,
		"go_goroutines", "process_open_fds", "meshnet_dns_up 1", "meshnet_dataplane_bridge_bypass 1",
		`meshnet_dataplane_bridge_bypass_frames_total{to="other_host"} 12`, `meshnet_dataplane_bridge_bypass_frames_total{to="container"} 34`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}

	if got := get(t, srv.URL+"/healthz", http.StatusOK); !strings.Contains(got, "ok") {
		t.Errorf("/healthz: %q", got)
	}
	get(t, srv.URL+"/readyz", http.StatusOK)
	notReady = []string{"plugin socket not answering"}
	if got := get(t, srv.URL+"/readyz", http.StatusServiceUnavailable); !strings.Contains(got, "plugin socket") {
		t.Errorf("/readyz does not say what is not ready: %q", got)
	}
}

func get(t *testing.T, url string, code int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, code, b)
	}
	return string(b)
}
