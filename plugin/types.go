package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Keys Docker puts in request option maps, and the one it reads back from pool data.
const (
	// OptionGeneric holds the user's `docker network create -o k=v` options in CreateNetwork.
	OptionGeneric = "com.docker.network.generic"
	// OptionEnableIPv6 is the --ipv6 flag in CreateNetwork options.
	OptionEnableIPv6 = "com.docker.network.enable_ipv6"
	// OptionInternal is the --internal flag in CreateNetwork options.
	OptionInternal = "com.docker.network.internal"

	// OptionRequestAddressType is the RequestAddress option naming what the address is for;
	// RequestAddressTypeGateway marks the network's gateway.
	OptionRequestAddressType  = "RequestAddressType"
	RequestAddressTypeGateway = "com.docker.network.gateway"

	// PoolDataGateway, set in PoolResponse.Data to "A.B.C.D/M", tells the engine the pool's
	// gateway: it then skips its gateway RequestAddress (unless the user gave --gateway).
	PoolDataGateway = "com.docker.network.gateway"
)

// Fixed protocol answers.
const (
	// LocalAddressSpace and GlobalAddressSpace are meshnet's default IPAM address spaces.
	LocalAddressSpace  = "meshnet-local"
	GlobalAddressSpace = "meshnet-global"

	// requiresRequestReplay is false: meshnet's IPAM persists its own allocations. With replay on,
	// the engine re-requests every pool and every endpoint address at its start; RequestAddress
	// carries no endpoint ID, so the IPAM could not tell a replay of an address it already handed
	// out from a second container asking for the same --ip, and would have to either fail the
	// replay or accept duplicates. Replay would also make every engine start wait on the plugin.
	requiresRequestReplay = false
)

// IPAMData is one address pool of a network as the engine passes it to CreateNetwork.
type IPAMData struct {
	AddressSpace string
	Pool         netip.Prefix // the subnet, e.g. 10.42.0.0/16
	Gateway      netip.Prefix // the gateway address with the pool's mask, e.g. 10.42.0.1/16; zero if none
	AuxAddresses map[string]netip.Prefix
}

// CreateNetworkRequest is NetworkDriver.CreateNetwork. The network's name and labels are not
// part of the protocol: learn them from the Watcher.
type CreateNetworkRequest struct {
	NetworkID string
	// Options are the user's -o options (Docker's "com.docker.network.generic"), values as text.
	Options    map[string]string
	Internal   bool // --internal
	EnableIPv6 bool // --ipv6
	IPv4Data   []IPAMData
	IPv6Data   []IPAMData
}

// EndpointInterface is an endpoint's addresses. In a CreateEndpoint request a zero field means
// "not assigned"; in the reply the backend may fill only those fields.
type EndpointInterface struct {
	Address     netip.Prefix // IPv4 address with the pool's mask
	AddressIPv6 netip.Prefix
	MacAddress  net.HardwareAddr
}

// CreateEndpointRequest is NetworkDriver.CreateEndpoint. Container names are not part of it.
type CreateEndpointRequest struct {
	NetworkID  string
	EndpointID string
	Interface  EndpointInterface
	Options    map[string]any // raw, e.g. "com.docker.network.endpoint.exposedports"
}

// JoinRequest is NetworkDriver.Join: put the endpoint into the sandbox at SandboxKey.
type JoinRequest struct {
	NetworkID  string
	EndpointID string
	SandboxKey string // path of the container's network namespace
	Options    map[string]any
}

// InterfaceName names the link the engine moves into the container (SrcName) and the prefix of
// its name inside (DstPrefix, the engine appends a number: "eth" → eth0).
type InterfaceName struct {
	SrcName   string
	DstPrefix string
}

// RouteType says how a StaticRoute reaches its destination.
type RouteType int

const (
	RouteNextHop   RouteType = 0 // through NextHop
	RouteConnected RouteType = 1 // on the endpoint's link; no NextHop
)

// StaticRoute is a route the engine adds inside the container.
type StaticRoute struct {
	Destination netip.Prefix
	RouteType   RouteType
	NextHop     netip.Addr // only for RouteNextHop
}

// JoinResponse answers Join. InterfaceName.SrcName is required.
type JoinResponse struct {
	InterfaceName InterfaceName
	Gateway       netip.Addr // default route; zero for none
	GatewayIPv6   netip.Addr
	StaticRoutes  []StaticRoute
	// DisableGatewayService stops the engine from adding a docker_gwbridge interface when the
	// endpoint gives the container no default route.
	DisableGatewayService bool
}

// PoolRequest is IpamDriver.RequestPool. Identical requests must get the same pool back.
type PoolRequest struct {
	AddressSpace string
	Pool         netip.Prefix // --subnet; zero if the user gave none
	SubPool      netip.Prefix // --ip-range; zero if none
	Options      map[string]string
	V6           bool
}

// PoolResponse answers RequestPool.
type PoolResponse struct {
	PoolID string
	Pool   netip.Prefix
	Data   map[string]string // see PoolDataGateway
}

// AddressRequest is IpamDriver.RequestAddress.
type AddressRequest struct {
	PoolID  string
	Address netip.Addr // a specific address (--ip, --gateway, replays); zero for "any"
	Options map[string]string
}

// IsGateway reports whether the engine asks for the network's gateway address.
func (r AddressRequest) IsGateway() bool {
	return r.Options[OptionRequestAddressType] == RequestAddressTypeGateway
}

// AddressResponse answers RequestAddress. Address carries the pool's mask: 10.42.0.5/16.
type AddressResponse struct {
	Address netip.Prefix
	Data    map[string]string
}

// NetworkBackend implements the network driver. The handler calls it from the engine's requests.
//
// Every method must return quickly and must never call the Docker API: the engine holds locks
// while it waits for the plugin, and a plugin that calls back into the engine deadlocks it
// (worst at engine start, with containers to restart). Answer from local state; learn names
// and labels from the Watcher instead. Methods are called concurrently.
type NetworkBackend interface {
	CreateNetwork(ctx context.Context, req CreateNetworkRequest) error
	DeleteNetwork(ctx context.Context, networkID string) error
	// CreateEndpoint may fill fields of the interface that were zero in the request; the
	// handler drops any other field it returns (the engine would fail "driver modified interface").
	CreateEndpoint(ctx context.Context, req CreateEndpointRequest) (EndpointInterface, error)
	// EndpointInfo returns operational data shown by `docker network inspect`; nil is fine.
	EndpointInfo(ctx context.Context, networkID, endpointID string) (map[string]any, error)
	DeleteEndpoint(ctx context.Context, networkID, endpointID string) error
	Join(ctx context.Context, req JoinRequest) (JoinResponse, error)
	Leave(ctx context.Context, networkID, endpointID string) error
	// ProgramExternalConnectivity publishes the endpoint's ports: the engine calls it when the
	// endpoint becomes its container's gateway endpoint (never on --internal networks).
	ProgramExternalConnectivity(ctx context.Context, req ExternalConnectivityRequest) error
	// RevokeExternalConnectivity withdraws what ProgramExternalConnectivity published.
	RevokeExternalConnectivity(ctx context.Context, networkID, endpointID string) error
}

// IPAMBackend implements the IPAM driver, under the same rules as NetworkBackend.
type IPAMBackend interface {
	RequestPool(ctx context.Context, req PoolRequest) (PoolResponse, error)
	ReleasePool(ctx context.Context, poolID string) error
	RequestAddress(ctx context.Context, req AddressRequest) (AddressResponse, error)
	ReleaseAddress(ctx context.Context, poolID string, address netip.Addr) error
}

// RequestError marks an error as the caller's fault (a bad request: wrong options, a subnet that
// overlaps, malformed JSON). The handler replies 400 to it and 500 to any other error; the
// message reaches the user through the engine either way, so say what to do.
type RequestError struct {
	Err error
}

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// BadRequest returns a RequestError with a formatted message (%w works).
func BadRequest(format string, args ...any) error {
	return &RequestError{Err: fmt.Errorf(format, args...)}
}

// IsBadRequest reports whether err, or an error it wraps, is a RequestError.
func IsBadRequest(err error) bool {
	var re *RequestError
	return errors.As(err, &re)
}
