package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WireGuardOptions configures the WireGuard half of the dataplane.
type WireGuardOptions struct {
	// PrivateKey is the node's key, generated once and kept by the daemon.
	PrivateKey wgtypes.Key
	// Mode is ModeAuto (""), ModeKernel or ModeUserspace.
	Mode string
	// TUNPath is the TUN clone device checked before the embedded WireGuard
	// starts; "" = /dev/net/tun. (wireguard-go itself always opens
	// /dev/net/tun; tests point this elsewhere to see the error.)
	TUNPath string
}

// WireGuard is the dataplane of hosts that have wireguard networks: every
// network of kind vxlan is applied exactly as by VXLAN, and networks of kind
// wireguard are L3 over one WireGuard device (WireGuardDevice) per host.
//
// The device is the kernel's where the module is (configured through
// wgctrl) and otherwise the embedded wireguard-go on a TUN device with its
// offloads. It is created by the first Apply that has a wireguard network,
// and removed by the first that has none. If it cannot start (no module and
// no /dev/net/tun, no root), Apply says why and leaves wireguard networks
// alone while it keeps applying the vxlan ones.
//
// Close stops an embedded device: its TUN link vanishes with the daemon, so
// wireguard networks are cut off while meshnetd is down (kernel devices keep
// running, as VXLAN does). The next Apply brings it back with the same key,
// and peers resume within a handshake.
type WireGuard struct {
	base *VXLAN
	opts WireGuardOptions
	log  *slog.Logger
	// root is the logger without a dataplane attribute: each Apply gives
	// base's log the kinds of network it applies (logKinds), so that the
	// changes it logs say wireguard when they are for WireGuard networks.
	root *slog.Logger

	// Guarded by base.mu (held through base.applyLocked and here).
	dev      wgDevice
	mode     string // "kernel" or "userspace" once the device runs
	reason   string // why this mode, or why no device
	offloads string
	port     int
	// lastEndpoint is what Apply last wrote as each peer's endpoint.
	lastEndpoint map[wgtypes.Key]netip.AddrPort
}

var _ Dataplane = (*WireGuard)(nil)

// NewWireGuard opens the kernel handles (see NewVXLAN). It creates no device:
// the first Apply that needs one does.
func NewWireGuard(log *slog.Logger, opts Options, wg WireGuardOptions) (*WireGuard, error) {
	base, err := NewVXLAN(log, opts)
	if err != nil {
		return nil, err
	}
	switch wg.Mode {
	case "":
		wg.Mode = ModeAuto
	case ModeAuto, ModeKernel, ModeUserspace:
	default:
		base.Close()
		return nil, fmt.Errorf("WireGuard mode %q: choose %s, %s or %s", wg.Mode, ModeAuto, ModeKernel, ModeUserspace)
	}
	if wg.TUNPath == "" {
		wg.TUNPath = "/dev/net/tun"
	}
	if log == nil {
		log = base.log
	}
	return &WireGuard{base: base, opts: wg, log: log.With("dataplane", "wireguard"), root: log,
		lastEndpoint: map[wgtypes.Key]netip.AddrPort{}}, nil
}

// PublicKey is the node's WireGuard public key, base64, as peers name it.
func (w *WireGuard) PublicKey() string { return w.opts.PrivateKey.PublicKey().String() }

// Apply makes the kernel match st: the WireGuard device first (wireguard
// networks route through it), then everything VXLAN applies, with the
// routes to remote blocks, then the device's peers; a device no network
// needs goes last.
func (w *WireGuard) Apply(ctx context.Context, st State) error {
	d := w.base
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	d.changes = d.changes[:0]
	d.log = w.root.With("dataplane", logKinds(st))
	wantDev := slices.ContainsFunc(st.Networks, Network.wireguard)
	var errs []error
	tunnel := ""
	if wantDev {
		if err := w.ensureDeviceLocked(st); err != nil {
			errs = append(errs, err)
		} else {
			tunnel = WireGuardDevice
		}
	}
	changes := slices.Clone(d.changes) // applyLocked starts its own list
	if err := d.applyLocked(ctx, st, tunnel); err != nil {
		errs = append(errs, err)
	}
	d.changes = append(changes, d.changes...)
	if tunnel != "" {
		if err := w.configurePeersLocked(st.WireGuard); err != nil {
			errs = append(errs, err)
		}
	}
	if !wantDev && ctx.Err() == nil {
		if err := w.removeDeviceLocked(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ensureDeviceLocked makes the device exist, listen on the wanted port with
// the node's key, and have the wanted MTU and be up.
func (w *WireGuard) ensureDeviceLocked(st State) error {
	d := w.base
	mtu := d.underlayMTU(st.Underlay) - WireGuardOverhead4
	if st.Underlay.Addr.Is6() {
		mtu = d.underlayMTU(st.Underlay) - WireGuardOverhead6
	}
	if w.dev != nil {
		if _, err := d.nl.LinkByName(WireGuardDevice); err != nil {
			// Deleted behind our back (or the embedded device died):
			// start over, with the same key.
			w.log.Warn("WireGuard device gone; recreating it", "device", WireGuardDevice, "err", err)
			_ = w.dev.close()
			w.dev = nil
			clear(w.lastEndpoint)
		}
	}
	if w.dev == nil {
		if err := w.startLocked(mtu); err != nil {
			w.reason = err.Error()
			return err
		}
		w.port = 0
	}
	if port := st.WireGuard.port(); w.port != port {
		cfg := wgtypes.Config{PrivateKey: &w.opts.PrivateKey, ListenPort: &port}
		if err := w.dev.configure(cfg); err != nil {
			return fmt.Errorf("set WireGuard key and port %d: %w", port, err)
		}
		d.changed(fmt.Sprintf("set WireGuard listen port %d", port))
		w.port = port
	}
	l, err := d.linkByName(WireGuardDevice)
	if err != nil {
		return err
	}
	if l.Attrs().MTU != mtu {
		if err := d.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set MTU of %s to %d: %w", WireGuardDevice, mtu, err)
		}
		d.changed(fmt.Sprintf("set MTU of %s to %d", WireGuardDevice, mtu))
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := d.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", WireGuardDevice, err)
		}
		d.changed("set " + WireGuardDevice + " up")
	}
	return nil
}

// startLocked creates the device in the configured mode.
func (w *WireGuard) startLocked(mtu int) error {
	d := w.base
	var kernelErr error
	if w.opts.Mode != ModeUserspace {
		k, err := d.createKernelWG(WireGuardDevice, mtu)
		if err == nil {
			w.dev, w.mode, w.offloads = k, ModeKernel, ""
			w.reason = "kernel WireGuard module present"
			w.log.Info("WireGuard device up", "mode", w.mode, "reason", w.reason)
			return nil
		}
		if w.opts.Mode == ModeKernel || !errors.Is(err, errNoKernelWG) {
			return fmt.Errorf("start kernel WireGuard: %w", err)
		}
		kernelErr = err
	}
	u, err := d.createUserWG(WireGuardDevice, mtu, w.opts.TUNPath, w.log)
	if err != nil {
		if kernelErr != nil {
			return fmt.Errorf("%w; and the kernel has no WireGuard module", err)
		}
		return err
	}
	w.dev, w.mode, w.offloads = u, ModeUserspace, u.offloads
	if kernelErr != nil {
		w.reason = "no kernel WireGuard module (ip link add type wireguard: not supported): embedded wireguard-go on TUN"
	} else {
		w.reason = "userspace requested: embedded wireguard-go on TUN"
	}
	w.log.Info("WireGuard device up", "mode", w.mode, "reason", w.reason, "offloads", w.offloads)
	return nil
}

// configurePeersLocked brings the device's peers to the wanted ones.
func (w *WireGuard) configurePeersLocked(want WireGuardState) error {
	d := w.base
	_, have, err := w.dev.read()
	if err != nil {
		return fmt.Errorf("read WireGuard peers: %w", err)
	}
	changes, planErr := planPeers(want, have, w.lastEndpoint)
	if len(changes) == 0 {
		return planErr
	}
	if err := w.dev.configure(wgtypes.Config{Peers: changes}); err != nil {
		return errors.Join(planErr, fmt.Errorf("configure WireGuard peers: %w", err))
	}
	for _, pc := range changes {
		switch {
		case pc.Remove:
			delete(w.lastEndpoint, pc.PublicKey)
		case pc.Endpoint != nil:
			w.lastEndpoint[pc.PublicKey] = pc.Endpoint.AddrPort()
		}
		d.changed(describePeerChange(pc))
	}
	return planErr
}

// removeDeviceLocked stops and deletes the device when no network needs it,
// including a kernel device a previous run left.
func (w *WireGuard) removeDeviceLocked() error {
	d := w.base
	if w.dev != nil {
		if err := w.dev.close(); err != nil {
			return fmt.Errorf("stop WireGuard device: %w", err)
		}
		w.dev, w.mode, w.reason, w.offloads = nil, "", "no wireguard network on this host", ""
		clear(w.lastEndpoint)
	}
	if _, err := d.nl.LinkByName(WireGuardDevice); err == nil {
		return d.deleteLink(WireGuardDevice)
	}
	return nil
}

// Close stops an embedded device (see WireGuard) and closes the handles.
func (w *WireGuard) Close() error {
	d := w.base
	d.mu.Lock()
	if w.dev != nil && !d.closed {
		_ = w.dev.close()
		w.dev = nil
	}
	d.mu.Unlock()
	return d.Close()
}

// Teardown removes everything meshnet made, the WireGuard device included.
func (w *WireGuard) Teardown() error {
	d := w.base
	d.mu.Lock()
	err := w.removeDeviceLocked()
	d.mu.Unlock()
	return errors.Join(err, d.Teardown())
}

// WireGuardStatus is what meshctl status shows of the WireGuard device.
type WireGuardStatus struct {
	// Mode is "kernel", "userspace", or "" when no device runs.
	Mode string
	// Reason says why this mode, or why no device runs.
	Reason    string
	Offloads  string
	Device    string
	PublicKey string
	Port      int
	Peers     []PeerStatus
}

// PeerStatus is one peer as the device has it.
type PeerStatus struct {
	PublicKey     string
	Endpoint      string
	AllowedIPs    []string
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
}

// Status reports the device and its peers.
func (w *WireGuard) Status() WireGuardStatus {
	d := w.base
	d.mu.Lock()
	defer d.mu.Unlock()
	st := WireGuardStatus{Mode: w.mode, Reason: w.reason, Offloads: w.offloads,
		PublicKey: w.opts.PrivateKey.PublicKey().String(), Peers: []PeerStatus{}}
	if st.Reason == "" {
		st.Reason = "no wireguard network on this host"
	}
	if w.dev == nil {
		return st
	}
	st.Device = WireGuardDevice
	port, peers, err := w.dev.read()
	if err != nil {
		st.Reason += "; reading the device failed: " + err.Error()
		return st
	}
	st.Port = port
	for _, p := range peers {
		ps := PeerStatus{PublicKey: p.PublicKey.String(), LastHandshake: p.LastHandshakeTime,
			RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes, AllowedIPs: []string{}}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		for _, a := range peerPrefixes(p.AllowedIPs) {
			ps.AllowedIPs = append(ps.AllowedIPs, a.String())
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// logKinds names the kinds of network st holds, for the log lines of an
// Apply: "vxlan", "wireguard", "vxlan+wireguard", or "none".
func logKinds(st State) string {
	var vx, wg bool
	for _, n := range st.Networks {
		if n.wireguard() {
			wg = true
		} else {
			vx = true
		}
	}
	switch {
	case vx && wg:
		return "vxlan+wireguard"
	case wg:
		return KindWireGuard
	case vx:
		return KindVXLAN
	}
	return "none"
}
