package gossip

import "sync"

// View is a Snapshot's records decoded into typed values, once per
// snapshot (Snapshot.View), for every reader: the daemon's desired
// dataplane and WireGuard state, the DNS table, the leak sweep, the
// containers path, the control API (meshctl) and ipam's endpoint index.
// It is immutable: readers must not modify it or what it points to.
//
// A record that does not parse (decode.go) is left out and counted in
// Rejected by reason. Merge refuses such records from peers already, so
// what lands here is a node's own record written by a version with other
// rules, or a store file from such a version.
type View struct {
	// Nodes by name.
	Nodes map[string]Node
	// Networks in record order (owner, then subnet).
	Networks []Network
	// Endpoints of every node, up or not (Endpoint.Up), in record order.
	Endpoints []Endpoint
	// Rejected counts the records left out, by kind and reason.
	Rejected map[string]int
}

type lazyView struct {
	once sync.Once
	v    *View
}

// View returns the snapshot's records decoded; the first call decodes,
// later ones share the result.
func (s *Snapshot) View() *View {
	s.view.once.Do(func() { s.view.v = newView(s) })
	return s.view.v
}

func newView(s *Snapshot) *View {
	v := &View{Nodes: make(map[string]Node), Rejected: make(map[string]int)}
	reject := func(kind Kind, err error) { v.Rejected[string(kind)+": "+err.Error()]++ }
	for _, r := range s.Records(KindNode) {
		n, err := ParseNode(r)
		if err != nil {
			reject(r.Kind, err)
			continue
		}
		v.Nodes[r.Owner] = n
	}
	for _, r := range s.Records(KindNetwork) {
		n, err := ParseNetwork(r)
		if err != nil {
			reject(r.Kind, err)
			continue
		}
		v.Networks = append(v.Networks, n)
	}
	for _, r := range s.Records(KindEndpoint) {
		e, err := ParseEndpoint(r)
		if err != nil {
			reject(r.Kind, err)
			continue
		}
		e.Up = s.Up(r.Owner)
		v.Endpoints = append(v.Endpoints, e)
	}
	return v
}
