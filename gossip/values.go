package gossip

import (
	"slices"
	"strings"
	"time"
)

// The wire values of meshnet's shared record kinds, as JSON in
// Record.Value. Their decoding and checks are in decode.go, ipam's kinds'
// values in ipamvalues.go. Changing a JSON name or a value's meaning breaks
// mixed-version clusters (decode_test.go holds today's encodings).

// NodeInfo is a node's KindNode record (ID ""): the facts others need to
// reach it.
type NodeInfo struct {
	// Addr is the underlay address tunnels are sent to.
	Addr string `json:"addr"`
	// GossipPort is the memberlist port, for rejoining after a partition.
	GossipPort int `json:"gossip_port,omitempty"`
	// WireGuardKey and WireGuardPort describe the WireGuard endpoint.
	WireGuardKey  string `json:"wireguard_key,omitempty"`
	WireGuardPort int    `json:"wireguard_port,omitempty"`
	// NodeKey is the node's Ed25519 public key (base64), which signs
	// every record it writes (trust.go). Empty on nodes from before
	// records were signed.
	NodeKey string    `json:"node_key,omitempty"`
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
	// Features are what this node's meshnetd does that older ones do not
	// and peers must know before they rely on it (FeatureMeshProbe).
	Features []string `json:"features,omitempty"`
}

// FeatureMeshProbe: the node takes routing-mesh connections from entry
// hosts over the probe device (dataplane/mesh.go); older nodes take them
// only bridged from the overlay.
const FeatureMeshProbe = "mesh-probe"

// Has reports whether the node record lists feature f.
func (n NodeInfo) Has(f string) bool { return slices.Contains(n.Features, f) }

// NetworkInfo is a KindNetwork record (ID = subnet): the owner has this
// meshnet network. Every node that has the network writes its own record;
// they must agree on everything but Name.
type NetworkInfo struct {
	Subnet    string            `json:"subnet"`
	Gateway   string            `json:"gateway"`
	VNI       uint32            `json:"vni"`
	Dataplane string            `json:"dataplane"`
	MTU       int               `json:"mtu,omitempty"`
	Options   map[string]string `json:"options,omitempty"`
	// Subnet6 and Gateway6 are a dual-stack network's IPv6 subnet and
	// gateway (docker network create --ipv6 with an IPv4 and an IPv6
	// --subnet). Subnet stays the IPv4 one, the network's identity. An
	// IPv6-only network has its IPv6 subnet in Subnet and nothing here.
	Subnet6  string `json:"subnet6,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
	// IPv6Egress is how IPv6 leaves a dual-stack network: "" (NAT66,
	// masqueraded to the host's address) or IPv6EgressRouted.
	IPv6Egress string `json:"ipv6_egress,omitempty"`
	// Internal is docker network create --internal: containers reach only
	// the network itself, nothing is masqueraded or published.
	Internal bool `json:"internal,omitempty"`
	// Name is the Docker network name on the owner (learned from events;
	// may differ between hosts).
	Name string `json:"name,omitempty"`
	// DockerID is the Docker network ID on the owner.
	DockerID string    `json:"docker_id,omitempty"`
	Created  time.Time `json:"created"`
}

// HasIPv6 reports whether the network carries IPv6: dual-stack, or IPv6-only. It reads
// the strings as written; ParseNetwork is what checks them.
func (n NetworkInfo) HasIPv6() bool {
	return n.Subnet6 != "" || strings.Contains(n.Subnet, ":")
}

// EndpointInfo is a KindEndpoint record (ID = Docker endpoint ID): a
// container's interface on the owner.
type EndpointInfo struct {
	Subnet string `json:"subnet"`
	Addr   string `json:"addr"`
	// Subnet6 and Addr6 are the endpoint's IPv6 subnet and address on a
	// dual-stack network; "" on a single-family network.
	Subnet6   string   `json:"subnet6,omitempty"`
	Addr6     string   `json:"addr6,omitempty"`
	MAC       string   `json:"mac"`
	Container string   `json:"container,omitempty"`
	Network   string   `json:"network,omitempty"` // Docker network name
	Services  []string `json:"services,omitempty"`
	// Ports are the container's exposed ports, "80/tcp", for SRV answers.
	Ports []string `json:"ports,omitempty"`
	// Published are the container's ports published on the owner's
	// addresses (docker run -p), "hostIP:hostPort:containerPort/proto"
	// with hostIP 0.0.0.0 for every address. Kept here so that a
	// restarted daemon restores them (the engine never asks again) and
	// the cluster can see them.
	Published []string `json:"published,omitempty"`
	// Healthy is false while the container is paused or stopped: the
	// address stays allocated, DNS stops answering with it.
	Healthy bool `json:"healthy"`
	// EndpointMode is the container's meshnet.endpoint-mode label: "vip"
	// gives its services a virtual address balanced in the kernel
	// (daemon/vip.go); anything else is DNS round robin.
	EndpointMode string `json:"endpoint_mode,omitempty"`
	// MeshPublish are the container's meshnet.publish ports, published on
	// every host of the network by the routing mesh (daemon/mesh.go):
	// "hostPort:targetPort/proto".
	MeshPublish []string `json:"mesh_publish,omitempty"`
	// MeshPreferLocal is meshnet.publish-prefer=local: a host with
	// replicas of its own sends what enters there to those only.
	MeshPreferLocal bool `json:"mesh_prefer_local,omitempty"`
}

// IPv6Egress values. An empty IPv6Egress means IPv6EgressNAT.
const (
	IPv6EgressNAT    = "nat"
	IPv6EgressRouted = "routed"
)

// Removal is a KindRemoval record (ID = removed node's name).
type Removal struct {
	// UpTo: the removed node's records at or below this version stop
	// counting. A node that returns after removal writes above it.
	UpTo uint64    `json:"up_to"`
	At   time.Time `json:"at"`
	By   string    `json:"by"`
}

// VIPInfo is the value of a KindVIP record.
type VIPInfo struct {
	Subnet  string `json:"subnet"`
	Service string `json:"service"`
	Addr    string `json:"addr"`
}
