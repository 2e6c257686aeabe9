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

// The WireGuard half of Kernel: networks of kind wireguard are L3 over one
// WireGuard device (WireGuardDevice) per host.
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

// wgHalf is Kernel's WireGuard device and what it last configured, guarded
// by Kernel.mu.
type wgHalf struct {
	enabled bool // a key was given (Options.WireGuard)
	opts    WireGuardOptions
	log     *slog.Logger

	dev      wgDevice
	mode     string // "kernel" or "userspace" once the device runs
	reason   string // why this mode, or why no device
	offloads string
	port     int
	// lastEndpoint is what Apply last wrote as each peer's endpoint.
	lastEndpoint map[wgtypes.Key]netip.AddrPort
}

func newWGHalf(log *slog.Logger, wg WireGuardOptions) (wgHalf, error) {
	if wg.PrivateKey == (wgtypes.Key{}) {
		return wgHalf{}, nil
	}
	switch wg.Mode {
	case "":
		wg.Mode = ModeAuto
	case ModeAuto, ModeKernel, ModeUserspace:
	default:
		return wgHalf{}, fmt.Errorf("WireGuard mode %q: choose %s, %s or %s", wg.Mode, ModeAuto, ModeKernel, ModeUserspace)
	}
	if wg.TUNPath == "" {
		wg.TUNPath = "/dev/net/tun"
	}
	return wgHalf{enabled: true, opts: wg, log: log.With("dataplane", "wireguard"),
		lastEndpoint: map[wgtypes.Key]netip.AddrPort{}}, nil
}

// PublicKey is the node's WireGuard public key, base64, as peers name it;
// "" when the dataplane runs no WireGuard. It does not wait for an Apply.
func (d *Kernel) PublicKey() string {
	if !d.wg.enabled {
		return ""
	}
	return d.wg.opts.PrivateKey.PublicKey().String()
}

// Apply makes the kernel match st: the WireGuard device first (wireguard
// networks route through it), then everything applyLocked applies, with the
// routes to remote blocks, then the device's peers; a device no network
// needs goes last. Without WireGuard (no key), wireguard networks in st are
// reported and left alone.
func (d *Kernel) Apply(ctx context.Context, st State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if !d.wg.enabled {
		return d.applyLocked(ctx, st, "")
	}
	d.changes = d.changes[:0]
	// The changes it logs say wireguard when they are for WireGuard
	// networks.
	d.log = d.root.With("dataplane", logKinds(st))
	wantDev := slices.ContainsFunc(st.Networks, Network.wireguard)
	var errs []error
	tunnel := ""
	if wantDev {
		if err := d.ensureDeviceLocked(st); err != nil {
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
		if err := d.configurePeersLocked(st.WireGuard, st.HoldDeletes); err != nil {
			errs = append(errs, err)
		}
	}
	if !wantDev && ctx.Err() == nil {
		if err := d.removeDeviceLocked(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ensureDeviceLocked makes the device exist, listen on the wanted port with
// the node's key, and have the wanted MTU and be up.
func (d *Kernel) ensureDeviceLocked(st State) error {
	mtu := d.underlayMTU(st.Underlay) - WireGuardOverhead4
	if st.Underlay.Addr.Is6() {
		mtu = d.underlayMTU(st.Underlay) - WireGuardOverhead6
	}
	if d.wg.dev != nil {
		if _, err := d.nl.LinkByName(WireGuardDevice); err != nil {
			// Deleted behind our back (or the embedded device died):
			// start over, with the same key.
			d.wg.log.Warn("WireGuard device gone; recreating it", "device", WireGuardDevice, "err", err)
			_ = d.wg.dev.close()
			d.wg.dev = nil
			clear(d.wg.lastEndpoint)
		}
	}
	started := d.wg.dev == nil
	if started {
		if err := d.startLocked(mtu); err != nil {
			d.wg.reason = err.Error()
			return err
		}
		d.wg.port = 0
	}
	if port := st.WireGuard.port(); d.wg.port != port {
		cfg := wgtypes.Config{PrivateKey: &d.wg.opts.PrivateKey, ListenPort: &port}
		if err := d.wg.dev.configure(cfg); err != nil {
			return fmt.Errorf("set WireGuard key and port %d: %w", port, err)
		}
		d.changed(fmt.Sprintf("set WireGuard listen port %d", port))
		d.wg.port = port
	}
	l, err := d.linkByName(WireGuardDevice)
	if err != nil {
		return err
	}
	if started && d.bypassMode != BypassOff {
		// The bypass's qdisc before anything flows, as for veths
		// (kernel.go, createLink).
		if err := d.ensureClsact(l.Attrs().Index); err != nil {
			return fmt.Errorf("%s: %w", WireGuardDevice, err)
		}
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
func (d *Kernel) startLocked(mtu int) error {
	var kernelErr error
	if d.wg.opts.Mode != ModeUserspace {
		k, err := d.createKernelWG(WireGuardDevice, mtu)
		if err == nil {
			d.wg.dev, d.wg.mode, d.wg.offloads = k, ModeKernel, ""
			d.wg.reason = "kernel WireGuard module present"
			d.wg.log.Info("WireGuard device up", "mode", d.wg.mode, "reason", d.wg.reason)
			return nil
		}
		if d.wg.opts.Mode == ModeKernel || !errors.Is(err, errNoKernelWG) {
			return fmt.Errorf("start kernel WireGuard: %w", err)
		}
		kernelErr = err
	}
	u, err := d.createUserWG(WireGuardDevice, mtu, d.wg.opts.TUNPath, d.wg.log)
	if err != nil {
		if kernelErr != nil {
			return fmt.Errorf("%w; and the kernel has no WireGuard module", err)
		}
		return err
	}
	d.wg.dev, d.wg.mode, d.wg.offloads = u, ModeUserspace, u.offloads
	if kernelErr != nil {
		d.wg.reason = "no kernel WireGuard module (ip link add type wireguard: not supported): embedded wireguard-go on TUN"
	} else {
		d.wg.reason = "userspace requested: embedded wireguard-go on TUN"
	}
	d.wg.log.Info("WireGuard device up", "mode", d.wg.mode, "reason", d.wg.reason, "offloads", d.wg.offloads)
	return nil
}

// configurePeersLocked brings the device's peers to the wanted ones; with
// hold (State.HoldDeletes), it adds and changes but removes nothing.
func (d *Kernel) configurePeersLocked(want WireGuardState, hold bool) error {
	_, have, err := d.wg.dev.read()
	if err != nil {
		return fmt.Errorf("read WireGuard peers: %w", err)
	}
	adoptEndpoints(want, have, d.wg.lastEndpoint)
	changes, planErr := planPeers(want, have, d.wg.lastEndpoint, hold)
	if len(changes) == 0 {
		return planErr
	}
	if err := d.wg.dev.configure(wgtypes.Config{Peers: changes}); err != nil {
		return errors.Join(planErr, fmt.Errorf("configure WireGuard peers: %w", err))
	}
	for _, pc := range changes {
		switch {
		case pc.Remove:
			delete(d.wg.lastEndpoint, pc.PublicKey)
		case pc.Endpoint != nil:
			d.wg.lastEndpoint[pc.PublicKey] = pc.Endpoint.AddrPort()
		}
		d.changed(describePeerChange(pc))
	}
	return planErr
}

// removeDeviceLocked stops and deletes the device when no network needs it,
// including a kernel device a previous run left.
func (d *Kernel) removeDeviceLocked() error {
	if d.wg.dev != nil {
		if err := d.wg.dev.close(); err != nil {
			return fmt.Errorf("stop WireGuard device: %w", err)
		}
		d.wg.dev, d.wg.mode, d.wg.reason, d.wg.offloads = nil, "", "no wireguard network on this host", ""
		clear(d.wg.lastEndpoint)
	}
	if _, err := d.nl.LinkByName(WireGuardDevice); err == nil {
		return d.deleteLink(WireGuardDevice)
	}
	return nil
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

// WireGuardStatus reports the device and its peers; false when the
// dataplane runs no WireGuard.
func (d *Kernel) WireGuardStatus() (WireGuardStatus, bool) {
	if !d.wg.enabled {
		return WireGuardStatus{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := WireGuardStatus{Mode: d.wg.mode, Reason: d.wg.reason, Offloads: d.wg.offloads,
		PublicKey: d.wg.opts.PrivateKey.PublicKey().String(), Peers: []PeerStatus{}}
	if st.Reason == "" {
		st.Reason = "no wireguard network on this host"
	}
	if d.wg.dev == nil {
		return st, true
	}
	st.Device = WireGuardDevice
	port, peers, err := d.wg.dev.read()
	if err != nil {
		st.Reason += "; reading the device failed: " + err.Error()
		return st, true
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
	return st, true
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
