package bench

import (
	"fmt"
	"net/netip"
	"runtime"

	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
)

// MemoryFigures is the heap a node holds for a cluster's endpoints.
type MemoryFigures struct {
	Endpoints      int     `json:"endpoints"`
	Hosts          int     `json:"hosts"`
	HeapBytes      uint64  `json:"heap_bytes"`
	KiBPer1000     float64 `json:"kib_per_1000_endpoints"`
	StoreOnlyKiB   float64 `json:"store_kib_per_1000_endpoints"`
	DNSTableKiB    float64 `json:"dns_table_kib_per_1000_endpoints"`
	RecordBytesAvg float64 `json:"record_value_bytes_avg"`
}

// MeasureMemory fills one node's store with endpoints records from hosts peers, as gossip
// would (Merge), takes the snapshot the reconciler reads and builds the DNS table the server
// answers from, and reports the live heap per 1,000 endpoints after garbage collection: what
// each container in the cluster costs every host's meshnetd.
func MeasureMemory(endpoints, hosts int) (MemoryFigures, error) {
	f := MemoryFigures{Endpoints: endpoints, Hosts: hosts}
	recs := make([]gossip.Record, 0, endpoints)
	var valueBytes int
	for i := 0; i < endpoints; i++ {
		owner := fmt.Sprintf("host%03d", i%hosts)
		ip := netip.AddrFrom4([4]byte{10, 42, byte(i >> 8), byte(i)})
		st, err := gossip.NewStore(gossip.StoreConfig{Self: owner}).Put(gossip.KindEndpoint,
			fmt.Sprintf("%064x", i), gossip.EndpointInfo{
				Subnet: "10.42.0.0/16", Addr: ip.String(), MAC: fmt.Sprintf("02:42:0a:2a:%02x:%02x", byte(i>>8), byte(i)),
				Container: fmt.Sprintf("app-%d", i), Network: "app", Services: []string{fmt.Sprintf("svc%d", i%100)}, Healthy: true,
			})
		if err != nil {
			return f, fmt.Errorf("making endpoint record %d: %w", i, err)
		}
		valueBytes += len(st.Value)
		recs = append(recs, st)
	}
	f.RecordBytesAvg = float64(valueBytes) / float64(endpoints)
	// The records arrive as gossip delivers them, encoded; decoding happens after the base
	// reading, so everything the store keeps of them is counted.
	wire, err := gossip.EncodeState(recs)
	if err != nil {
		return f, fmt.Errorf("encoding %d endpoint records: %w", endpoints, err)
	}
	recs = nil
	base := liveHeap()
	decoded, err := gossip.DecodeState(wire)
	if err != nil {
		return f, fmt.Errorf("decoding %d endpoint records: %w", endpoints, err)
	}
	store := gossip.NewStore(gossip.StoreConfig{Self: "self"})
	if _, err := store.Merge(decoded); err != nil {
		return f, fmt.Errorf("merging %d endpoint records: %w", endpoints, err)
	}
	decoded = nil
	snap := store.Snapshot()
	// The daemon reads every snapshot through its typed view, decoded once and kept with the
	// snapshot: part of the record store's cost, not of the DNS table built from it.
	view := snap.View()
	afterStore := liveHeap()
	entries := make([]dns.Entry, 0, endpoints)
	for _, e := range view.Endpoints {
		entries = append(entries, dns.Entry{Container: e.Info.Container, Services: e.Info.Services, Network: e.Info.Network, Addr: e.Addr, Node: e.Owner})
	}
	table := dns.NewTable("meshnet", entries)
	entries = nil
	after := liveHeap()
	runtime.KeepAlive(store)
	runtime.KeepAlive(snap)
	runtime.KeepAlive(table)
	// Differences of two heap readings; a collection in between can make one negative.
	diff := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	per := func(b uint64) float64 { return float64(b) / 1024 / (float64(endpoints) / 1000) }
	f.HeapBytes = diff(after, base)
	f.KiBPer1000 = per(diff(after, base))
	f.StoreOnlyKiB = per(diff(afterStore, base))
	f.DNSTableKiB = per(diff(after, afterStore))
	return f, nil
}

func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// MemoryRow reports the heap per 1,000 endpoints.
func MemoryRow(f MemoryFigures, err error) Row {
	if err != nil {
		return Alone("control plane", "memory per 1,000 endpoints", "KiB", Lower, Unavailable(err), nil, nil)
	}
	r := Alone("control plane", "memory per 1,000 endpoints (store + snapshot + DNS table)", "KiB", Lower, Val(f.KiBPer1000), nil, nil)
	r.Note = fmt.Sprintf("%d endpoints from %d hosts: store and snapshot (its decoded view included) %.0f KiB, DNS table %.0f KiB per 1,000; %.0f-byte JSON values",
		f.Endpoints, f.Hosts, f.StoreOnlyKiB, f.DNSTableKiB, f.RecordBytesAvg)
	return r
}
