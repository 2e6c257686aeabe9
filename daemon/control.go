package daemon

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/version"
	"github.com/meshnet/meshnet/ipam"
	"github.com/meshnet/meshnet/sandbox"
)

// controlBackend answers meshctl from the store's current snapshot.
type controlBackend struct{ d *Daemon }

var _ control.Backend = controlBackend{}

func versionString() string { return version.String() }

func (b controlBackend) Version() control.Version {
	return control.Version{Version: version.String(), Go: runtime.Version()}
}

func (b controlBackend) Peers() []control.Peer {
	snap := b.d.store.Snapshot()
	nodes := nodeAddrs(snap)
	var out []control.Peer
	for name, m := range snap.Members {
		addr := m.Addr
		if a, ok := nodes[name]; ok {
			addr = a.String()
		}
		_, removed := snap.Removed[name]
		out = append(out, control.Peer{
			Name: name, Address: addr, State: string(m.State), Since: m.Since,
			Self: name == snap.Self, Removed: removed,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	b.d.addDataPath(out)
	return out
}

func (b controlBackend) Status() control.Status {
	d := b.d
	snap := d.store.Snapshot()
	host, port := d.cluster.LocalAddr()
	st := control.Status{
		Node: d.cfg.NodeName, Version: version.String(), Address: host, GossipPort: port,
		Encrypted: d.encrypted, Started: d.started,
		Dataplane: control.DataplaneInfo{Default: d.cfg.Dataplane},
		DNS:       control.DNSInfo{Addr: d.cfg.DNSAddr, Domain: d.cfg.DNSDomain},
	}
	st.Refused = refusedRecords(d.store.Rejections(), snap.View())
	bypass := dataplane.BypassStatus{Mode: d.cfg.BridgeBypassMode()}
	if w, ok := d.dp.(hostFilterWatcher); ok {
		bypass = w.BypassStatus()
	}
	st.Dataplane.BridgeBypass, st.Dataplane.BridgeBypassOn = bypass.String(), bypass.On
	if bypass.FramesToHosts+bypass.FramesToContainers > 0 || bypass.On {
		st.Dataplane.BridgeBypassFrames = &control.BypassFrames{ToOtherHosts: bypass.FramesToHosts, ToContainers: bypass.FramesToContainers}
	}
	for _, m := range snap.Members {
		switch m.State {
		case gossip.StateAlive:
			st.Members.Alive++
		case gossip.StateSuspect:
			st.Members.Suspect++
		case gossip.StateDead:
			st.Members.Dead++
		case gossip.StateLeft:
			st.Members.Left++
		}
	}
	for _, n := range networks(snap) {
		if n.owner == d.cfg.NodeName {
			st.Networks++
		}
	}
	for _, r := range snap.Records(gossip.KindEndpoint) {
		if r.Owner == d.cfg.NodeName {
			st.LocalEndpoints++
		}
	}
	d.applied.Lock()
	st.Dataplane.LastApply, st.Dataplane.Applies = d.applied.at, d.applied.count
	st.Dataplane.WireGuard = d.wireGuardInfo(snap)
	if d.applied.err != nil {
		st.Dataplane.LastError = d.applied.err.Error()
		st.Problems = append(st.Problems, "dataplane: "+firstLine(d.applied.err.Error()))
	}
	d.applied.Unlock()
	d.dnsErr.Lock()
	if d.dnsErr.err != nil {
		st.DNS.Error = d.dnsErr.err.Error()
	}
	d.dnsErr.Unlock()
	if d.sandboxes != nil {
		st.DNS.Containers = containerDNSInfo(d.sandboxes.Status())
		if n := len(st.DNS.Containers.Failed); n > 0 {
			st.Problems = append(st.Problems, fmt.Sprintf("container DNS: %d containers resolve with Docker's resolver alone (local replicas only): %s", n, st.DNS.Containers.Failed[0]))
		}
		if n := len(st.DNS.Containers.VIPFailed); n > 0 {
			st.Problems = append(st.Problems, fmt.Sprintf("container VIPs: %d containers reach service VIPs through the host's table only: %s", n, st.DNS.Containers.VIPFailed[0]))
		}
	}
	st.Engine = engineInfo(d.watcher.State())
	if p := engineProblem(st.Engine, time.Now()); p != "" {
		st.Problems = append(st.Problems, p)
	}
	ist := d.ipam.Status()
	st.IPAM, st.Conflicts = poolUsage(ist), conflicts(ist)
	if len(st.Conflicts) > 0 {
		st.Problems = append(st.Problems, fmt.Sprintf("%d addresses are held by more than one node", len(st.Conflicts)))
	}
	if j, ok := d.ipam.Joined(); ok {
		st.JoinedCluster = &control.JoinInfo{At: j.At, How: j.How}
	} else {
		st.Problems = append(st.Problems, d.gateProblem())
	}
	st.Problems = append(st.Problems, d.dataPathProblems(snap)...)
	st.Problems = append(st.Problems, d.meshProblems(snap)...)
	st.Problems = append(st.Problems, underlayFamilyProblems(snap)...)
	if st.Members.Alive <= 1 && len(d.cfg.Join) > 0 {
		st.Problems = append(st.Problems, "no peer reached yet: check --join, the key, and that UDP and TCP "+fmt.Sprint(d.cfg.BindPort)+" are open between hosts")
	}
	return st
}

func containerDNSInfo(boxes []sandbox.Status) *control.ContainerDNSInfo {
	info := &control.ContainerDNSInfo{}
	for _, b := range boxes {
		switch {
		case b.Err != nil:
			info.Failed = append(info.Failed, b.Key+": "+b.Err.Error())
		case b.Serving:
			info.Serving++
		default:
			info.Waiting++
		}
		if b.VIPErr != nil {
			info.VIPFailed = append(info.VIPFailed, b.Key+": "+b.VIPErr.Error())
		} else if b.VIPs > 0 {
			info.VIPClients++
		}
	}
	return info
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (b controlBackend) Networks() []control.Network {
	snap := b.d.store.Snapshot()
	bySubnet := map[string]*control.Network{}
	var order []string
	for _, n := range networks(snap) {
		cn, ok := bySubnet[n.info.Subnet]
		if !ok {
			cn = &control.Network{Subnet: n.info.Subnet, Gateway: n.info.Gateway, Subnet6: n.info.Subnet6, Gateway6: n.info.Gateway6,
				VNI: n.info.VNI, Dataplane: n.info.Dataplane, MTU: n.info.MTU, Internal: n.info.Internal}
			bySubnet[n.info.Subnet] = cn
			order = append(order, n.info.Subnet)
		}
		cn.Nodes = append(cn.Nodes, n.owner)
		if n.info.Name != "" && !contains(cn.Names, n.info.Name) {
			cn.Names = append(cn.Names, n.info.Name)
		}
	}
	for _, e := range endpoints(snap, false) {
		if cn, ok := bySubnet[e.subnet.String()]; ok {
			cn.Endpoints++
		}
	}
	by6 := map[string]*control.Network{}
	for _, cn := range bySubnet {
		if cn.Subnet6 != "" {
			by6[cn.Subnet6] = cn
		}
	}
	for _, p := range b.d.ipam.Status().Pools {
		if cn, ok := bySubnet[p.Subnet]; ok {
			cn.Blocks = append(cn.Blocks, blocks(p)...)
		} else if cn, ok := by6[p.Subnet]; ok {
			cn.Blocks = append(cn.Blocks, blocks(p)...)
		}
	}
	sort.Strings(order)
	out := make([]control.Network, 0, len(order))
	for _, s := range order {
		out = append(out, *bySubnet[s])
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (b controlBackend) Endpoints() []control.Endpoint {
	snap := b.d.store.Snapshot()
	nodes := nodeAddrs(snap)
	var out []control.Endpoint
	for _, e := range endpoints(snap, false) {
		out = append(out, control.Endpoint{
			ID: e.id, Container: e.info.Container, Network: e.info.Network, Subnet: e.info.Subnet,
			Addr: e.info.Addr, Addr6: e.info.Addr6, MAC: e.info.MAC, Node: e.owner, NodeAddr: nodes[e.owner].String(),
			Services: e.info.Services, Healthy: e.info.Healthy, Up: snap.Up(e.owner),
			Published: e.info.Published,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Subnet != out[j].Subnet {
			return out[i].Subnet < out[j].Subnet
		}
		return out[i].Addr < out[j].Addr
	})
	return out
}

func (b controlBackend) Services() []control.Service {
	byName := map[string]*control.Service{}
	get := func(name string) *control.Service {
		s := byName[name]
		if s == nil {
			s = &control.Service{Name: name, Mode: modeDNSRR}
			byName[name] = s
		}
		return s
	}
	snap := b.d.store.Snapshot()
	modes := map[string]string{} // endpoint ID → mode
	for _, e := range snap.View().Endpoints {
		modes[e.ID] = e.Info.EndpointMode
	}
	netNames := map[string]string{}
	for _, e := range b.Endpoints() {
		if e.Network != "" {
			netNames[e.Subnet] = e.Network
		}
		for _, s := range e.Services {
			svc := get(s)
			if modes[e.ID] == modeVIP {
				svc.Mode = modeVIP
			}
			if !e.Up || !e.Healthy {
				svc.Unavailable = append(svc.Unavailable, e)
				continue
			}
			svc.Replicas = append(svc.Replicas, e)
		}
	}
	for k, v := range vipWinners(snap) {
		svc := get(k.name)
		svc.VIPs = append(svc.VIPs, control.ServiceVIP{Subnet: k.subnet.String(), Network: netNames[k.subnet.String()],
			Addr: v.addr.String(), Owner: v.owner})
	}
	for k, g := range buildMeshTable(snap.View().Endpoints).ports {
		for name := range g.services {
			svc := get(name)
			svc.Published = append(svc.Published, control.ServicePort{Proto: k.proto, HostPort: int(k.hostPort),
				TargetPort: int(g.target.targetPort), Subnet: g.target.subnet.String(), Network: netNames[g.target.subnet.String()],
				Backends: len(g.backends), PreferLocal: g.preferLocal})
		}
	}
	out := make([]control.Service, 0, len(byName))
	for _, s := range byName {
		sort.Slice(s.Published, func(i, j int) bool {
			return s.Published[i].Proto < s.Published[j].Proto || (s.Published[i].Proto == s.Published[j].Proto && s.Published[i].HostPort < s.Published[j].HostPort)
		})
		sort.Slice(s.VIPs, func(i, j int) bool { return s.VIPs[i].Subnet < s.VIPs[j].Subnet })
		if s.Replicas == nil {
			s.Replicas = []control.Endpoint{}
		}
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (b controlBackend) Lookup(name, qtype string) (control.Lookup, error) {
	if qtype == "" {
		qtype = "A"
	}
	qt, ok := mdns.StringToType[strings.ToUpper(qtype)]
	if !ok {
		return control.Lookup{}, control.UserError{Err: fmt.Errorf("unknown query type %q: use A, AAAA, SRV, PTR", qtype)}
	}
	name = strings.TrimSuffix(name, ".")
	if !strings.Contains(name, ".") {
		name += "." + b.d.cfg.DNSDomain
	}
	snap := b.d.store.Snapshot()
	table := dns.NewTable(b.d.cfg.DNSDomain, withVIPs(snap, dnsEntries(snap)))
	answers, rcode := table.Lookup(name, qt)
	res := control.Lookup{Name: mdns.Fqdn(name), Type: mdns.TypeToString[qt], Rcode: mdns.RcodeToString[rcode]}
	for _, rr := range answers {
		res.Answers = append(res.Answers, rr.String())
	}
	return res, nil
}

// poolUsage turns ipam's view into meshctl status's usage table.
func poolUsage(st ipam.Status) []control.PoolUsage {
	var out []control.PoolUsage
	for _, p := range st.Pools {
		pu := control.PoolUsage{Subnet: p.Subnet, Gateway: p.Gateway}
		for _, u := range p.Usage {
			pu.Nodes = append(pu.Nodes, control.NodeUsage{
				Node: u.Node, Blocks: u.Blocks, Owned: u.Blocks * int(p.BlockSize), Allocated: u.Allocated,
			})
		}
		out = append(out, pu)
	}
	return out
}

func conflicts(st ipam.Status) []control.Conflict {
	var out []control.Conflict
	for _, c := range st.Conflicts {
		out = append(out, control.Conflict{Subnet: c.Subnet, Addr: c.Addr, Nodes: c.Nodes})
	}
	return out
}

// blocks lists a pool's blocks for meshctl networks, as runs of blocks in
// the same hands.
func blocks(p ipam.PoolStatus) []control.Block {
	var out []control.Block
	for _, r := range p.Ranges {
		prefix := r.First
		if r.Blocks > 1 {
			prefix = fmt.Sprintf("%s..%s (%d blocks)", r.First, r.Last, r.Blocks)
		}
		state := string(r.State)
		if r.Contested {
			state += ",contested"
		}
		out = append(out, control.Block{Prefix: prefix, Owner: r.Owner, State: state})
	}
	return out
}
