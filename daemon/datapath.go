package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
)

// This file joins the data-path probe (dataplane/probe.go) to the daemon:
// which peers are probed, what a dead daemon with a live data path keeps,
// and what meshctl hears of it (doc.go, "Gossip state and data-path state").

// dataPathProbe is one tunnel's data-path probe (dataplane/probe.go) with
// what the daemon says of it: the port to name when it is down and its last
// kernel sync error.
type dataPathProbe struct {
	*dataplane.Probe
	port int // the tunnel's UDP port
	err  probeError
}

// newProbes makes the probes of this node's data paths: through VXLAN and
// through WireGuard, each synced only while the host has a network of its
// kind.
func newProbes(d *Daemon, changed chan struct{}) []*dataPathProbe {
	mk := func(tunnel string, port int) *dataPathProbe {
		return &dataPathProbe{Probe: dataplane.NewProbe(dataplane.ProbeConfig{Tunnel: tunnel, Underlay: d.advertise,
			Port: d.cfg.VXLANPort, Log: d.log, Changed: changed}), port: port}
	}
	return []*dataPathProbe{mk(dataplane.KindVXLAN, d.cfg.VXLANPort), mk(dataplane.KindWireGuard, d.cfg.WireGuardPort)}
}

// probeStatus is what the probe through tunnel sees (nil: no such probe,
// as in tests without a kernel).
func (d *Daemon) probeStatus(tunnel string) map[string]dataplane.ProbeStatus {
	for _, p := range d.probes {
		if p.Tunnel() == tunnel {
			return p.Status()
		}
	}
	return nil
}

// setReturnPath tells the VXLAN probe whether its device carries the
// routing mesh's replies (dataplane/mesh.go).
func (d *Daemon) setReturnPath(on bool) {
	for _, p := range d.probes {
		if p.Tunnel() == dataplane.KindVXLAN {
			p.SetReturnPath(on)
		}
	}
}

// probePeers are the nodes this host exchanges traffic with through tunnel
// (KindVXLAN or KindWireGuard): every node, whatever memberlist says of it,
// that holds a network of that kind of a subnet this host has as that kind
// too (and for WireGuard publishes a key), except nodes that left or were
// removed (their entries go whatever the data path says).
func probePeers(snap *gossip.Snapshot, tunnel string) []dataplane.ProbePeer {
	kind := func(k string) bool {
		if tunnel == dataplane.KindWireGuard {
			return k == dataplane.KindWireGuard
		}
		return isVXLAN(k)
	}
	mine := map[netip.Prefix]bool{}
	nets := snap.View().Networks
	for _, n := range nets {
		if n.Owner == snap.Self && kind(n.Info.Dataplane) {
			mine[n.Subnet] = true
		}
	}
	addrs := nodeAddrs(snap)
	wg := wireGuardNodes(snap)
	seen := map[string]bool{}
	var out []dataplane.ProbePeer
	for _, n := range nets {
		if n.Owner == snap.Self || seen[n.Owner] || !mine[n.Subnet] || !kind(n.Info.Dataplane) {
			continue
		}
		if m, ok := snap.Members[n.Owner]; ok && m.State == gossip.StateLeft {
			continue
		}
		if _, removed := snap.Removed[n.Owner]; removed {
			continue
		}
		a, ok := addrs[n.Owner]
		if _, keyed := wg[n.Owner]; !ok || (tunnel == dataplane.KindWireGuard && !keyed) {
			continue
		}
		if self, known := addrs[snap.Self]; tunnel != dataplane.KindWireGuard && known && !sameFamily(a, self) {
			continue // no VXLAN between families: underlayFamilyProblems says so
		}
		seen[n.Owner] = true
		out = append(out, dataplane.ProbePeer{Name: n.Owner, Underlay: a})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func isVXLAN(kind string) bool { return kind == "" || kind == dataplane.KindVXLAN }

// dataPathView is snap as the dataplane should see it: a node that
// memberlist has declared dead but whose data path still answers the probe
// counts as up (suspect), so its endpoints, forwarding entries and its place
// in the tunnel guard's member set stay. Its daemon is gone (stopped,
// crashed, upgrading); its kernel still carries its containers' traffic.
// A node that left, or whose probe has failed too (the host is gone), is
// left as memberlist has it and withdrawn.
//
// A dead node the probe has not yet had a whole timeout to hear from
// (unknown) stays too, until the probe says down: a probe's peers start
// unknown when this daemon starts and when a peer enters its list again,
// and withdrawing on that would cut a host whose kernel carries traffic (a
// restarted daemon hearing, in its first seconds, that another daemon was
// declared dead). A host really gone is withdrawn when its probe goes down,
// one timeout (3 s) after it entered the list: a probe going down triggers
// a reconcile.
func dataPathView(snap *gossip.Snapshot, probes map[string]dataplane.ProbeStatus) *gossip.Snapshot {
	var kept []string
	for name, m := range snap.Members {
		if m.State == gossip.StateDead && keptByProbe(probes[name].State) {
			kept = append(kept, name)
		}
	}
	if len(kept) == 0 {
		return snap
	}
	members := make(map[string]gossip.Member, len(snap.Members))
	for name, m := range snap.Members {
		members[name] = m
	}
	for _, name := range kept {
		m := members[name]
		m.State = gossip.StateSuspect
		members[name] = m
	}
	return snap.WithMembers(members)
}

// keptByProbe: what the probe says of a dead node keeps its entries (up,
// or not known yet); down, or not probed at all (""), does not.
func keptByProbe(s dataplane.ProbeState) bool {
	return s == dataplane.ProbeUp || s == dataplane.ProbeUnknown
}

// anyTunnelUp merges the probes' views: a peer is up when any tunnel to it
// answers (its host is there), else unknown while any tunnel has yet to
// hear from it, else as the first probe has it.
func anyTunnelUp(probes []*dataPathProbe) map[string]dataplane.ProbeStatus {
	statuses := make([]map[string]dataplane.ProbeStatus, 0, len(probes))
	for _, p := range probes {
		statuses = append(statuses, p.Status())
	}
	return mergeProbeStatus(statuses)
}

// mergeProbeStatus is anyTunnelUp's merge, one map per probe.
func mergeProbeStatus(statuses []map[string]dataplane.ProbeStatus) map[string]dataplane.ProbeStatus {
	rank := map[dataplane.ProbeState]int{dataplane.ProbeUp: 2, dataplane.ProbeUnknown: 1}
	out := map[string]dataplane.ProbeStatus{}
	for _, st := range statuses {
		for name, s := range st {
			if cur, ok := out[name]; !ok || rank[s.State] > rank[cur.State] {
				out[name] = s
			}
		}
	}
	return out
}

// syncProbes hands each probe its peers. A probe is enabled only while st
// has a network of its tunnel's kind; it is disabled before Apply (the VXLAN
// probe's device goes before the tunnel guard may) and enabled after it (the
// guard, and the WireGuard device the WireGuard probe uses, exist then).
func (d *Daemon) syncProbes(st dataplane.State, snap *gossip.Snapshot, hold, afterApply bool) {
	for _, p := range d.probes {
		enabled := hasKind(st, p.Tunnel())
		if enabled != afterApply {
			continue
		}
		var err error
		if enabled {
			err = p.Sync(true, probePeers(snap, p.Tunnel()), hold)
		} else {
			err = p.Sync(false, nil, hold)
		}
		if msg := p.err.set(err); msg != "" {
			d.log.Warn("data-path probe", "tunnel", p.Tunnel(), "err", err)
		}
	}
}

// hasKind reports whether st has a network of tunnel's kind.
func hasKind(st dataplane.State, tunnel string) bool {
	for _, n := range st.Networks {
		if isVXLAN(n.Kind) == (tunnel == dataplane.KindVXLAN) {
			return true
		}
	}
	return false
}

// addDataPath fills each peer's data-path fields from the probes.
func (d *Daemon) addDataPath(peers []control.Peer) {
	seen := make([]tunnelStatus, 0, len(d.probes))
	for _, p := range d.probes {
		seen = append(seen, tunnelStatus{tunnel: p.Tunnel(), peers: p.Status()})
	}
	fillDataPath(peers, seen)
}

// tunnelStatus is one probe's view of its peers.
type tunnelStatus struct {
	tunnel string
	peers  map[string]dataplane.ProbeStatus
}

// fillDataPath gives each peer one entry per tunnel probed, and DataPath
// the worst of them (down, then unknown), so that a blocked WireGuard port
// is not hidden by a VXLAN path that works.
func fillDataPath(peers []control.Peer, tunnels []tunnelStatus) {
	rank := map[string]int{"up": 0, "unknown": 1, "down": 2}
	for i := range peers {
		if peers[i].Self {
			continue
		}
		for _, ts := range tunnels {
			s, ok := ts.peers[peers[i].Name]
			if !ok {
				continue
			}
			t := control.TunnelPath{Tunnel: ts.tunnel, State: string(s.State), Since: s.Since}
			if s.State == dataplane.ProbeUp {
				t.RTTSeconds = s.RTT.Seconds()
			}
			if len(peers[i].Tunnels) == 0 || rank[t.State] > rank[peers[i].DataPath] {
				peers[i].DataPath, peers[i].DataPathSince, peers[i].RTTSeconds = t.State, t.Since, t.RTTSeconds
			}
			peers[i].Tunnels = append(peers[i].Tunnels, t)
		}
	}
}

// dataPathProblems: a peer gossip has up whose data path does not answer
// through a tunnel (its port blocked between the hosts, typically). A dead
// peer is no new problem: it shows as dead.
func (d *Daemon) dataPathProblems(snap *gossip.Snapshot) []string {
	var out []string
	for _, p := range d.probes {
		probes := p.Status()
		var names []string
		for name := range probes {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			s := probes[name]
			if s.State != dataplane.ProbeDown || !snap.Up(name) {
				continue
			}
			label := map[string]string{dataplane.KindVXLAN: "VXLAN", dataplane.KindWireGuard: "WireGuard"}[p.Tunnel()]
			what := "data path"
			if p.Tunnel() != dataplane.KindVXLAN {
				what = label + " data path"
			}
			out = append(out, fmt.Sprintf("%s to %s down for %s while gossip reaches it: check that UDP %d (%s) is open between the hosts",
				what, name, time.Since(s.Since).Round(time.Second), p.port, label))
		}
		if msg := p.err.get(); msg != "" {
			out = append(out, p.Tunnel()+" data-path probe: "+firstLine(msg))
		}
	}
	return out
}

// probeError is the last error of a probe's kernel sync.
type probeError struct {
	sync.Mutex
	msg string
}

// set records err and returns its message when it is new (to log once).
func (p *probeError) set(err error) string {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	p.Lock()
	defer p.Unlock()
	changed := msg != p.msg
	p.msg = msg
	if changed {
		return msg
	}
	return ""
}

func (p *probeError) get() string {
	p.Lock()
	defer p.Unlock()
	return p.msg
}

// stopGossip ends gossip as the daemon stops: with --leave-on-stop a
// graceful leave (peers see "left" and withdraw at once), otherwise memberlist
// is shut down without a word, as a crash would, and peers decide by the
// data-path probe (gossip/doc.go, "A dead daemon is not a dead host").
func (d *Daemon) stopGossip(leave context.CancelFunc) {
	if d.cfg.LeaveOnStop {
		d.log.Info("leaving the cluster (--leave-on-stop)")
		leave()
		return
	}
	if err := d.cluster.Close(); err != nil {
		d.log.Warn("closing gossip", "err", err)
	}
}
