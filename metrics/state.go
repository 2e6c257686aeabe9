package metrics

import (
	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/dns"
)

// State is what one scrape reads from the daemon. The daemon builds it from
// the same calls its control API answers meshctl with.
type State struct {
	Status    control.Status
	Peers     []control.Peer
	Endpoints []control.Endpoint
	// Records counts the store's live records by kind.
	Records map[string]int
	// Pools are the address pools with their size, for free addresses.
	Pools []Pool
	// FDBEntries and NeighborEntries are the forwarding and neighbour
	// entries the last apply asked the kernel for (one of each per remote
	// container on a VXLAN network).
	FDBEntries, NeighborEntries int
	// DNSListening: the DNS server listens on the DNS address.
	DNSListening bool
	// DNS are the DNS servers' counts by server ("host": the DNS address;
	// "container": the servers in containers' namespaces).
	DNS map[string]*dns.Counts
}

// Pool is one address pool: its subnet and how many addresses its blocks
// hold.
type Pool struct {
	Subnet string
	Size   uint64
}

// Source returns the state to export; it is called once per scrape and
// must be safe for concurrent use.
type Source func() State
