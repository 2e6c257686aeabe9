package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// collector turns one State, read at scrape time, into metrics.
type collector struct {
	src Source
}

var _ prometheus.Collector = collector{}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	peersDesc        = desc("meshnet_peers", "Nodes of the cluster as this daemon sees them, itself included, by gossip state (alive, suspect, dead, left).", "state")
	peerDataPathDesc = desc("meshnet_peer_data_path_up", "1 while the data-path probe through a tunnel (vxlan, wireguard) to a peer is answered, 0 when it is not (not exported while unknown or not probed).", "peer", "tunnel")
	peerRTTDesc      = desc("meshnet_peer_data_path_rtt_seconds", "Round trip of the last answered data-path probe to a peer through a tunnel (exported while that data path is up).", "peer", "tunnel")
	peerUpDesc       = desc("meshnet_peer_up", "1 while a node carries traffic (gossip alive or suspect; this node always), else 0.", "peer")
	recordsDesc      = desc("meshnet_store_records", "Live records in the replicated store, by kind (node, network, block, endpoint, removal).", "kind")
	endpointsDesc    = desc("meshnet_endpoints", "Container endpoints known cluster-wide, by the node holding them (meshctl endpoints).", "node")
	networksDesc     = desc("meshnet_networks", "meshnet networks this node has (docker network create on this host).")

	lastApplyDesc    = desc("meshnet_dataplane_last_apply_timestamp_seconds", "When the last dataplane apply finished (Unix time); 0 before the first.")
	lastApplyOKDesc  = desc("meshnet_dataplane_last_apply_success", "1 when the last dataplane apply did everything, 0 when it left errors (meshctl status shows them).")
	fdbDesc          = desc("meshnet_dataplane_fdb_entries", "VXLAN forwarding (FDB) entries the last apply programmed: one per remote container on a VXLAN network.")
	neighDesc        = desc("meshnet_dataplane_neighbor_entries", "Neighbour (ARP) entries the last apply programmed: one per remote container on a VXLAN network.")
	bypassFramesDesc = desc("meshnet_dataplane_bridge_bypass_frames_total", "Frames the bridge bypass handed past the host's bridge since meshnetd started: to another host's container (to=\"other_host\") or into a container on this host (to=\"container\").", "to")
	bypassDesc       = desc("meshnet_dataplane_bridge_bypass", "1 while traffic between containers of a network is handed past the host's bridge (--bridge-bypass; auto turns it off while the host filters forwarded traffic of its own, meshctl status says why), else 0.")

	ownedDesc     = desc("meshnet_ipam_owned_addresses", "Addresses in the address blocks a node owns, per subnet.", "subnet", "node")
	allocatedDesc = desc("meshnet_ipam_allocated_addresses", "Addresses a node has handed out, per subnet (exact for this node; for others as they last published).", "subnet", "node")
	sizeDesc      = desc("meshnet_ipam_size_addresses", "Addresses in a subnet's blocks.", "subnet")
	freeDesc      = desc("meshnet_ipam_free_addresses", "Addresses of a subnet no node has handed out (size minus every node's allocated).", "subnet")
	conflictsDesc = desc("meshnet_ipam_conflicts", "Addresses held by more than one node (should be 0; meshctl status lists them).")

	dnsRepliesDesc     = desc("meshnet_dns_responses_total", "DNS replies by server (host: the DNS address; container: the servers in containers' namespaces), query type and rcode.", "server", "type", "rcode")
	dnsRateLimitedDesc = desc("meshnet_dns_rate_limited_total", "DNS queries over the per-source rate limit (--dns-rate-limit): answered truncated over UDP (dropped past twice the rate), refused over TCP.", "server")
	dnsForwardDesc     = desc("meshnet_dns_forward_duration_seconds", "How long forwarding a query to an upstream resolver took, failures (timeouts) included.", "server")
	dnsUpDesc          = desc("meshnet_dns_up", "1 while the DNS server listens on the DNS address, else 0.")

	wgHandshakeDesc = desc("meshnet_wireguard_peer_last_handshake_timestamp_seconds", "Last WireGuard handshake with a peer (Unix time; 0: never). Its age: time() - this.", "peer")
	wgRxDesc        = desc("meshnet_wireguard_peer_receive_bytes_total", "Bytes received from a WireGuard peer since its device started.", "peer")
	wgTxDesc        = desc("meshnet_wireguard_peer_transmit_bytes_total", "Bytes sent to a WireGuard peer since its device started.", "peer")

	problemsDesc = desc("meshnet_problems", "Problems meshctl status lists (it exits 1 when this is not 0).")
	infoDesc     = desc("meshnet_build_info", "Always 1: the daemon's version and node name.", "version", "node")
)

var allDescs = []*prometheus.Desc{
	peersDesc, peerUpDesc, peerDataPathDesc, peerRTTDesc, recordsDesc, endpointsDesc, networksDesc,
	lastApplyDesc, lastApplyOKDesc, fdbDesc, neighDesc, bypassDesc, bypassFramesDesc,
	ownedDesc, allocatedDesc, sizeDesc, freeDesc, conflictsDesc,
	dnsRepliesDesc, dnsRateLimitedDesc, dnsForwardDesc, dnsUpDesc,
	wgHandshakeDesc, wgRxDesc, wgTxDesc, problemsDesc, infoDesc,
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	s := st.Status
	gauge(infoDesc, 1, s.Version, s.Node)

	// Every state is exported, 0 included, so that a query for dead peers
	// finds a series rather than nothing.
	byState := map[string]int{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	for _, p := range st.Peers {
		byState[p.State]++
		up := 0.0
		if p.Self || p.State == "alive" || p.State == "suspect" {
			up = 1
		}
		gauge(peerUpDesc, up, p.Name)
		for _, t := range p.Tunnels {
			if t.State != "up" && t.State != "down" {
				continue
			}
			dp := 0.0
			if t.State == "up" {
				dp = 1
				gauge(peerRTTDesc, t.RTTSeconds, p.Name, t.Tunnel)
			}
			gauge(peerDataPathDesc, dp, p.Name, t.Tunnel)
		}
	}
	for _, state := range sortedKeys(byState) {
		gauge(peersDesc, float64(byState[state]), state)
	}
	for _, kind := range sortedKeys(st.Records) {
		gauge(recordsDesc, float64(st.Records[kind]), kind)
	}
	byNode := map[string]int{}
	for _, e := range st.Endpoints {
		byNode[e.Node]++
	}
	for _, n := range sortedKeys(byNode) {
		gauge(endpointsDesc, float64(byNode[n]), n)
	}
	gauge(networksDesc, float64(s.Networks))

	last := 0.0
	if !s.Dataplane.LastApply.IsZero() {
		last = float64(s.Dataplane.LastApply.UnixNano()) / 1e9
	}
	gauge(lastApplyDesc, last)
	ok := 1.0
	if s.Dataplane.LastError != "" {
		ok = 0
	}
	gauge(lastApplyOKDesc, ok)
	gauge(fdbDesc, float64(st.FDBEntries))
	gauge(neighDesc, float64(st.NeighborEntries))
	bypass := 0.0
	if s.Dataplane.BridgeBypassOn {
		bypass = 1
	}
	gauge(bypassDesc, bypass)
	if f := s.Dataplane.BridgeBypassFrames; f != nil {
		counter(bypassFramesDesc, float64(f.ToOtherHosts), "other_host")
		counter(bypassFramesDesc, float64(f.ToContainers), "container")
	}

	allocated := map[string]uint64{}
	for _, p := range s.IPAM {
		for _, n := range p.Nodes {
			gauge(ownedDesc, float64(n.Owned), p.Subnet, n.Node)
			gauge(allocatedDesc, float64(n.Allocated), p.Subnet, n.Node)
			allocated[p.Subnet] += uint64(n.Allocated)
		}
	}
	for _, p := range st.Pools {
		gauge(sizeDesc, float64(p.Size), p.Subnet)
		free := uint64(0)
		if a := allocated[p.Subnet]; a < p.Size {
			free = p.Size - a
		}
		gauge(freeDesc, float64(free), p.Subnet)
	}
	gauge(conflictsDesc, float64(len(s.Conflicts)))

	for _, server := range sortedKeys(st.DNS) {
		counts := st.DNS[server]
		if counts == nil {
			continue
		}
		for _, r := range counts.Replies() {
			counter(dnsRepliesDesc, float64(r.N), server, r.Type, r.Rcode)
		}
		counter(dnsRateLimitedDesc, float64(counts.RateLimited()), server)
		h := counts.Forwards()
		buckets := make(map[float64]uint64, len(h.Bounds))
		for i, b := range h.Bounds {
			buckets[b] = h.Cumulative[i]
		}
		ch <- prometheus.MustNewConstHistogram(dnsForwardDesc, h.Count, h.Sum, buckets, server)
	}
	dnsUp := 0.0
	if st.DNSListening {
		dnsUp = 1
	}
	gauge(dnsUpDesc, dnsUp)

	if wg := s.Dataplane.WireGuard; wg != nil {
		for _, p := range wg.Peers {
			peer := p.Node
			if peer == "" {
				peer = p.PublicKey
			}
			hs := 0.0
			if !p.LastHandshake.IsZero() {
				hs = float64(p.LastHandshake.UnixNano()) / 1e9
			}
			gauge(wgHandshakeDesc, hs, peer)
			counter(wgRxDesc, float64(p.RxBytes), peer)
			counter(wgTxDesc, float64(p.TxBytes), peer)
		}
	}
	gauge(problemsDesc, float64(len(s.Problems)))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
