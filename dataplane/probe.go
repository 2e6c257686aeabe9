package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The data-path probe: each host checks every peer through the tunnel
// itself, not through gossip (doc.go, "The data-path probe").

const (
	// ProbeDevice is the probe's VXLAN device. Its name is outside the
	// prefixes Apply owns (mnbr, mnvx, mnh, mnc), so Apply never deletes it.
	ProbeDevice = "mnprobe"
	// ProbeVNI is reserved for the probe: network VNIs start at 2.
	ProbeVNI = 1
	// minProbeMTU is IPv6's minimum. Probes are small, but the routing
	// mesh's connections cross the device too (mesh.go): its MTU is the
	// underlay's less VXLAN's overhead, as a vxlan network's is.
	minProbeMTU = 1280
)

// ProbeState is what the probe knows of one peer's data path.
type ProbeState string

const (
	ProbeUp      ProbeState = "up"      // an echo came back within the timeout
	ProbeDown    ProbeState = "down"    // none for a whole timeout
	ProbeUnknown ProbeState = "unknown" // listed for less than a timeout, no answer yet
)

// ProbePeer is one host to probe: its node name and underlay address (its
// VTEP).
type ProbePeer struct {
	Name     string
	Underlay netip.Addr
}

// ProbeStatus is the data path to one peer as last seen.
type ProbeStatus struct {
	State ProbeState
	// RTT is the round trip of the last answered echo (0: none yet).
	RTT time.Duration
	// LastReply is when the last echo came back (zero: never).
	LastReply time.Time
	// Since is when State last changed (or the peer was first probed).
	Since time.Time
}

// ProbeConfig says where the probe sends from.
type ProbeConfig struct {
	// Tunnel is what the probe goes through: KindVXLAN ("" means the same),
	// through a VXLAN device of its own, or KindWireGuard, through the
	// WireGuard device (WireGuardDevice) that Apply makes; each peer's probe
	// address must then be among its AllowedIPs (ProbePrefix).
	Tunnel   string
	Underlay netip.Addr // this host's underlay address (its VTEP, its WireGuard endpoint)
	Port     int        // the VXLAN port, the one containers' traffic uses (VXLAN only)
	// Interval between echoes to each peer (default 1 s); Timeout without
	// an answer after which a peer's data path is down (default 3 s).
	Interval, Timeout time.Duration
	Log               *slog.Logger
	// Changed receives a value when a peer's data path went up or down
	// (several probes may share one; nil: nobody listens).
	Changed chan struct{}
}

// Probe keeps the probe device and its forwarding entries in step with the
// peers it is given, sends an ICMPv6 echo to each peer's probe address every
// Interval, and reports per peer whether answers come back.
type Probe struct {
	cfg     ProbeConfig
	log     *slog.Logger
	changed chan struct{}
	id      uint16

	mu      sync.Mutex // guards everything below
	enabled bool
	// returnPath: the device also carries the routing mesh's replies back
	// to the host that took a connection (mesh.go); set by SetReturnPath.
	returnPath bool
	ifindex    int
	peers      map[string]*probePeer // by name
	byAddr     map[netip.Addr]string // probe address -> name
	seq        uint16
}

type probePeer struct {
	ProbePeer
	addr netip.Addr // probe address (IPv6 link-local)
	mac  net.HardwareAddr
	// listed is when the peer entered the probe's list: it is down once
	// listed a whole timeout without an answer, sent to or not (a probe
	// that cannot send must not leave its peers unknown for good).
	listed time.Time
	status ProbeStatus
}

// NewProbe makes a probe; nothing touches the kernel before Sync.
func NewProbe(cfg ProbeConfig) *Probe {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Tunnel == "" {
		cfg.Tunnel = KindVXLAN
	}
	// Each probe's echoes carry an identifier of their own: a raw ICMPv6
	// socket receives every echo reply of the host, and the two probes
	// send to the same addresses (a peer's probe address through VXLAN and
	// through WireGuard), so only the identifier tells whose reply it is.
	id := uint16(os.Getpid())
	if cfg.Tunnel == KindWireGuard {
		id ^= 0x5747 // "WG"
	}
	return &Probe{cfg: cfg, log: cfg.Log, changed: cfg.Changed, id: id,
		peers: map[string]*probePeer{}, byAddr: map[netip.Addr]string{}}
}

// ProbeAddr is the probe address of the host with underlay address a:
// fe80::6d6e:0:<IPv4> for an IPv4 underlay (unique as the underlay
// address is), a hash of the address for IPv6. Link-local, so it needs no
// route and clashes with no address or route of the host.
func ProbeAddr(a netip.Addr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9] = 0x6d, 0x6e // "mn"
	a = a.Unmap()
	if a.Is4() {
		v4 := a.As4()
		copy(b[12:], v4[:])
	} else {
		h := fnv.New64a()
		s := a.As16()
		h.Write(s[:])
		binary.BigEndian.PutUint64(b[8:], h.Sum64())
		b[8], b[9] = 0x6d, 0x6e
	}
	return netip.AddrFrom16(b)
}

// ProbePrefix is the probe address of the host with underlay address a as
// a host prefix: what a WireGuard peer's AllowedIPs carry so that the probe
// passes through the WireGuard device.
func ProbePrefix(a netip.Addr) netip.Prefix {
	p := ProbeAddr(a)
	return netip.PrefixFrom(p, p.BitLen())
}

// Tunnel is what the probe goes through (KindVXLAN or KindWireGuard).
func (p *Probe) Tunnel() string {
	if p == nil {
		return ""
	}
	return p.cfg.Tunnel
}

// ProbeMAC is the probe device's MAC on the host with underlay address a:
// locally administered, derived like ProbeAddr.
func ProbeMAC(a netip.Addr) net.HardwareAddr {
	p := ProbeAddr(a).As16()
	return net.HardwareAddr{0x02, 0x6d, p[12], p[13], p[14], p[15]}
}

// Sync makes the probe device exist (enabled) or not (disabled) and hold a
// forwarding and a neighbour entry for every peer. Through WireGuard there is
// no device of the probe's own: enabled, it adds the probe address to the
// WireGuard device, which must exist (Sync after Apply); routing to peers is
// WireGuard's AllowedIPs, so there are no entries to hold. With keep set it only
// adds: peers it probed before and no longer has are kept (a restarted
// daemon that has not heard from its cluster yet). It is called by the
// reconciler; the device is removed only when disabled, never by Close, so
// the kernel answers peers' probes while the daemon is down.
func (p *Probe) Sync(enabled bool, peers []ProbePeer, keep bool) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !enabled {
		if keep {
			return nil
		}
		p.enabled, p.ifindex = false, 0
		p.peers, p.byAddr = map[string]*probePeer{}, map[netip.Addr]string{}
		if p.cfg.Tunnel == KindWireGuard {
			return nil // the address goes with the device Apply removes
		}
		var rpErr error
		if h, err := netlink.NewHandle(); err == nil {
			rpErr = removeReturnPath(h, nil)
			h.Close()
		}
		return errors.Join(rpErr, p.removeDevice())
	}
	p.enabled = true
	var link netlink.Link
	var err error
	if p.cfg.Tunnel == KindWireGuard {
		link, err = p.ensureOnWireGuard()
	} else {
		link, err = p.ensureDevice()
	}
	if err != nil {
		return err
	}
	p.ifindex = link.Attrs().Index
	want := map[string]ProbePeer{}
	for _, pp := range peers {
		if pp.Underlay.IsValid() && pp.Underlay.Unmap() != p.cfg.Underlay.Unmap() {
			want[pp.Name] = pp
		}
	}
	if keep {
		for name, old := range p.peers {
			if _, ok := want[name]; !ok {
				want[name] = old.ProbePeer
			}
		}
	}
	now := time.Now()
	for name, pp := range want {
		cur, ok := p.peers[name]
		if !ok || cur.Underlay != pp.Underlay {
			cur = &probePeer{ProbePeer: pp, addr: ProbeAddr(pp.Underlay), mac: ProbeMAC(pp.Underlay),
				listed: now, status: ProbeStatus{State: ProbeUnknown, Since: now}}
			p.peers[name] = cur
		}
	}
	for name := range p.peers {
		if _, ok := want[name]; !ok {
			delete(p.peers, name)
		}
	}
	p.byAddr = map[netip.Addr]string{}
	for name, pp := range p.peers {
		p.byAddr[pp.addr] = name
	}
	if p.cfg.Tunnel == KindWireGuard {
		return nil
	}
	return errors.Join(p.syncEntries(link, keep), p.syncReturnPath(link, keep))
}

// SetReturnPath says whether the probe device also carries the routing
// mesh's return path (mesh.go): per peer a neighbour entry, a routing table
// and an ip rule, made by the next Sync; off, they are removed. Only a
// VXLAN probe has one.
func (p *Probe) SetReturnPath(on bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.returnPath = on && p.cfg.Tunnel == KindVXLAN
}

// syncReturnPath keeps the return path in step with the peers (or removes
// it), in the calling thread's network namespace.
func (p *Probe) syncReturnPath(link netlink.Link, keep bool) error {
	if !p.returnPath && keep {
		return nil // nothing to add, deletes held
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink handle for the mesh return path: %w", err)
	}
	defer h.Close()
	if !p.returnPath {
		return removeReturnPath(h, link)
	}
	peers := make([]ProbePeer, 0, len(p.peers))
	for _, pp := range p.peers {
		peers = append(peers, pp.ProbePeer)
	}
	routes, planErr := planReturnRoutes(p.cfg.Underlay, peers)
	return errors.Join(planErr, syncReturnPath(h, link, routes, keep))
}

// ensureOnWireGuard gives the WireGuard device the probe address. Kernel
// WireGuard devices and TUN devices get no IPv6 link-local address of their
// own, and the probe's needs no router advertisement or DAD either.
func (p *Probe) ensureOnWireGuard() (netlink.Link, error) {
	l, err := netlink.LinkByName(WireGuardDevice)
	if err != nil {
		return nil, fmt.Errorf("find the WireGuard device %s to probe through: %w", WireGuardDevice, err)
	}
	p.setIPv6Sysctls(WireGuardDevice)
	return l, p.ensureAddr(l)
}

// setIPv6Sysctls: no address of the kernel's making, no router
// advertisements, no duplicate address detection (the probe address is
// unique by construction and must work at once), IPv6 on. The VXLAN
// probe's device also gets no reverse-path check: the routing mesh's
// replies arrive on it from container addresses routed through a bridge,
// and the kernel drops whatever arrives on a device without an IPv4
// address when the check is on, loose or strict (the effective value is
// the larger of this and net.ipv4.conf.all.rp_filter, which must be 0).
func (p *Probe) setIPv6Sysctls(dev string) {
	keys := []string{"ipv6/conf/%s/addr_gen_mode", "ipv6/conf/%s/accept_ra", "ipv6/conf/%s/accept_dad", "ipv6/conf/%s/disable_ipv6"}
	vals := []string{"1", "0", "0", "0"}
	if dev == ProbeDevice {
		keys, vals = append(keys, "ipv4/conf/%s/rp_filter"), append(vals, "0")
	}
	for i, k := range keys {
		v := vals[i]
		path := filepath.Join("/proc/sys/net", fmt.Sprintf(k, dev))
		if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == v {
			continue
		}
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			p.log.Warn("probe device sysctl", "path", path, "err", err)
		}
	}
}

// probeDeviceMTU is the MTU the probe device should have: the underlay
// link's less VXLAN's overhead, at least minProbeMTU.
func probeDeviceMTU(self netip.Addr) int {
	mtu := addrLinkMTU(&netlink.Handle{}, self)
	if mtu == 0 {
		mtu = 1500
	}
	if self.Is6() {
		mtu -= VXLANOverhead6
	} else {
		mtu -= VXLANOverhead
	}
	return max(mtu, minProbeMTU)
}

func (p *Probe) ensureDevice() (netlink.Link, error) {
	self := p.cfg.Underlay.Unmap()
	mtu := probeDeviceMTU(self)
	if l, err := netlink.LinkByName(ProbeDevice); err == nil {
		vx, ok := l.(*netlink.Vxlan)
		ours := ok && vx.VxlanId == ProbeVNI && vx.Port == p.cfg.Port && vx.SrcAddr.Equal(net.IP(self.AsSlice()))
		if ours && l.Attrs().MTU != mtu {
			// One made by an older meshnetd (1280), or the underlay's
			// changed: set in place, the device and its entries stay.
			if err := netlink.LinkSetMTU(l, mtu); err != nil {
				return nil, fmt.Errorf("set the MTU of %s to %d: %w", ProbeDevice, mtu, err)
			}
		}
		if ours && l.Attrs().OperState != netlink.OperDown && l.Attrs().Flags&net.FlagUp != 0 {
			p.setIPv6Sysctls(ProbeDevice) // one made by an older meshnetd may lack some
			return l, p.ensureAddr(l)
		}
		if ours {
			if err := netlink.LinkSetUp(l); err != nil {
				return nil, fmt.Errorf("set %s up: %w", ProbeDevice, err)
			}
			return l, p.ensureAddr(l)
		}
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("delete outdated %s: %w", ProbeDevice, err)
		}
	}
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: ProbeDevice, MTU: mtu, HardwareAddr: ProbeMAC(self)},
		VxlanId:   ProbeVNI, SrcAddr: net.IP(self.AsSlice()), Port: p.cfg.Port, Learning: false,
	}
	if err := netlink.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create probe device %s (vxlan id %d port %d): %w", ProbeDevice, ProbeVNI, p.cfg.Port, err)
	}
	p.setIPv6Sysctls(ProbeDevice) // before it is up
	l, err := netlink.LinkByName(ProbeDevice)
	if err != nil {
		return nil, fmt.Errorf("find the probe device %s just made: %w", ProbeDevice, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", ProbeDevice, err)
	}
	p.log.Info("data-path probe device made", "device", ProbeDevice, "vni", ProbeVNI, "port", p.cfg.Port, "addr", ProbeAddr(self))
	return l, p.ensureAddr(l)
}

func (p *Probe) ensureAddr(l netlink.Link) error {
	want := ProbeAddr(p.cfg.Underlay)
	addrs, err := netlink.AddrList(l, unix.AF_INET6)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip == want {
			return nil
		}
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(want.AsSlice()), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrReplace(l, a); err != nil {
		return fmt.Errorf("add probe address %s to %s (is IPv6 disabled on this host?): %w", want, l.Attrs().Name, err)
	}
	return nil
}

// syncEntries writes a permanent FDB entry (peer's probe MAC -> its VTEP)
// and neighbour entry (probe address -> MAC) per peer, and deletes the
// permanent ones of hosts no longer probed, unless keep is set.
func (p *Probe) syncEntries(l netlink.Link, keep bool) error {
	var errs []error
	idx := l.Attrs().Index
	wantFDB, wantNeigh := map[string]bool{}, map[netip.Addr]bool{}
	for _, pp := range p.peers {
		wantFDB[pp.mac.String()] = true
		wantNeigh[pp.addr] = true
		fdb := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
			IP: net.IP(pp.Underlay.Unmap().AsSlice()), HardwareAddr: pp.mac}
		if err := netlink.NeighSet(fdb); err != nil {
			errs = append(errs, fmt.Errorf("probe fdb %s -> %s: %w", pp.mac, pp.Underlay, err))
		}
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET6, State: netlink.NUD_PERMANENT,
			IP: net.IP(pp.addr.AsSlice()), HardwareAddr: pp.mac}
		if err := netlink.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("probe neighbour %s -> %s: %w", pp.addr, pp.mac, err))
		}
	}
	if keep {
		return errors.Join(errs...)
	}
	if fdbs, err := netlink.NeighList(idx, unix.AF_BRIDGE); err == nil {
		for _, e := range fdbs {
			if e.State&netlink.NUD_PERMANENT != 0 && !wantFDB[e.HardwareAddr.String()] && e.HardwareAddr[0]&1 == 0 &&
				!slices.Equal(e.HardwareAddr, ProbeMAC(p.cfg.Underlay)) {
				if err := netlink.NeighDel(&e); err != nil {
					errs = append(errs, fmt.Errorf("delete probe fdb %s: %w", e.HardwareAddr, err))
				}
			}
		}
	}
	if ns, err := netlink.NeighList(idx, unix.AF_INET6); err == nil {
		for _, e := range ns {
			a, _ := netip.AddrFromSlice(e.IP)
			if e.State&netlink.NUD_PERMANENT != 0 && !wantNeigh[a] {
				if err := netlink.NeighDel(&e); err != nil {
					errs = append(errs, fmt.Errorf("delete probe neighbour %s: %w", a, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (p *Probe) removeDevice() error {
	l, err := netlink.LinkByName(ProbeDevice)
	if err != nil {
		return nil // gone already
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete probe device %s: %w", ProbeDevice, err)
	}
	return nil
}

// Status reports every probed peer's data path.
func (p *Probe) Status() map[string]ProbeStatus {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// The state as of now, not as the send loop last judged it: a loop
	// that stopped (its socket refused) leaves no peer unknown for good.
	now := time.Now()
	out := make(map[string]ProbeStatus, len(p.peers))
	for name, pp := range p.peers {
		st := pp.status
		if s := probeState(now, pp.listed, st.LastReply, p.cfg.Timeout); s != st.State {
			st.State, st.Since = s, now
		}
		out[name] = st
	}
	return out
}

// Run sends the echoes and reads the answers until ctx is done. The device
// and its entries stay when it returns.
func (p *Probe) Run(ctx context.Context) error {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("open the probe's ICMPv6 socket: %w", err)
	}
	// The overlay mark: the tunnel guard drops host sockets' packets to a
	// member's VXLAN port unless they carry it (tunnelfw.go).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, overlayMark); err != nil {
		unix.Close(fd)
		return fmt.Errorf("mark the probe socket: %w", err)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return fmt.Errorf("set the probe socket's timeout: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.receive(ctx, fd) }()
	defer func() { wg.Wait(); unix.Close(fd) }()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.send(fd)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		p.evaluate(time.Now())
	}
}

func (p *Probe) send(fd int) {
	p.mu.Lock()
	if !p.enabled || p.ifindex == 0 {
		p.mu.Unlock()
		return
	}
	p.seq++
	seq, idx := p.seq, p.ifindex
	type dst struct {
		pp   *probePeer
		addr netip.Addr
	}
	var dsts []dst
	for _, pp := range p.peers {
		dsts = append(dsts, dst{pp, pp.addr})
	}
	p.mu.Unlock()
	for _, d := range dsts {
		msg := make([]byte, 16)
		msg[0] = 128 // echo request; the kernel fills in the checksum
		binary.BigEndian.PutUint16(msg[4:], p.id)
		binary.BigEndian.PutUint16(msg[6:], seq)
		binary.BigEndian.PutUint64(msg[8:], uint64(time.Now().UnixNano()))
		sa := &unix.SockaddrInet6{Addr: d.addr.As16(), ZoneId: uint32(idx)}
		if err := unix.Sendto(fd, msg, 0, sa); err != nil {
			p.log.Debug("probe send", "peer", d.pp.Name, "err", err)
		}
	}
}

func (p *Probe) receive(ctx context.Context, fd int) {
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // timeout or interrupted: look at ctx again
		}
		sa, ok := from.(*unix.SockaddrInet6)
		if !ok || n < 16 || buf[0] != 129 || binary.BigEndian.Uint16(buf[4:]) != p.id {
			continue
		}
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(buf[8:])))
		p.answered(netip.AddrFrom16(sa.Addr), time.Now(), sent)
	}
}

func (p *Probe) answered(from netip.Addr, now, sent time.Time) {
	p.mu.Lock()
	name, ok := p.byAddr[from]
	if !ok {
		p.mu.Unlock()
		return
	}
	pp := p.peers[name]
	pp.status.LastReply, pp.status.RTT = now, now.Sub(sent)
	p.mu.Unlock()
	p.evaluate(now)
}

// evaluate moves each peer's state by the rules in probeState and says
// when one changed.
func (p *Probe) evaluate(now time.Time) {
	p.mu.Lock()
	flipped := false
	for name, pp := range p.peers {
		st := probeState(now, pp.listed, pp.status.LastReply, p.cfg.Timeout)
		if st != pp.status.State {
			old := pp.status.State
			pp.status.State, pp.status.Since = st, now
			if st == ProbeDown || old == ProbeDown {
				flipped = true
			}
			if st == ProbeDown {
				p.log.Warn("data path down: no probe answer through the tunnel", "tunnel", p.cfg.Tunnel, "peer", name, "underlay", pp.Underlay, "for", p.cfg.Timeout)
			} else if st == ProbeUp {
				p.log.Info("data path up", "tunnel", p.cfg.Tunnel, "peer", name, "rtt", pp.status.RTT)
			}
		}
	}
	p.mu.Unlock()
	if flipped {
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
}

// probeState: up while an answer came within timeout; down once the peer
// has been in the list for a whole timeout without one; unknown before.
func probeState(now, listed, lastReply time.Time, timeout time.Duration) ProbeState {
	switch {
	case !lastReply.IsZero() && now.Sub(lastReply) < timeout:
		return ProbeUp
	case !listed.IsZero() && now.Sub(listed) >= timeout:
		return ProbeDown
	default:
		return ProbeUnknown
	}
}
