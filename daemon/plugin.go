package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/ipam"
	"github.com/meshnet/meshnet/plugin"
)

// networkBackend answers Docker's NetworkDriver calls. It never calls the
// Docker API (that deadlocks the engine): names and labels arrive through
// the event watcher.
type networkBackend struct{ d *Daemon }

var _ plugin.NetworkBackend = networkBackend{}

func (b networkBackend) CreateNetwork(ctx context.Context, req plugin.CreateNetworkRequest) error {
	d := b.d
	// An IPv6-only network (engine 27 and newer: --ipv4=false --ipv6)
	// has its IPv6 subnet as its identity, and no second family.
	primary, ipv6Only := req.IPv4Data, len(req.IPv4Data) == 0 && len(req.IPv6Data) == 1
	if ipv6Only {
		primary = req.IPv6Data
	}
	if len(primary) != 1 {
		return plugin.BadRequest("a meshnet network needs exactly one IPv4 subnet (or, IPv6-only on engine 27 and newer, --ipv4=false --ipv6 and one IPv6 subnet): docker network create -d meshnet --ipam-driver meshnet --subnet 10.42.0.0/16 NAME")
	}
	subnet, gateway, err := d.checkPool(primary[0], ipv6Only, ipv6Only)
	if err != nil {
		return err
	}
	var subnet6 netip.Prefix
	var gateway6 netip.Addr
	if !ipv6Only {
		if subnet6, gateway6, err = d.ipv6Half(req); err != nil {
			return err
		}
	}
	info := gossip.NetworkInfo{
		Subnet:    subnet.String(),
		Gateway:   gateway.String(),
		Dataplane: d.cfg.Dataplane,
		VNI:       vniFor(subnet),
		Internal:  req.Internal,
		DockerID:  req.NetworkID,
		Created:   time.Now().UTC(),
	}
	if subnet6.IsValid() {
		info.Subnet6, info.Gateway6 = subnet6.String(), gateway6.String()
	}
	if err := applyNetworkOptions(&info, req.Options); err != nil {
		return err
	}
	snap := d.store.Snapshot()
	mine := []netip.Prefix{subnet}
	if subnet6.IsValid() {
		mine = append(mine, subnet6)
	}
	for _, n := range networks(snap) {
		if n.subnet != subnet {
			for _, a := range mine {
				for _, b := range n.subnets() {
					if a.Overlaps(b) {
						return plugin.BadRequest("subnet %s overlaps meshnet network %s (its subnet %s, on %s): choose a subnet that does not overlap", a, n.subnet, b, n.owner)
					}
				}
			}
		}
		switch {
		case n.subnet == subnet && n.owner == d.cfg.NodeName && n.info.DockerID != req.NetworkID:
			return plugin.BadRequest("subnet %s is already a meshnet network on this host (Docker network %s): remove it first or use another subnet", subnet, short(n.info.DockerID))
		case n.subnet == subnet && n.owner != d.cfg.NodeName:
			if diff := settingsDiffer(n.info, info); diff != "" {
				return plugin.BadRequest("subnet %s exists in the cluster (on %s) with %s: create it here with the same options", subnet, n.owner, diff)
			}
		case n.subnet != subnet && n.info.VNI == info.VNI:
			return plugin.BadRequest("VNI %d of subnet %s is taken by meshnet network %s: pass -o vni=N with another number", info.VNI, subnet, n.subnet)
		}
	}
	if _, err := d.store.Put(gossip.KindNetwork, subnet.String(), info); err != nil {
		return fmt.Errorf("record network %s: %w", subnet, err)
	}
	if err := d.reconcile(ctx); err != nil && !d.haveLink(bridgeName(info.VNI)) {
		// Take the record back: other hosts must not count on a network
		// this one could not build (a WireGuard device that cannot start).
		if derr := d.store.Delete(gossip.KindNetwork, subnet.String()); derr != nil {
			d.log.Warn("removing the record of a network that failed", "subnet", subnet, "err", derr)
		}
		return fmt.Errorf("set up network %s in the kernel: %w", subnet, err)
	}
	return nil
}

// settingsDiffer names the settings two records of one subnet disagree on.
func settingsDiffer(have, want gossip.NetworkInfo) string {
	var d []string
	if have.Dataplane != want.Dataplane {
		d = append(d, "-o dataplane="+have.Dataplane)
	}
	if have.MTU != want.MTU {
		d = append(d, "-o mtu="+strconv.Itoa(have.MTU))
	}
	if have.VNI != want.VNI {
		d = append(d, "-o vni="+strconv.FormatUint(uint64(have.VNI), 10))
	}
	if have.Gateway != want.Gateway {
		d = append(d, "--gateway "+have.Gateway)
	}
	if have.Subnet6 != want.Subnet6 {
		if have.Subnet6 == "" {
			d = append(d, "no --ipv6")
		} else {
			d = append(d, "--ipv6 --subnet "+have.Subnet6)
		}
	} else if have.Gateway6 != want.Gateway6 {
		d = append(d, "--gateway "+have.Gateway6)
	}
	if have.IPv6Egress != want.IPv6Egress {
		d = append(d, "-o ipv6-egress="+cmp.Or(have.IPv6Egress, gossip.IPv6EgressNAT))
	}
	if have.Internal != want.Internal {
		if have.Internal {
			d = append(d, "--internal")
		} else {
			d = append(d, "no --internal")
		}
	}
	return strings.Join(d, " ")
}

func (b networkBackend) DeleteNetwork(ctx context.Context, networkID string) error {
	n, ok := b.d.ownNetworkByDockerID(networkID)
	if !ok {
		return nil // already gone: deletes are idempotent
	}
	if err := b.d.store.Delete(gossip.KindNetwork, n.info.Subnet); err != nil {
		return fmt.Errorf("remove network %s: %w", n.info.Subnet, err)
	}
	_ = b.d.reconcile(ctx)
	return nil
}

func (b networkBackend) CreateEndpoint(ctx context.Context, req plugin.CreateEndpointRequest) (plugin.EndpointInterface, error) {
	d := b.d
	n, ok := d.ownNetworkByDockerID(req.NetworkID)
	if !ok {
		return plugin.EndpointInterface{}, plugin.BadRequest("unknown network %s: it is not a meshnet network on this host", short(req.NetworkID))
	}
	// The address of the network's own family, and a dual-stack network's IPv6 one.
	primary, second := req.Interface.Address, req.Interface.AddressIPv6
	ipv6Only := n.subnet.Addr().Is6()
	if ipv6Only {
		primary, second = second, primary
	}
	if !primary.IsValid() {
		return plugin.EndpointInterface{}, plugin.BadRequest("endpoint %s has no address on %s: meshnet networks need --ipam-driver meshnet", short(req.EndpointID), n.subnet)
	}
	addr := primary.Addr()
	if !n.subnet.Contains(addr) {
		return plugin.EndpointInterface{}, plugin.BadRequest("address %s is outside the network's subnet %s", addr, n.subnet)
	}
	var addr6 netip.Addr
	switch {
	case n.subnet6.IsValid() && !second.IsValid():
		return plugin.EndpointInterface{}, plugin.BadRequest("endpoint %s has no IPv6 address on dual-stack network %s: meshnet networks need --ipam-driver meshnet", short(req.EndpointID), n.subnet)
	case n.subnet6.IsValid():
		addr6 = second.Addr()
		if !n.subnet6.Contains(addr6) {
			return plugin.EndpointInterface{}, plugin.BadRequest("IPv6 address %s is outside the network's IPv6 subnet %s", addr6, n.subnet6)
		}
	case second.IsValid() && ipv6Only:
		return plugin.EndpointInterface{}, plugin.BadRequest("IPv4 address %s on IPv6-only network %s: a meshnet network has its IPv6 half only beside an IPv4 subnet; create a dual-stack network for both families", second.Addr(), n.subnet)
	case second.IsValid():
		return plugin.EndpointInterface{}, plugin.BadRequest("IPv6 address %s on network %s, which has no IPv6 subnet: create the network with --ipv6 and an IPv6 --subnet", second.Addr(), n.subnet)
	}
	if err := d.checkEndpointMAC(n, req.EndpointID, req.Interface.MacAddress); err != nil {
		return plugin.EndpointInterface{}, err
	}
	var out plugin.EndpointInterface
	mac := req.Interface.MacAddress
	if len(mac) == 0 {
		mac = macFor(addr)
		out.MacAddress = mac
	}
	info := gossip.EndpointInfo{Subnet: n.info.Subnet, Addr: addr.String(), MAC: mac.String(), Network: n.info.Name, Healthy: true}
	if addr6.IsValid() {
		info.Subnet6, info.Addr6 = n.info.Subnet6, addr6.String()
	}
	if _, err := d.store.Put(gossip.KindEndpoint, req.EndpointID, info); err != nil {
		return plugin.EndpointInterface{}, fmt.Errorf("record endpoint %s: %w", short(req.EndpointID), err)
	}
	return out, nil
}

func (b networkBackend) EndpointInfo(ctx context.Context, networkID, endpointID string) (map[string]any, error) {
	e, ok := b.d.ownEndpoint(endpointID)
	if !ok {
		return nil, plugin.BadRequest("unknown endpoint %s", short(endpointID))
	}
	host, _ := dataplane.VethNames(endpointID)
	info := map[string]any{"address": e.info.Addr, "mac": e.info.MAC, "host_interface": host}
	if e.info.Addr6 != "" {
		info["address6"] = e.info.Addr6
	}
	if ps := parsePublishedList(e.info.Published); len(ps) > 0 {
		// In libnetwork's own form, for the engine; it reads it with a Go
		// type assertion a decoded JSON value never passes, so docker port
		// stays empty (README, "Published ports"). meshctl endpoints shows them.
		var pm []map[string]any
		for _, p := range ps {
			pm = append(pm, map[string]any{"Proto": protoNumbers[p.proto], "IP": e.info.Addr, "Port": p.port,
				"HostIP": p.hostText(), "HostPort": p.hostPort, "HostPortEnd": p.hostPort})
		}
		info[plugin.OptionPortMap] = pm
	}
	return info, nil
}

func (b networkBackend) DeleteEndpoint(ctx context.Context, networkID, endpointID string) error {
	if b.d.sandboxes != nil {
		b.d.sandboxes.Detach(endpointID) // its Leave may have been lost
	}
	if err := b.d.store.Delete(gossip.KindEndpoint, endpointID); err != nil {
		return fmt.Errorf("remove endpoint %s: %w", short(endpointID), err)
	}
	_ = b.d.reconcile(ctx)
	return nil
}

func (b networkBackend) Join(ctx context.Context, req plugin.JoinRequest) (plugin.JoinResponse, error) {
	d := b.d
	n, ok := d.ownNetworkByDockerID(req.NetworkID)
	if !ok {
		return plugin.JoinResponse{}, plugin.BadRequest("unknown network %s: it is not a meshnet network on this host", short(req.NetworkID))
	}
	if _, ok := d.ownEndpoint(req.EndpointID); !ok {
		return plugin.JoinResponse{}, plugin.BadRequest("unknown endpoint %s: create it before joining", short(req.EndpointID))
	}
	// The veth must exist before Docker moves it: apply now, not later.
	err := d.reconcile(ctx)
	_, cont := dataplane.VethNames(req.EndpointID)
	if !d.haveLink(cont) {
		return plugin.JoinResponse{}, fmt.Errorf("create the container interface %s: %v", cont, err)
	}
	if d.sandboxes != nil {
		// Now, not from the events: the container's first query may come
		// before the engine reports it started.
		d.sandboxes.Attach(req.SandboxKey, req.EndpointID, n.subnet)
	}
	// An internal network gives no default route, as Docker's bridge
	// driver does since 25 (20.10 still gave one): nothing outside the
	// subnet is reachable anyway.
	gateway, gateway6 := n.gateway, n.gateway6
	var routes []plugin.StaticRoute
	if gateway.Is6() { // an IPv6-only network: no route to the (IPv4) DNS address
		gateway, gateway6 = netip.Addr{}, gateway
	} else {
		// The DNS address is reached through this network's gateway even
		// when the container's default route goes through another network.
		routes = []plugin.StaticRoute{{
			Destination: netip.PrefixFrom(d.dnsAddr, 32),
			RouteType:   plugin.RouteNextHop,
			NextHop:     n.gateway,
		}}
	}
	if n.info.Internal {
		gateway, gateway6 = netip.Addr{}, netip.Addr{}
	}
	return plugin.JoinResponse{
		InterfaceName: plugin.InterfaceName{SrcName: cont, DstPrefix: "eth"},
		Gateway:       gateway,
		GatewayIPv6:   gateway6,
		// The engine skips internal networks when it looks for a default
		// route to add docker_gwbridge for; say it too, in case one does not.
		DisableGatewayService: n.info.Internal,
		StaticRoutes:          routes,
	}, nil
}

func (b networkBackend) Leave(ctx context.Context, networkID, endpointID string) error {
	if _, ok := b.d.ownEndpoint(endpointID); !ok {
		return plugin.BadRequest("unknown endpoint %s", short(endpointID))
	}
	if b.d.sandboxes != nil {
		b.d.sandboxes.Detach(endpointID)
	}
	// The engine revokes first; a port still published here would outlive
	// its container.
	return b.RevokeExternalConnectivity(ctx, networkID, endpointID)
}

// haveLink reports whether a link exists in the daemon's namespace. A read
// the plugin needs to answer Join truthfully; all changes go through the
// dataplane.
func (d *Daemon) haveLink(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func (d *Daemon) ownNetworkByDockerID(id string) (network, bool) {
	for _, n := range networks(d.store.Snapshot()) {
		if n.owner == d.cfg.NodeName && n.info.DockerID == id {
			return n, true
		}
	}
	return network{}, false
}

func (d *Daemon) ownEndpoint(id string) (endpoint, bool) {
	r, ok := d.store.Snapshot().Get(gossip.KindEndpoint, d.cfg.NodeName, id)
	if !ok {
		return endpoint{}, false
	}
	e, err := gossip.ParseEndpoint(r)
	if err != nil || e.MAC == nil {
		return endpoint{}, false
	}
	return endpointOf(e), true
}

func bridgeName(vni uint32) string { return "mnbr" + strconv.FormatUint(uint64(vni), 10) }

// short shortens a Docker ID for messages, as the docker CLI does.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// poolSyncWait bounds the state exchange before a pool is created: a peer
// that is up answers in milliseconds on a LAN, in well under a second
// across a WAN.
const poolSyncWait = 2 * time.Second

// ipamBackend answers Docker's IpamDriver calls from the ipam package.
type ipamBackend struct{ d *Daemon }

var _ plugin.IPAMBackend = ipamBackend{}

func (b ipamBackend) RequestPool(ctx context.Context, req plugin.PoolRequest) (plugin.PoolResponse, error) {
	if !req.Pool.IsValid() && req.V6 {
		return plugin.PoolResponse{}, plugin.BadRequest("meshnet needs an IPv6 --subnet with --ipv6: docker network create -d meshnet --ipam-driver meshnet --ipv6 --subnet 10.42.0.0/16 --subnet fd42::/64 NAME")
	}
	if !req.Pool.IsValid() {
		return plugin.PoolResponse{}, plugin.BadRequest("meshnet needs an IPv4 --subnet (an IPv6-only network needs engine 27 or newer and --ipv4=false): docker network create -d meshnet --ipam-driver meshnet --subnet 10.42.0.0/16 NAME")
	}
	if req.V6 != req.Pool.Addr().Is6() {
		want := map[bool]string{false: "an IPv4", true: "an IPv6"}[req.V6]
		return plugin.PoolResponse{}, plugin.BadRequest("subnet %s is not %s subnet, which the engine asked for: give the IPv4 subnet and, with --ipv6, the IPv6 one", req.Pool, want)
	}
	if req.SubPool.IsValid() && req.SubPool != req.Pool {
		return plugin.PoolResponse{}, plugin.BadRequest("--ip-range is not supported by meshnet's IPAM (addresses are divided among hosts): leave it out")
	}
	// Before the pool exists anywhere: a refused network leaves no record.
	if err := b.d.checkSubnetForHost(req.Pool.Masked()); err != nil {
		return plugin.PoolResponse{}, err
	}
	if !b.d.ipam.KnowsPool(req.Pool.Masked()) {
		// This host would create the pool. Another host may have created it
		// a moment ago, its record still on the way: ask two peers for
		// their state first, so that this host joins that creation rather
		// than start a rival one (which resolves, but an address handed
		// out in the losing creation meanwhile stays in another host's
		// block).
		// A peer memberlist still counts up may be cut off: its exchange
		// then waits for a TCP timeout. The create does not wait that long.
		if b.d.cluster != nil { // nil in unit tests
			synced := make(chan struct{})
			go func() {
				defer close(synced)
				b.d.cluster.SyncWithPeers(2)
			}()
			select {
			case <-synced:
			case <-time.After(poolSyncWait):
				b.d.log.Info("creating a pool without the peers' latest state: they did not answer in time", "subnet", req.Pool.Masked(), "waited", poolSyncWait)
			case <-ctx.Done():
				return plugin.PoolResponse{}, ctx.Err()
			}
		}
	}
	id, err := b.d.ipam.RequestPool(req.Pool.Masked(), req.Options)
	if err != nil {
		return plugin.PoolResponse{}, b.d.gateError(err)
	}
	return plugin.PoolResponse{PoolID: id, Pool: req.Pool.Masked()}, nil
}

func (b ipamBackend) ReleasePool(ctx context.Context, poolID string) error {
	return ipamError(b.d.ipam.ReleasePool(poolID))
}

func (b ipamBackend) RequestAddress(ctx context.Context, req plugin.AddressRequest) (plugin.AddressResponse, error) {
	p, err := b.d.ipam.RequestAddress(ctx, req.PoolID, req.Address, req.IsGateway())
	if err != nil {
		return plugin.AddressResponse{}, b.d.gateError(err)
	}
	return plugin.AddressResponse{Address: p}, nil
}

func (b ipamBackend) ReleaseAddress(ctx context.Context, poolID string, addr netip.Addr) error {
	return ipamError(b.d.ipam.ReleaseAddress(poolID, addr))
}

// ipamError passes IPAM's errors through as the caller's fault when they
// are (bad subnet, address held elsewhere): Docker shows them to the user.
func ipamError(err error) error {
	if err == nil {
		return nil
	}
	var ie *ipam.Error
	if errors.As(err, &ie) {
		return plugin.BadRequest("%v", err)
	}
	return err
}

// ProgramExternalConnectivity publishes an endpoint's -p bindings on this
// host: it picks each host port (the first free one of a range, a kernel
// ephemeral port for 0), holds it with a socket, writes the choice into
// the endpoint record (so a restart restores it) and applies the DNAT.
// A port that another container of this host publishes, or that another
// program holds, fails the call: docker run then fails with the message.
func (b networkBackend) ProgramExternalConnectivity(ctx context.Context, req plugin.ExternalConnectivityRequest) error {
	d := b.d
	d.endpointsMu.Lock()
	defer d.endpointsMu.Unlock()
	e, ok := d.ownEndpoint(req.EndpointID)
	if !ok {
		return plugin.BadRequest("unknown endpoint %s", short(req.EndpointID))
	}
	if n, ok := d.ownNetworkByDockerID(req.NetworkID); ok && n.info.Internal {
		// The engine does not call this for internal networks; if it
		// did, an internal network still publishes nothing.
		d.log.Info("not publishing ports on an internal network", "endpoint", short(req.EndpointID), "ports", len(req.Ports))
		return nil
	} else if ok && n.subnet.Addr().Is6() && len(req.Ports) > 0 {
		// Published ports are IPv4 (README, "IPv6"): a container with no
		// IPv4 address has nothing to forward them to.
		d.log.Info("not publishing ports of a container on an IPv6-only network", "endpoint", short(req.EndpointID), "ports", len(req.Ports))
		return nil
	}
	old := parsePublishedList(e.info.Published)
	d.ports.release(old...)
	var users []portUser
	for _, o := range endpoints(d.store.Snapshot(), false) {
		if o.owner != d.cfg.NodeName || o.id == req.EndpointID {
			continue
		}
		for _, p := range parsePublishedList(o.info.Published) {
			users = append(users, portUser{p: p, container: o.info.Container})
		}
	}
	var chosen []published
	for _, pb := range req.Ports {
		if pb.HostIP.IsValid() && !pb.HostIP.Is4() {
			// meshnet networks are IPv4: an IPv6 host address (newer
			// engines send "::" beside 0.0.0.0) has nothing to reach.
			d.log.Debug("not publishing on an IPv6 host address", "binding", pb.String())
			continue
		}
		p, err := choosePort(d.ports, pb, users)
		if err != nil {
			d.ports.release(chosen...)
			if errors.Is(err, errPortTaken) || errors.Is(err, errCannotBind) {
				return plugin.BadRequest("publish %s: %v", pb, err)
			}
			return fmt.Errorf("publish %s: %w", pb, err)
		}
		chosen = append(chosen, p)
		users = append(users, portUser{p: p, container: e.info.Container})
	}
	defer d.ports.done(chosen...)
	e.info.Published = publishedStrings(chosen)
	if _, err := d.store.Put(gossip.KindEndpoint, req.EndpointID, e.info); err != nil {
		d.ports.release(chosen...)
		return fmt.Errorf("record the published ports of endpoint %s: %w", short(req.EndpointID), err)
	}
	if len(chosen) > 0 {
		d.log.Info("published ports", "endpoint", short(req.EndpointID), "ports", e.info.Published)
	}
	if err := d.reconcile(ctx); err != nil {
		// The record stands: the next pass retries, and the container
		// itself is fine. Say so rather than fail the start.
		d.log.Warn("published ports not fully applied yet", "endpoint", short(req.EndpointID), "err", err)
	}
	return nil
}

// RevokeExternalConnectivity withdraws an endpoint's published ports.
func (b networkBackend) RevokeExternalConnectivity(ctx context.Context, networkID, endpointID string) error {
	d := b.d
	d.endpointsMu.Lock()
	defer d.endpointsMu.Unlock()
	e, ok := d.ownEndpoint(endpointID)
	if !ok || len(e.info.Published) == 0 {
		return nil // nothing published: revokes are idempotent
	}
	ps := parsePublishedList(e.info.Published)
	e.info.Published = nil
	if _, err := d.store.Put(gossip.KindEndpoint, endpointID, e.info); err != nil {
		return fmt.Errorf("remove the published ports of endpoint %s: %w", short(endpointID), err)
	}
	_ = d.reconcile(ctx)
	d.ports.release(ps...)
	d.log.Info("unpublished ports", "endpoint", short(endpointID), "ports", publishedStrings(ps))
	return nil
}

// ipv6Half checks the IPv6 part of a CreateNetwork: none, or exactly one
// IPv6 subnet from meshnet's IPAM with its gateway, beside the IPv4 one.
func (d *Daemon) ipv6Half(req plugin.CreateNetworkRequest) (netip.Prefix, netip.Addr, error) {
	const how = "docker network create -d meshnet --ipam-driver meshnet --ipv6 --subnet 10.42.0.0/16 --subnet fd42::/64 NAME"
	switch {
	case len(req.IPv6Data) == 0 && req.EnableIPv6:
		return netip.Prefix{}, netip.Addr{}, plugin.BadRequest("--ipv6 needs an IPv6 --subnet beside the IPv4 one: %s", how)
	case len(req.IPv6Data) == 0:
		return netip.Prefix{}, netip.Addr{}, nil
	case len(req.IPv6Data) > 1:
		return netip.Prefix{}, netip.Addr{}, plugin.BadRequest("a meshnet network has at most one IPv6 subnet, got %d: %s", len(req.IPv6Data), how)
	}
	return d.checkPool(req.IPv6Data[0], true, false)
}

// checkPool checks one family's pool of a CreateNetwork, the network's identity or (not
// identity) the IPv6 half of a dual-stack one: it comes from meshnet's IPAM, is a prefix
// of the family asked for, holds its gateway, and may be a network on this host. It
// returns the subnet and gateway.
func (d *Daemon) checkPool(data plugin.IPAMData, ipv6, identity bool) (netip.Prefix, netip.Addr, error) {
	how := "docker network create -d meshnet --ipam-driver meshnet --subnet 10.42.0.0/16 NAME"
	what := "a meshnet network needs one IPv4 subnet (or one IPv6 subnet with --ipv4=false)"
	if !identity {
		how = "docker network create -d meshnet --ipam-driver meshnet --ipv6 --subnet 10.42.0.0/16 --subnet fd42::/64 NAME"
		what = "the IPv6 subnet must be an IPv6 prefix"
	}
	if data.AddressSpace != plugin.LocalAddressSpace && data.AddressSpace != plugin.GlobalAddressSpace {
		return netip.Prefix{}, netip.Addr{}, plugin.BadRequest("network addresses come from IPAM address space %q, not meshnet's: without --ipam-driver meshnet, two hosts hand out the same addresses. Create it with --ipam-driver meshnet", data.AddressSpace)
	}
	subnet := data.Pool.Masked()
	// The engine never sends these; a caller that does must not get a
	// network record the rest of the cluster cannot parse or route.
	if !subnet.IsValid() || subnet.Addr().Is6() != ipv6 || subnet.Addr().Is4In6() {
		return netip.Prefix{}, netip.Addr{}, plugin.BadRequest("%s, got %q: %s", what, data.Pool, how)
	}
	if !data.Gateway.IsValid() {
		return netip.Prefix{}, netip.Addr{}, plugin.BadRequest("network %s has no gateway address; meshnet's IPAM always gives one — was it created with --ipam-driver meshnet?", subnet)
	}
	if !subnet.Contains(data.Gateway.Addr()) {
		return netip.Prefix{}, netip.Addr{}, plugin.BadRequest("gateway %s is outside the subnet %s: leave --gateway out, or give an address inside the subnet", data.Gateway.Addr(), subnet)
	}
	if err := d.checkSubnetForHost(subnet); err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	return subnet, data.Gateway.Addr(), nil
}
