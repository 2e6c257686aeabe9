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

// newProbe makes the probe of this node's VXLAN data path.
func newProbe(d *Daemon) *dataplane.Probe {
	return dataplane.NewProbe(dataplane.ProbeConfig{Underlay: d.advertise, Port: d.cfg.VXLANPort, Log: d.log})
}

// probePeers are the nodes this host exchanges VXLAN traffic with: every
// node, whatever memberlist says of it, that holds a vxlan network of a
// subnet this host has as vxlan too, except nodes that left or were
// removed (their entries go whatever the data path says).
func probePeers(snap *gossip.Snapshot) []dataplane.ProbePeer {
	mine := map[netip.Prefix]bool{}
	nets := snap.View().Networks
	for _, n := range nets {
		if n.Owner == snap.Self && isVXLAN(n.Info.Dataplane) {
			mine[n.Subnet] = true
		}
	}
	addrs := nodeAddrs(snap)
	seen := map[string]bool{}
	var out []dataplane.ProbePeer
	for _, n := range nets {
		if n.Owner == snap.Self || seen[n.Owner] || !mine[n.Subnet] || !isVXLAN(n.Info.Dataplane) {
			continue
		}
		if m, ok := snap.Members[n.Owner]; ok && m.State == gossip.StateLeft {
			continue
		}
		if _, removed := snap.Removed[n.Owner]; removed {
			continue
		}
		a, ok := addrs[n.Owner]
		if !ok {
			continue
		}
		seen[n.Owner] = true
		out = append(out, dataplane.ProbePeer{Name: n.Owner, Underlay: a})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func isVXLAN(kind string) bool { return kind == "" || kind == dataplane.KindVXLAN }

// dataPathView is snap as the VXLAN dataplane should see it: a node that
// memberlist has declared dead but whose data path still answers the probe
// counts as up (suspect), so its endpoints, forwarding entries and its place
// in the tunnel guard's member set stay. Its daemon is gone (stopped,
// crashed, upgrading); its kernel still carries its containers' traffic.
// A node that left, or whose probe has failed too (the host is gone), is
// left as memberlist has it and withdrawn.
func dataPathView(snap *gossip.Snapshot, probes map[string]dataplane.ProbeStatus) *gossip.Snapshot {
	var kept []string
	for name, m := range snap.Members {
		if m.State == gossip.StateDead && probes[name].State == dataplane.ProbeUp {
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

// syncProbe hands the probe its peers; the device exists only while this
// host has a vxlan network (then the tunnel guard protects its port too).
// Called before Apply to remove it, after Apply to make it.
func (d *Daemon) syncProbe(enabled bool, snap *gossip.Snapshot, hold bool) {
	var err error
	if enabled {
		err = d.probe.Sync(true, probePeers(snap), hold)
	} else {
		err = d.probe.Sync(false, nil, hold)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	d.probeErr.Lock()
	defer d.probeErr.Unlock()
	if msg != d.probeErr.msg && err != nil {
		d.log.Warn("data-path probe", "err", err)
	}
	d.probeErr.msg = msg
}

// hasVXLAN reports whether st has a vxlan network.
func hasVXLAN(st dataplane.State) bool {
	for _, n := range st.Networks {
		if isVXLAN(n.Kind) {
			return true
		}
	}
	return false
}

// addDataPath fills each peer's data-path fields from the probe.
func (d *Daemon) addDataPath(peers []control.Peer) {
	probes := d.probe.Status()
	for i := range peers {
		s, ok := probes[peers[i].Name]
		if !ok || peers[i].Self {
			continue
		}
		peers[i].DataPath = string(s.State)
		peers[i].DataPathSince = s.Since
		if s.State == dataplane.ProbeUp {
			peers[i].RTTSeconds = s.RTT.Seconds()
		}
	}
}

// dataPathProblems: a peer gossip has up whose data path does not answer
// (the VXLAN port blocked between the hosts, typically). A dead peer is no
// new problem: it shows as dead.
func (d *Daemon) dataPathProblems(snap *gossip.Snapshot) []string {
	var out []string
	probes := d.probe.Status()
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
		out = append(out, fmt.Sprintf("data path to %s down for %s while gossip reaches it: check that UDP %d (VXLAN) is open between the hosts",
			name, time.Since(s.Since).Round(time.Second), d.cfg.VXLANPort))
	}
	if d.probeErr.get() != "" {
		out = append(out, "data-path probe: "+firstLine(d.probeErr.get()))
	}
	return out
}

// probeError is the last error of the probe's kernel sync.
type probeError struct {
	sync.Mutex
	msg string
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
