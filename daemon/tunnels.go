package daemon

import (
	"fmt"
	"log/slog"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
)

// This file wires the tunnels into the daemon: the dataplane with its
// WireGuard half, and the tunnel parts of each desired state.

// newDataplane opens the kernel dataplane: vxlan networks, and wireguard
// networks through a WireGuard device made on demand with the node's key
// (generated once, kept under --state-dir).
func newDataplane(cfg Config, log *slog.Logger) (dataplane.Dataplane, error) {
	key, err := loadWireGuardKey(cfg.StateDir, log)
	if err != nil {
		return nil, err
	}
	dp, err := dataplane.New(log, dataplane.Options{WireGuard: dataplane.WireGuardOptions{PrivateKey: key, Mode: cfg.WireGuardMode}, GuardForwarding: true,
		BridgeBypass: cfg.BridgeBypassMode()})
	if err != nil {
		return nil, fmt.Errorf("start the dataplane: %w", err)
	}
	return dp, nil
}

// tunnelState adds to st what the tunnels need from the snapshot: the
// members allowed to reach the tunnel ports (from view: nodes whose data
// path answers through any tunnel count, datapath.go), and the WireGuard
// peers with the address blocks they own (from wgView: nodes whose
// WireGuard probe answers count, so a dead daemon's kernel WireGuard device
// keeps its peers here, while an embedded one, gone with its daemon, is
// withdrawn as memberlist says).
func (d *Daemon) tunnelState(st *dataplane.State, view, wgView *gossip.Snapshot) {
	st.Members = memberAddrs(view)
	st.WireGuard = desiredWireGuard(wgView, d.ipam.Owners(), d.cfg.WireGuardPort, d.cfg.WireGuardKeepalive)
}

// wireGuardNodeInfo fills the WireGuard facts of this node's record.
func (d *Daemon) wireGuardNodeInfo(ni *gossip.NodeInfo) {
	if key := d.dp.PublicKey(); key != "" {
		ni.WireGuardKey = key
		ni.WireGuardPort = d.cfg.WireGuardPort
	}
}

// wireGuardInfo reports the WireGuard device for meshctl status, naming each
// peer's node from the node records.
func (d *Daemon) wireGuardInfo(snap *gossip.Snapshot) *control.WireGuardInfo {
	s, ok := d.dp.WireGuardStatus()
	if !ok {
		return nil
	}
	byKey := map[string]string{}
	for node, n := range wireGuardNodes(snap) {
		byKey[n.key] = node
	}
	info := &control.WireGuardInfo{Mode: s.Mode, Reason: s.Reason, Offloads: s.Offloads, Device: s.Device,
		PublicKey: s.PublicKey, Port: s.Port, Peers: []control.WireGuardPeer{}}
	for _, p := range s.Peers {
		info.Peers = append(info.Peers, control.WireGuardPeer{Node: byKey[p.PublicKey], PublicKey: p.PublicKey,
			Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs, LastHandshake: p.LastHandshake, RxBytes: p.RxBytes, TxBytes: p.TxBytes})
	}
	return info
}
