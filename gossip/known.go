package gossip

import (
	"net"
	"sort"
	"strconv"
)

// KnownPeer is a node this one has known, by name and gossip address
// (host:port). The daemon keeps the list on disk so that a restarted node
// can find its cluster again without seeds.
type KnownPeer struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// KnownPeers lists the nodes of snap's KindNode records other than self
// that publish a gossip address, sorted by name. Removed nodes are not in
// the snapshot, so they are not listed.
func KnownPeers(snap *Snapshot, self string) []KnownPeer {
	var out []KnownPeer
	for name, n := range snap.View().Nodes {
		if name == self || n.Info.GossipPort == 0 {
			continue
		}
		out = append(out, KnownPeer{Name: name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(n.Info.GossipPort))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
