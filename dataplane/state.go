package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Dataplane turns a full desired State into kernel state.
//
// Implementations serialise calls to Apply; it is safe to call Apply and Close
// from different goroutines.
type Dataplane interface {
	// Apply makes the kernel match st. It is idempotent, adds before it deletes,
	// replaces existing kernel entries (NLM_F_REPLACE) instead of failing, and does
	// not stop at the first error: it returns errors.Join of everything it could not
	// do.
	Apply(ctx context.Context, st State) error
	// PublicKey is the node's WireGuard public key (base64), "" when the
	// dataplane runs no WireGuard. It does not wait for an Apply.
	PublicKey() string
	// WireGuardStatus reports the WireGuard device and its peers, for
	// meshctl status; false when the dataplane runs no WireGuard.
	WireGuardStatus() (WireGuardStatus, bool)
	// Close releases the dataplane's handles. It removes nothing from the kernel:
	// running containers keep talking when the daemon stops or crashes. Removing
	// everything is Teardown's job.
	Close() error
}

// DefaultVXLANPort is the IANA VXLAN port, used when State.VXLANPort is 0.
const DefaultVXLANPort = 4789

// State is the whole desired dataplane of one host. It is plain data: the
// reconciler builds a fresh one from the cluster store and hands it to Apply.
type State struct {
	Underlay  UnderlayInfo
	VXLANPort int // UDP destination port; 0 = DefaultVXLANPort
	Networks  []Network
	// ServiceAddrs are host-local service addresses (the DNS server's) held
	// on lo as /32s with the label "lo:meshnet", so that containers reach
	// them through their gateway and Apply can tell its own from others'.
	ServiceAddrs []netip.Addr
	// Members are the underlay addresses of the cluster's current members.
	// Only they may reach the tunnel ports (VXLAN, WireGuard): packets to
	// those ports from anyone else are dropped, and containers may not send
	// to a member's tunnel port at all.
	Members []netip.Addr
	// AllowDockerBridges lets Docker's bridges (docker0, br-*,
	// docker_gwbridge) and meshnet's open connections to each other; by
	// default they are kept apart as Docker keeps its own bridges apart
	// (published ports stay reachable either way).
	AllowDockerBridges bool
	// HoldDeletes makes Apply add and change but delete nothing: the caller
	// does not know yet which of the kernel's meshnet objects are stale (a
	// daemon started with an empty state folder while containers run has
	// not heard its own records back from the cluster). Links, entries,
	// rules, set members and WireGuard peers (and their allowed prefixes)
	// it does not want stay as they are.
	HoldDeletes bool
	// WireGuard is the host's WireGuard device, shared by every network with
	// Dataplane "wireguard"; ignored when there is none.
	WireGuard WireGuardState
	// VIPs are the service addresses this host balances over their
	// replicas (vip.go). Each must also be in ServiceAddrs: held on lo,
	// it is answered (ARP) by the bridge of its network with the gateway's
	// MAC, and DNATed before anything else sees it.
	VIPs []VIP
	// MeshPorts are service ports published on every host with the
	// service's network (mesh.go): a connection to a local address on the
	// port is balanced over the replicas anywhere, the client's address
	// kept. Only vxlan networks this host has; others are ignored.
	MeshPorts []MeshPort
	// MeshProbeHosts are the underlay addresses of the hosts that take
	// mesh connections over the probe device (mesh.go). Connections to
	// replicas on other hosts (older meshnetd) are bridged into the
	// overlay, as those hosts expect.
	MeshProbeHosts []netip.Addr
}

// Dataplane kinds of a Network.
const (
	KindVXLAN     = "vxlan"
	KindWireGuard = "wireguard"
)

// UnderlayInfo describes this host's underlay.
type UnderlayInfo struct {
	Addr      netip.Addr // local VTEP address
	Interface string     // interface whose MTU sizes the overlay; "" = the one holding Addr
	MTU       int        // 0 = detect from Interface / Addr, else 1500
}

// Network is one overlay network as seen from this host.
type Network struct {
	// VNI also names the devices: bridge "mnbr<VNI>", vxlan "mnvx<VNI>".
	// It must be in 1..2^24-1.
	VNI     uint32
	Subnet  netip.Prefix
	Gateway netip.Addr // same on every host; the local bridge holds Gateway/Subnet.Bits()
	// Subnet6 and Gateway6 are a dual-stack network's IPv6 half (Subnet is
	// then IPv4; zero on a single-family network). The bridge holds
	// Gateway6 too; remote IPv6 addresses are further RemoteEndpoints.
	Subnet6  netip.Prefix
	Gateway6 netip.Addr
	// IPv6Routed leaves IPv6 that leaves the network as it is; by default
	// it is masqueraded (NAT66) to the host's address.
	IPv6Routed bool
	MTU        int // 0 = underlay MTU - the kind's overhead
	// Kind is KindVXLAN ("" means the same) or KindWireGuard. A wireguard
	// network is routed (L3): its bridge holds the gateway and answers ARP
	// for remote addresses (proxy_arp), and the prefixes State.WireGuard's
	// peers carry inside its subnets are routed through the WireGuard
	// device. It has no vxlan device; of its Remotes only the IPv6
	// addresses count: the bridge answers neighbour solicitations for them.
	Kind string
	// Internal is docker network create --internal: nothing is forwarded
	// between the network and anything but itself, nothing masqueraded,
	// and its endpoints' Ports are ignored.
	Internal bool
	Locals   []LocalEndpoint
	Remotes  []RemoteEndpoint
}

// subnets returns the network's subnets: Subnet, and Subnet6 on a
// dual-stack network.
func (n Network) subnets() []netip.Prefix {
	if n.Subnet6.IsValid() {
		return []netip.Prefix{n.Subnet.Masked(), n.Subnet6.Masked()}
	}
	return []netip.Prefix{n.Subnet.Masked()}
}

// hasIPv6 reports whether n carries IPv6: dual-stack, or IPv6-only (its
// Subnet an IPv6 prefix).
func (n Network) hasIPv6() bool { return n.Subnet6.IsValid() || n.Subnet.Addr().Is6() }

// wireguard reports whether n is routed through the WireGuard device.
func (n Network) wireguard() bool { return n.Kind == KindWireGuard }

// LocalEndpoint is a container on this host.
type LocalEndpoint struct {
	ID          string // Docker endpoint ID
	HostIf      string // host-side veth name, from VethNames(ID)
	ContainerIf string // peer name handed to Docker in Join (Docker moves and renames it)
	MAC         net.HardwareAddr
	Addr        netip.Prefix // container address with the subnet's bits
	// Addr6 is its IPv6 address on a dual-stack network, with Subnet6's
	// bits; zero otherwise.
	Addr6 netip.Prefix
	// Ports are published on the host's addresses (docker run -p).
	Ports []PortMapping
	// Bridged keeps the container's frames, both ways, on the bridge when
	// the bridge bypass is on (Options.BridgeBypass): a container whose
	// own VIP table is not in place has its VIP connections balanced on
	// the host, whose conntrack must see their replies. No effect without
	// the bypass.
	Bridged bool
}

// RemoteEndpoint is a container on another host.
type RemoteEndpoint struct {
	Addr netip.Addr
	MAC  net.HardwareAddr
	VTEP netip.Addr // underlay address of the host holding it
}

// VXLANOverhead is what VXLAN over IPv4 adds to a frame: outer IPv4 (20), UDP
// (8), VXLAN (8) and the inner Ethernet header (14).
const VXLANOverhead = 50

// VXLANOverhead6 is the same over an IPv6 underlay: the outer header is 40
// bytes instead of 20.
const VXLANOverhead6 = 70

// Device name prefixes. Everything meshnet creates in the kernel starts with
// one of them, which is how a restarted daemon finds what a previous run left.
const (
	BridgePrefix        = "mnbr"
	VXLANPrefix         = "mnvx"
	HostVethPrefix      = "mnh"
	ContainerVethPrefix = "mnc"
)

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

// vethIDChars is how much of the endpoint ID names a veth; 3+10 stays well under
// the kernel's 15 characters.
const vethIDChars = 10

// VethNames returns the host-side and container-side veth names for a Docker
// endpoint ID.
func VethNames(endpointID string) (host, container string) {
	id := endpointID
	if len(id) > vethIDChars {
		id = id[:vethIDChars]
	}
	return HostVethPrefix + id, ContainerVethPrefix + id
}

// BridgeName is the name of the bridge of the network with this VNI.
func BridgeName(vni uint32) string { return BridgePrefix + strconv.FormatUint(uint64(vni), 10) }

// VXLANName is the name of the vxlan device of the network with this VNI.
func VXLANName(vni uint32) string { return VXLANPrefix + strconv.FormatUint(uint64(vni), 10) }

// vniFromName returns the VNI a meshnet bridge or vxlan name carries.
func vniFromName(name, prefix string) (uint32, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || rest == "" {
		return 0, false
	}
	v, err := strconv.ParseUint(rest, 10, 32)
	if err != nil || v == 0 || v > maxVNI || strconv.FormatUint(v, 10) != rest {
		return 0, false
	}
	return uint32(v), true
}

// Equal reports whether s and o describe the same dataplane. Order of networks,
// endpoints and remotes does not matter: the reconciler builds them from maps.
func (s State) Equal(o State) bool {
	a, b := s.normalized(), o.normalized()
	if a.Underlay != b.Underlay || a.port() != b.port() || len(a.Networks) != len(b.Networks) ||
		!slices.Equal(a.ServiceAddrs, b.ServiceAddrs) || !slices.Equal(a.Members, b.Members) ||
		a.AllowDockerBridges != b.AllowDockerBridges || a.HoldDeletes != b.HoldDeletes || !a.WireGuard.equal(b.WireGuard) ||
		!vipsEqual(a.VIPs, b.VIPs) || !meshPortsEqual(a.MeshPorts, b.MeshPorts) || !slices.Equal(a.MeshProbeHosts, b.MeshProbeHosts) {
		return false
	}
	for i := range a.Networks {
		if !a.Networks[i].equal(b.Networks[i]) {
			return false
		}
	}
	return true
}

func (s State) port() int {
	if s.VXLANPort == 0 {
		return DefaultVXLANPort
	}
	return s.VXLANPort
}

// normalized returns a deep-enough copy of s with networks, endpoints and
// remotes in a canonical order.
func (s State) normalized() State {
	out := s
	out.ServiceAddrs = slices.Clone(s.ServiceAddrs)
	slices.SortFunc(out.ServiceAddrs, netip.Addr.Compare)
	out.ServiceAddrs = slices.Compact(out.ServiceAddrs)
	out.Members = slices.Clone(s.Members)
	slices.SortFunc(out.Members, netip.Addr.Compare)
	out.Members = slices.Compact(out.Members)
	out.MeshProbeHosts = slices.Clone(s.MeshProbeHosts)
	for i, a := range out.MeshProbeHosts {
		out.MeshProbeHosts[i] = a.Unmap()
	}
	slices.SortFunc(out.MeshProbeHosts, netip.Addr.Compare)
	out.MeshProbeHosts = slices.Compact(out.MeshProbeHosts)
	out.WireGuard = s.WireGuard.normalized()
	out.Networks = make([]Network, len(s.Networks))
	for i, n := range s.Networks {
		n.Locals = slices.Clone(n.Locals)
		n.Remotes = slices.Clone(n.Remotes)
		slices.SortFunc(n.Locals, func(a, b LocalEndpoint) int {
			return cmpStrings(a.ID, b.ID, a.HostIf, b.HostIf)
		})
		for j := range n.Locals {
			n.Locals[j].Ports = sortedPorts(n.Locals[j].Ports)
		}
		slices.SortFunc(n.Remotes, func(a, b RemoteEndpoint) int {
			if c := a.Addr.Compare(b.Addr); c != 0 {
				return c
			}
			if c := bytes.Compare(a.MAC, b.MAC); c != 0 {
				return c
			}
			return a.VTEP.Compare(b.VTEP)
		})
		out.Networks[i] = n
	}
	slices.SortFunc(out.Networks, func(a, b Network) int {
		switch {
		case a.VNI < b.VNI:
			return -1
		case a.VNI > b.VNI:
			return 1
		}
		return a.Subnet.Addr().Compare(b.Subnet.Addr())
	})
	return out
}

func cmpStrings(a1, b1, a2, b2 string) int {
	if c := strings.Compare(a1, b1); c != 0 {
		return c
	}
	return strings.Compare(a2, b2)
}

func (n Network) equal(o Network) bool {
	if n.VNI != o.VNI || n.Subnet != o.Subnet || n.Gateway != o.Gateway || n.Subnet6 != o.Subnet6 || n.Gateway6 != o.Gateway6 || n.IPv6Routed != o.IPv6Routed || n.MTU != o.MTU ||
		n.wireguard() != o.wireguard() || n.Internal != o.Internal || len(n.Locals) != len(o.Locals) || len(n.Remotes) != len(o.Remotes) {
		return false
	}
	for i, l := range n.Locals {
		m := o.Locals[i]
		if l.ID != m.ID || l.HostIf != m.HostIf || l.ContainerIf != m.ContainerIf ||
			!bytes.Equal(l.MAC, m.MAC) || l.Addr != m.Addr || l.Addr6 != m.Addr6 || !slices.Equal(l.Ports, m.Ports) || l.Bridged != m.Bridged {
			return false
		}
	}
	for i, r := range n.Remotes {
		q := o.Remotes[i]
		if r.Addr != q.Addr || !bytes.Equal(r.MAC, q.MAC) || r.VTEP != q.VTEP {
			return false
		}
	}
	return true
}

// validate reports what is wrong with one network on its own. A network that
// fails validation is skipped by Apply and its kernel objects are left alone.
func (n Network) validate() error {
	var errs []error
	if n.VNI == 0 || n.VNI > maxVNI {
		errs = append(errs, fmt.Errorf("VNI %d outside 1..%d", n.VNI, maxVNI))
	}
	if !n.Subnet.IsValid() {
		errs = append(errs, errors.New("no subnet"))
	} else if !n.Gateway.IsValid() || !n.Subnet.Contains(n.Gateway) {
		errs = append(errs, fmt.Errorf("gateway %v not inside subnet %v", n.Gateway, n.Subnet))
	}
	if n.Subnet6.IsValid() || n.Gateway6.IsValid() {
		switch {
		case !n.Subnet6.IsValid() || !n.Subnet6.Addr().Is6() || n.Subnet6.Addr().Is4In6():
			errs = append(errs, fmt.Errorf("IPv6 subnet %v is not an IPv6 prefix", n.Subnet6))
		case !n.Subnet.Addr().Is4():
			errs = append(errs, fmt.Errorf("dual-stack network with IPv4 subnet %v: want an IPv4 subnet beside IPv6 %v", n.Subnet, n.Subnet6))
		case !n.Gateway6.IsValid() || !n.Subnet6.Contains(n.Gateway6):
			errs = append(errs, fmt.Errorf("IPv6 gateway %v not inside subnet %v", n.Gateway6, n.Subnet6))
		}
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 65535) {
		errs = append(errs, fmt.Errorf("MTU %d outside 576..65535", n.MTU))
	}
	if n.Kind != "" && n.Kind != KindVXLAN && n.Kind != KindWireGuard {
		errs = append(errs, fmt.Errorf("unknown dataplane kind %q", n.Kind))
	}
	return errors.Join(errs...)
}

// validate reports what is wrong with one local endpoint.
func (l LocalEndpoint) validate() error {
	var errs []error
	for _, name := range []string{l.HostIf, l.ContainerIf} {
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n") {
			errs = append(errs, fmt.Errorf("invalid interface name %q", name))
		}
	}
	if !strings.HasPrefix(l.HostIf, HostVethPrefix) {
		// Without the prefix a later Apply could not tell the veth is meshnet's.
		errs = append(errs, fmt.Errorf("host interface %q lacks prefix %q", l.HostIf, HostVethPrefix))
	}
	if len(l.MAC) != 6 {
		errs = append(errs, fmt.Errorf("MAC %q is not 6 bytes", l.MAC))
	}
	return errors.Join(errs...)
}

// validate reports what is wrong with one remote endpoint.
func (r RemoteEndpoint) validate() error {
	var errs []error
	if !r.Addr.IsValid() {
		errs = append(errs, errors.New("no address"))
	}
	if len(r.MAC) != 6 {
		errs = append(errs, fmt.Errorf("MAC %q is not 6 bytes", r.MAC))
	}
	if !r.VTEP.IsValid() {
		errs = append(errs, errors.New("no VTEP"))
	}
	return errors.Join(errs...)
}
