package daemon

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/plugin"
)

// The routing mesh (issue 16): a service's port published on every host
// that has the service's network, balanced over its healthy replicas
// anywhere, the client's address kept (dataplane/mesh.go does the kernel
// part).
//
// # What is published, and why a label
//
// A replica carries meshnet.publish=80:8080/tcp (host port 80 to the
// replica's 8080; "80" alone is 80:80/tcp; several comma-separated), and
// optionally meshnet.publish-prefer=local (any replica asking is enough). A
// label rather than compose's ports:, because ports: is a per-container
// publication the engine checks per host: two replicas on one host would
// both claim the host port and the second would fail to start. The label
// is the service's, carried in each replica's endpoint record
// (EndpointInfo.MeshPublish), so every host computes the same table from
// the same records.
//
// # Who wins a port
//
// One protocol and host port publish one target: every replica that
// publishes it with the same network and target port is a backend. Two
// services asking for one port (on different networks or target ports)
// cannot both have it: the lowest (subnet, target port) wins everywhere,
// deterministically, and the others are listed as problems by meshctl
// status. A replica that publishes a port its host's meshnet does not
// publish (a wireguard or internal network, IPv6) is a problem too.

// labelPublish is the replicas' routing-mesh label; labelPublishPrefer
// =local keeps what enters at a host with replicas on those replicas
// (no second hop; a host without any spreads over all).
const (
	labelPublish       = "meshnet.publish"
	labelPublishPrefer = "meshnet.publish-prefer"
)

// preferLocal reads meshnet.publish-prefer: "local", or anything else for
// none (spread over every replica, the default: even load).
func preferLocal(labels map[string]string) bool {
	return strings.EqualFold(strings.TrimSpace(labels[labelPublishPrefer]), "local")
}

// meshPublish is one port of the label.
type meshPublish struct {
	proto      string
	hostPort   uint16
	targetPort uint16
}

// String is the canonical form records carry: "80:8080/tcp".
func (m meshPublish) String() string {
	return fmt.Sprintf("%d:%d/%s", m.hostPort, m.targetPort, m.proto)
}

// parsePublishLabel reads HOST[:TARGET][/PROTO] entries, comma-separated;
// protocol tcp (default) or udp.
func parsePublishLabel(label string) ([]meshPublish, error) {
	var out []meshPublish
	for _, f := range strings.Split(label, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		m, err := parseOnePublish(f)
		if err != nil {
			return nil, fmt.Errorf("label %s=%q: %w (want HOSTPORT[:TARGETPORT][/tcp|udp], comma-separated, e.g. 80:8080/tcp)", labelPublish, label, err)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b meshPublish) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.hostPort, b.hostPort))
	})
	return slices.Compact(out), nil
}

func parseOnePublish(s string) (meshPublish, error) {
	ports, proto, _ := strings.Cut(s, "/")
	m := meshPublish{proto: strings.ToLower(strings.TrimSpace(proto))}
	if m.proto == "" {
		m.proto = "tcp"
	}
	if m.proto != "tcp" && m.proto != "udp" {
		return meshPublish{}, fmt.Errorf("protocol %q", proto)
	}
	host, target, hasTarget := strings.Cut(ports, ":")
	hp, err := parsePort(host)
	if err != nil {
		return meshPublish{}, err
	}
	tp := hp
	if hasTarget {
		if tp, err = parsePort(target); err != nil {
			return meshPublish{}, err
		}
	}
	m.hostPort, m.targetPort = hp, tp
	return m, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not 1-65535", s)
	}
	return uint16(n), nil
}

// meshPublishStrings is the label as records carry it (nil: none, or an
// invalid label, whose error is returned).
func meshPublishStrings(labels map[string]string) ([]string, error) {
	label, ok := labels[labelPublish]
	if !ok {
		return nil, nil
	}
	ms, err := parsePublishLabel(label)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.String())
	}
	return out, nil
}

// meshKey is one published port: what wins it and what it leads to.
type meshKey struct {
	proto    string
	hostPort uint16
}

type meshTarget struct {
	subnet     netip.Prefix
	targetPort uint16
}

type meshGroup struct {
	target      meshTarget
	services    map[string]bool
	backends    []netip.Addr
	preferLocal bool // any replica asks
}

// meshTable is the cluster's routing mesh as every host computes it from
// the endpoint records of up nodes: each published port's winning target
// with its healthy replicas, and the conflicts lost.
type meshTable struct {
	ports    map[meshKey]*meshGroup
	problems []string
}

// buildMeshTable reads every endpoint record: healthy replicas on up nodes
// are backends; an unhealthy one still claims its port (a service whose
// replicas all stopped keeps its port, answering with nothing, rather than
// letting another take it).
func buildMeshTable(eps []gossip.Endpoint) meshTable {
	groups := map[meshKey]map[meshTarget]*meshGroup{}
	for _, e := range eps {
		for _, s := range e.Info.MeshPublish {
			m, err := parseOnePublish(s)
			if err != nil {
				continue // written by a newer or broken writer: nothing to do with it here
			}
			k := meshKey{m.proto, m.hostPort}
			tg := meshTarget{e.Subnet.Masked(), m.targetPort}
			if groups[k] == nil {
				groups[k] = map[meshTarget]*meshGroup{}
			}
			g := groups[k][tg]
			if g == nil {
				g = &meshGroup{target: tg, services: map[string]bool{}}
				groups[k][tg] = g
			}
			name := e.Info.Container
			if len(e.Info.Services) > 0 {
				name = e.Info.Services[0]
			}
			g.services[name] = true
			g.preferLocal = g.preferLocal || e.Info.MeshPreferLocal
			if e.Up && e.Info.Healthy && e.Addr.IsValid() {
				g.backends = append(g.backends, e.Addr)
			}
		}
	}
	t := meshTable{ports: map[meshKey]*meshGroup{}}
	keys := make([]meshKey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b meshKey) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.hostPort, b.hostPort))
	})
	for _, k := range keys {
		var tgs []meshTarget
		for tg := range groups[k] {
			tgs = append(tgs, tg)
		}
		slices.SortFunc(tgs, func(a, b meshTarget) int {
			return cmp.Or(a.subnet.Addr().Compare(b.subnet.Addr()), cmp.Compare(a.subnet.Bits(), b.subnet.Bits()), cmp.Compare(a.targetPort, b.targetPort))
		})
		win := groups[k][tgs[0]]
		slices.SortFunc(win.backends, netip.Addr.Compare)
		win.backends = slices.Compact(win.backends)
		t.ports[k] = win
		for _, tg := range tgs[1:] {
			lost := groups[k][tg]
			t.problems = append(t.problems, fmt.Sprintf("routing mesh: %s/%d is published by %s (%v port %d) and by %s (%v port %d); the first has it",
				k.proto, k.hostPort, names(win.services), win.target.subnet, win.target.targetPort,
				names(lost.services), lost.target.subnet, lost.target.targetPort))
		}
	}
	return t
}

func names(set map[string]bool) string {
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// desiredMeshPorts is what this host publishes: every winning port whose
// network this host has as a vxlan network (the return path is the VXLAN
// probe device), over the port's healthy replicas.
func desiredMeshPorts(t meshTable, nets []dataplane.Network) []dataplane.MeshPort {
	vni := map[netip.Prefix]uint32{}
	for _, n := range nets {
		if isVXLAN(n.Kind) && !n.Internal {
			vni[n.Subnet.Masked()] = n.VNI
		}
	}
	var out []dataplane.MeshPort
	for k, g := range t.ports {
		v, ok := vni[g.target.subnet]
		if !ok || len(g.backends) == 0 {
			continue
		}
		out = append(out, dataplane.MeshPort{Service: names(g.services), Proto: k.proto, HostPort: k.hostPort,
			TargetPort: g.target.targetPort, VNI: v, Backends: slices.Clone(g.backends), PreferLocal: g.preferLocal})
	}
	slices.SortFunc(out, func(a, b dataplane.MeshPort) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.HostPort, b.HostPort))
	})
	return out
}

// meshHeld are the host ports this node holds with sockets for the mesh
// ports it publishes (no host process may take them: its connections
// would never be seen, the DNAT comes first).
func meshHeld(ms []dataplane.MeshPort) []published {
	var out []published
	for _, m := range ms {
		out = append(out, published{proto: m.Proto, hostPort: m.HostPort, port: m.TargetPort})
	}
	return out
}

// meshProblems: ports lost to another service, this host's containers
// whose label does not parse, and a reverse-path filter that would drop
// the mesh's replies arriving here.
func (d *Daemon) meshProblems(snap *gossip.Snapshot) []string {
	t := buildMeshTable(snap.View().Endpoints)
	out := slices.Clone(t.problems)
	out = append(out, d.labelErrs.list()...)
	if len(t.ports) > 0 {
		if v, err := readSysctl("net/ipv4/conf/all/rp_filter"); err == nil && v != "0" {
			out = append(out, fmt.Sprintf("routing mesh: net.ipv4.conf.all.rp_filter is %s: what other hosts send this host's replicas over mnprobe, and the replies to connections entering here, are dropped (set it to 0; each interface's own rp_filter still applies)", v))
		}
	}
	return out
}

// labelErrors are this host's running containers whose meshnet.publish
// label does not parse, by container name (from the last containers pass).
type labelErrors struct {
	sync.Mutex
	byName map[string]string
}

func (l *labelErrors) list() []string {
	l.Lock()
	defer l.Unlock()
	out := make([]string, 0, len(l.byName))
	for name, msg := range l.byName {
		out = append(out, fmt.Sprintf("container %s publishes nothing through the routing mesh: %s", name, msg))
	}
	slices.Sort(out)
	return out
}

// noteLabelErrors records (and logs once) the containers whose label is
// invalid.
func (d *Daemon) noteLabelErrors(cs []plugin.ContainerInfo) {
	errs := map[string]string{}
	for _, c := range cs {
		if _, err := meshPublishStrings(c.Labels); err != nil {
			errs[c.Name] = err.Error()
		}
	}
	d.labelErrs.Lock()
	defer d.labelErrs.Unlock()
	for name, msg := range errs {
		if d.labelErrs.byName[name] != msg {
			d.log.Warn("invalid routing-mesh label: the container publishes nothing", "container", name, "err", msg)
		}
	}
	d.labelErrs.byName = errs
}

// readSysctl reads a value under /proc/sys (path with slashes).
func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", path))
	return strings.TrimSpace(string(b)), err
}

// meshProbeHosts are the underlay addresses of the nodes whose record says
// they take routing-mesh connections over the probe device; a node of an
// older meshnetd gets them bridged into the overlay, as it expects.
func meshProbeHosts(snap *gossip.Snapshot) []netip.Addr {
	var out []netip.Addr
	for _, n := range snap.View().Nodes {
		if n.Info.Has(gossip.FeatureMeshProbe) {
			out = append(out, n.Addr.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
