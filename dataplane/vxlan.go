package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Options configures a dataplane.
type Options struct {
	// WireGuard configures the WireGuard device of wireguard networks. A
	// zero PrivateKey means none: wireguard networks are reported by
	// Apply and left alone, and an existing device is not touched.
	WireGuard WireGuardOptions
	// NetNS is the network namespace to program. Values <= 0 (the zero value)
	// mean the namespace of the calling process. The caller keeps the handle open
	// until Close. Tests use it to program a fresh namespace without switching the
	// test's thread.
	NetNS netns.NsHandle
	// NetNSPath, if NetNS is unset, names a namespace file (e.g. /run/netns/x)
	// that New opens and Close closes.
	NetNSPath string
	// GuardForwarding: when Apply turns IP forwarding on (it was off), it
	// first sets the FORWARD policy of iptables' filter table to DROP, as
	// Docker does when it is the one turning it on (forwardguard.go).
	GuardForwarding bool
	// BridgeBypass says when a vxlan network's IPv4 unicast between
	// containers is handed straight between their veths and the vxlan
	// device (bypass.go), past the bridge and so past the host's netfilter
	// hooks: off ("" too), on, or auto (while the host filters no forwarded
	// traffic of its own, hostfilter.go). What it changes for the operator
	// is in doc.go, "The bridge bypass".
	BridgeBypass BypassMode
}

// Kernel is meshnet's one kernel dataplane. Per vxlan network: a bridge
// holding the gateway, a vxlan device enslaved to it, the local containers'
// veths, static FDB and neighbour entries for remote containers, and
// firewall rules. Wireguard networks get the same bridge, veths and
// firewall, and are routed through one WireGuard device per host
// (wireguard.go), which it drives through the wgDevice boundary
// (wgdevice.go: the kernel module or the embedded wireguard-go).
type Kernel struct {
	log       *slog.Logger
	root      *slog.Logger   // log without a dataplane attribute (see Apply)
	ns        netns.NsHandle // the namespace programmed; only valid if foreignNS
	ownNS     bool           // ns was opened by New and is closed by Close
	foreignNS bool           // ns is not the process's own: sysctls need a thread in it

	// mu serialises Apply, Teardown and Close, and guards what follows.
	mu           sync.Mutex
	nl           *netlink.Handle
	nft          *nftables.Conn
	closed       bool
	warnedLegacy bool
	changes      []string // kernel writes done by the current Apply/Teardown
	// entryLinks are meshnet's links as the kernel was last read, for the
	// FDB, neighbour and proxy writes planned on that reading (entryLink).
	entryLinks map[string]link
	wg         wgHalf
	guardFwd   bool       // Options.GuardForwarding
	bypassMode BypassMode // Options.BridgeBypass
	// bypassStatus is what the last Apply chose (bypassWantedLocked);
	// WatchHostFilters reads it without the lock.
	bypassStatus atomic.Pointer[BypassStatus]
	// bypassed are the devices this run wrote bypass filters on;
	// bypassSwept: the first Apply looked at every device (syncBypass).
	bypassed    map[string]bool
	bypassSwept bool
	// bypassProg is this run's bypass program, loaded by the first Apply
	// that bypasses anything; set under mu, read by BypassStatus without it.
	bypassProg atomic.Pointer[bypassProgram]
}

var _ Dataplane = (*Kernel)(nil)

// New opens netlink and nftables handles in the namespace opts names. It
// changes nothing in the kernel: the first Apply adopts what a previous run
// left, and creates the WireGuard device if a wireguard network needs it.
func New(log *slog.Logger, opts Options) (*Kernel, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	wg, err := newWGHalf(log, opts.WireGuard)
	if err != nil {
		return nil, err
	}
	d := &Kernel{log: log.With("dataplane", "vxlan"), root: log, ns: netns.None(), wg: wg, guardFwd: opts.GuardForwarding, bypassMode: opts.BridgeBypass}
	if d.bypassMode == "" {
		d.bypassMode = BypassOff
	}
	switch {
	case opts.NetNS > 0:
		d.ns, d.foreignNS = opts.NetNS, true
	case opts.NetNSPath != "":
		ns, err := netns.GetFromPath(opts.NetNSPath)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", opts.NetNSPath, err)
		}
		d.ns, d.foreignNS, d.ownNS = ns, true, true
	}
	if d.foreignNS {
		d.nl, err = netlink.NewHandleAt(d.ns)
	} else {
		d.nl, err = netlink.NewHandle()
	}
	if err != nil {
		d.closeNS()
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	nftOpts := []nftables.ConnOption{nftables.AsLasting()}
	if d.foreignNS {
		nftOpts = append(nftOpts, nftables.WithNetNSFd(int(d.ns)))
	}
	if d.nft, err = nftables.New(nftOpts...); err != nil {
		d.nl.Close()
		d.closeNS()
		return nil, fmt.Errorf("open nftables connection: %w", err)
	}
	return d, nil
}

func (d *Kernel) closeNS() {
	if d.ownNS {
		d.ns.Close()
	}
}

// Close stops an embedded WireGuard device (see wireguard.go), releases
// the handles and removes nothing. It is idempotent.
func (d *Kernel) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	if d.wg.dev != nil {
		_ = d.wg.dev.close()
		d.wg.dev = nil
	}
	if p := d.bypassProg.Swap(nil); p != nil {
		p.close() // the filters keep it for the next run
	}
	d.closed = true
	d.nl.Close()
	err := d.nft.CloseLasting()
	d.closeNS()
	if err != nil {
		return fmt.Errorf("close nftables connection: %w", err)
	}
	return nil
}

var errClosed = errors.New("dataplane closed")

// changed records one kernel write; Apply logs them and tests count them.
func (d *Kernel) changed(what string) {
	d.changes = append(d.changes, what)
	d.log.Info("changed", "what", what)
}

// applyLocked makes the kernel match st, but for the WireGuard device and
// its peers (Apply). Order matters and is fixed:
//
//  1. devices (bridges before vxlans and veths, which need them);
//  2. sysctls, bridge addresses, FDB and neighbour entries, firewall accepts
//     and NAT;
//  3. only then, from a fresh look at the kernel, everything no longer wanted.
//
// So a change never opens a window with less connectivity than either state
// has (a veth moves to its new bridge before the old one goes), and a failure in
// one step does not stop the others.
//
// tunnel is the WireGuard device wireguard networks route through ("" =
// none: they are reported and left alone).
func (d *Kernel) applyLocked(ctx context.Context, st State, tunnel string) error {
	if d.closed {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.changes = d.changes[:0]

	var errs []error
	report := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(st.Networks) > 0 && !st.Underlay.Addr.IsValid() {
		// Without a local VTEP address nothing can be built; deleting what
		// exists would cut every container off for a configuration slip.
		return errors.New("invalid state: networks but no underlay address; kernel left as it is")
	}
	c, err := compile(st, d.underlayMTU(st.Underlay), tunnel)
	report(err)
	mesh := meshOnNetworks(st.MeshPorts, c.Networks)
	fw := firewallSpec{Nets: c.Networks, Members: st.Members, VXLANPort: st.port(),
		WireGuardPort: st.WireGuard.port(), Tunnel: tunnel, AllowDockerBridges: st.AllowDockerBridges, MeshPorts: mesh, Self: st.Underlay.Addr,
		MeshProbeHosts: st.MeshProbeHosts}
	l2 := l2Spec{Active: len(c.Networks) > 0 || len(c.Reserved) > 0, Ports: c.Locals, Keep: c.Reserved}

	// 1. Devices.
	if len(c.Networks) > 0 {
		// Egress is routed from the bridge to the underlay.
		report(d.enableForwarding(nftables.TableFamilyIPv4, d.guardFwd))
	}
	if slices.ContainsFunc(c.Networks, func(n Network) bool { return n.hasIPv6() && (!n.Internal || n.wireguard()) }) {
		// IPv6 egress too. Like Docker's IPv6 networks this makes the host
		// a router: interfaces with accept_ra=1 stop taking router
		// advertisements (README, "IPv6", says what to do about it).
		report(d.enableForwarding(nftables.TableFamilyIPv6, d.guardFwd))
	}
	have, err := d.observe()
	report(err)
	// The reading is taken again between phases only when something was
	// written (or failed) since: in the periodic re-sync nothing is, and
	// three dumps of every FDB and neighbour entry were most of its time.
	readAt, errsAt := len(d.changes), len(errs)
	reread := func() {
		if len(d.changes) == readAt && len(errs) == errsAt {
			return
		}
		have, err = d.observe()
		report(err)
		readAt, errsAt = len(d.changes), len(errs)
	}
	for _, s := range planLinks(c.Want, have) {
		report(d.execLink(s))
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}

	// 2. Sysctls, addresses, FDB, neighbours, firewall: adds and replacements.
	reread()
	d.entryLinks = have.Links
	defer func() { d.entryLinks = nil }()
	var ctls []sysctl
	for _, n := range c.Networks {
		// The gateway bridge must not configure itself from router
		// advertisements arriving over the overlay.
		if br := BridgeName(n.VNI); have.Links[br].Kind == kindBridge {
			ctls = append(ctls, sysctl{"net/ipv6/conf/" + br + "/accept_ra", "0"})
			if n.hasIPv6() {
				// A host with IPv6 off by default would refuse the
				// IPv6 gateway.
				ctls = append(ctls, sysctl{"net/ipv6/conf/" + br + "/disable_ipv6", "0"})
			}
			if !n.Internal {
				// Published ports reached through 127.0.0.1 leave
				// through the bridge with a loopback source (then
				// masqueraded), which the kernel drops without this.
				ctls = append(ctls, sysctl{"net/ipv4/conf/" + br + "/route_localnet", "1"})
			}
			if n.wireguard() {
				// The bridge answers ARP for remote addresses, which
				// are routed through the WireGuard device; and
				// neighbour solicitations for those it has a proxy
				// entry for.
				ctls = append(ctls, sysctl{"net/ipv4/conf/" + br + "/proxy_arp", "1"})
				if n.hasIPv6() {
					ctls = append(ctls, sysctl{"net/ipv6/conf/" + br + "/proxy_ndp", "1"})
				}
			}
		}
	}
	report(d.writeSysctls(ctls))
	add, _ := planAddrs(c.Want, have)
	for _, a := range add {
		report(d.addrOp(a, false))
	}
	setFDB, _ := planFDB(c.Want, have)
	for _, e := range setFDB {
		report(d.fdbOp(e, false))
	}
	setBrFDB, _ := planBrFDB(c.Want, have)
	for _, e := range setBrFDB {
		report(d.brFDBOp(e, false))
	}
	setNeigh, _ := planNeigh(c.Want, have)
	for _, e := range setNeigh {
		report(d.neighOp(e, false))
	}
	addProxies, _ := planProxies(c.Want, have)
	for _, e := range addProxies {
		report(d.proxyOp(e, false))
	}
	setRoutes, _ := planRoutes(c.Want, have, c.ReservedSubnets)
	for _, r := range setRoutes {
		report(d.routeOp(r, false))
	}
	report(d.syncFirewallAdds(fw))
	report(d.syncL2Adds(l2))
	var bypass bypassPlan
	bypassSt := d.bypassWantedLocked()
	if bypassSt.On {
		bypass = planBypass(c.Networks, func(n Network) net.HardwareAddr { return bridgeMAC(st.Underlay.Addr, n.VNI) }, tunnel)
		if len(bypass.Ports) > 0 && d.bypassProg.Load() == nil {
			p, err := loadBypassProgram()
			if err != nil {
				// Off as a whole, as when the host filters: every
				// container on the bridge, which needs nothing of BPF.
				bypassSt.On, bypassSt.Why = false, append(bypassSt.Why, err.Error())
				bypass = bypassPlan{}
				if prev := d.bypassStatus.Load(); prev == nil || !slices.Equal(prev.Why, bypassSt.Why) {
					d.log.Warn("bridge bypass off: its BPF program cannot be loaded; every container stays on the bridge", "err", err)
				}
			} else {
				d.bypassProg.Store(p)
			}
		}
	}
	// A bypass turned off as a whole is removed even while deletes are
	// held: the bridge carries everything without it, and an operator's
	// new rule must not wait for the hold to end.
	report(d.syncBypass(bypass, have.Links, st.HoldDeletes && bypassSt.On))
	d.bypassStatus.Store(&bypassSt)
	report(d.syncServiceAddrs(st.ServiceAddrs))
	report(d.syncVIPs(serviceRules{VIPs: st.VIPs, Mesh: mesh, Marks: meshMarks(c.Networks, mesh, st.Underlay.Addr, st.Members, st.MeshProbeHosts),
		Forwards: meshForwards(c.Networks, mesh, st.Underlay.Addr, st.MeshProbeHosts),
		Hairpins: meshHairpins(c.Networks, mesh, st.Underlay.Addr), Self: st.Underlay.Addr}, st.HoldDeletes))
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}

	// 3. Deletes, computed from what the kernel holds now.
	if st.HoldDeletes {
		d.log.Debug("applied without deletes: held by the caller", "networks", len(c.Networks), "errors", len(errs))
		return errors.Join(errs...)
	}
	reread()
	d.entryLinks = have.Links
	_, delRoutes := planRoutes(c.Want, have, c.ReservedSubnets)
	for _, r := range delRoutes {
		report(d.routeOp(r, true))
	}
	_, delNeigh := planNeigh(c.Want, have)
	for _, e := range delNeigh {
		report(d.neighOp(e, true))
	}
	_, delProxies := planProxies(c.Want, have)
	for _, e := range delProxies {
		report(d.proxyOp(e, true))
	}
	_, delBrFDB := planBrFDB(c.Want, have)
	for _, e := range delBrFDB {
		report(d.brFDBOp(e, true))
	}
	_, delFDB := planFDB(c.Want, have)
	for _, e := range delFDB {
		report(d.fdbOp(e, true))
	}
	_, delAddrs := planAddrs(c.Want, have)
	for _, a := range delAddrs {
		report(d.addrOp(a, true))
	}
	for _, l := range planLinkDeletes(c.Want, have, c.Reserved) {
		report(d.deleteLink(l.Name))
	}
	report(d.syncFirewallDeletes(fw, c.Reserved))
	report(d.syncL2Deletes(l2))

	if len(d.changes) > 0 {
		d.log.Info("applied", "networks", len(c.Networks), "changes", len(d.changes), "errors", len(errs))
	} else {
		d.log.Debug("applied, nothing to change", "networks", len(c.Networks), "errors", len(errs))
	}
	return errors.Join(errs...)
}

// Teardown removes everything meshnet made in the namespace: its devices (and
// with the veths the containers' ends; the WireGuard device if this
// dataplane runs WireGuard), table inet meshnet, and its rules in the
// iptables filter chains. Used by `meshnetd --cleanup` and tests; Close does not
// do it, so containers survive a daemon restart.
func (d *Kernel) Teardown() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	var errs []error
	// The WireGuard device goes whether or not this dataplane runs one
	// (meshnetd --cleanup has no key), and so does the data-path probe's
	// device, whose name is outside the prefixes Apply manages.
	if err := d.removeDeviceLocked(); err != nil {
		errs = append(errs, err)
	}
	if err := d.deleteLink(ProbeDevice); err != nil {
		errs = append(errs, err)
	}
	// The routing mesh's return rules live beside the probe device (mesh.go).
	if err := removeReturnPath(d.nl, nil); err != nil {
		errs = append(errs, err)
	}
	d.changes = d.changes[:0]
	have, err := d.observe()
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range planLinkDeletes(kernelModel{}, have, nil) {
		if err := d.deleteLink(l.Name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range have.Routes {
		if err := d.routeOp(r, true); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.syncFirewallDeletes(firewallSpec{}, nil); err != nil {
		errs = append(errs, err)
	}
	if err := d.syncL2Deletes(l2Spec{}); err != nil {
		errs = append(errs, err)
	}
	if err := d.syncServiceAddrs(nil); err != nil {
		errs = append(errs, err)
	}
	if err := d.teardownVIPs(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
