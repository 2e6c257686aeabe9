package control

import "time"

// Peer is one node as the local daemon sees it (meshctl peers).
type Peer struct {
	Name    string    `json:"name"`
	Address string    `json:"address"`
	State   string    `json:"state"` // alive|suspect|dead|left
	Since   time.Time `json:"since"`
	Self    bool      `json:"self"`
	// Removed is set for a node an operator removed (meshctl rmpeer) that
	// memberlist still remembers.
	Removed bool `json:"removed,omitempty"`
	// DataPath is what the data-path probes see through the tunnels
	// themselves (up|down|unknown), the worst of Tunnels; empty for this
	// node and for nodes it does not probe (no network of the same subnet
	// and kind in common). Gossip state and data path are independent:
	// alive + down is a blocked tunnel port, dead + up a daemon that is
	// down while its host still carries traffic.
	DataPath string `json:"data_path,omitempty"`
	// DataPathSince is when DataPath last changed.
	DataPathSince time.Time `json:"data_path_since,omitzero"`
	// RTTSeconds is the last probe's round trip while DataPath is up.
	RTTSeconds float64 `json:"rtt_seconds,omitempty"`
	// Tunnels is the data path through each tunnel probed (vxlan first).
	Tunnels []TunnelPath `json:"tunnels,omitempty"`
}

// TunnelPath is the data path to a peer through one tunnel.
type TunnelPath struct {
	Tunnel     string    `json:"tunnel"` // vxlan|wireguard
	State      string    `json:"state"`  // up|down|unknown
	Since      time.Time `json:"since"`
	RTTSeconds float64   `json:"rtt_seconds,omitempty"`
}

// Status summarises the daemon (meshctl status).
type Status struct {
	Node           string        `json:"node"`
	Version        string        `json:"version"`
	Address        string        `json:"address"`
	GossipPort     int           `json:"gossip_port"`
	Encrypted      bool          `json:"encrypted"`
	Started        time.Time     `json:"started"`
	Members        MemberCounts  `json:"members"`
	Networks       int           `json:"networks"`
	LocalEndpoints int           `json:"local_endpoints"`
	Dataplane      DataplaneInfo `json:"dataplane"`
	DNS            DNSInfo       `json:"dns"`
	Engine         EngineInfo    `json:"engine"`
	IPAM           []PoolUsage   `json:"ipam"`
	Conflicts      []Conflict    `json:"conflicts"`
	// JoinedCluster says when and how the node first heard from its
	// cluster; nil while it has not, and creates no network until then.
	JoinedCluster *JoinInfo `json:"joined_cluster,omitempty"`
	// Refused counts the peers' records this node refused (forged,
	// invalid, too far ahead of its clock), by reason; each owner and
	// reason is logged once, these count every one. Records in the store
	// that the typed record view leaves out (gossip.View) are counted too,
	// under reasons that start "left out of the record view: ".
	Refused  RefusedRecords `json:"refused_records"`
	Problems []string       `json:"problems"`
}

// JoinInfo is when and how a node first heard from its cluster.
type JoinInfo struct {
	At  time.Time `json:"at"`
	How string    `json:"how"`
}

// RefusedRecords counts refused records since the daemon started.
type RefusedRecords struct {
	Total    uint64            `json:"total"`
	ByReason map[string]uint64 `json:"by_reason,omitempty"`
	// UnsignedAccepted counts records accepted without a signature from
	// nodes not yet upgraded to signing.
	UnsignedAccepted uint64 `json:"unsigned_accepted"`
}

// MemberCounts counts peers by state.
type MemberCounts struct {
	Alive   int `json:"alive"`
	Suspect int `json:"suspect"`
	Dead    int `json:"dead"`
	Left    int `json:"left"`
}

// DataplaneInfo says what programs the kernel and how the last apply went.
type DataplaneInfo struct {
	Default     string    `json:"default"`
	LastApply   time.Time `json:"last_apply"`
	LastError   string    `json:"last_error,omitempty"`
	Applies     uint64    `json:"applies"`
	Description string    `json:"description,omitempty"`
	// BridgeBypass says whether vxlan traffic between containers is
	// handed past the host's bridge, in which mode, and what keeps an
	// auto bypass off (dataplane.BypassStatus).
	BridgeBypass string `json:"bridge_bypass,omitempty"`
	// BridgeBypassOn: the last apply handed that traffic past the bridge.
	BridgeBypassOn bool `json:"bridge_bypass_on"`
	// BridgeBypassFrames counts the frames handed past the bridge since
	// meshnetd started: to other hosts, and into containers here.
	BridgeBypassFrames *BypassFrames `json:"bridge_bypass_frames,omitempty"`
	// WireGuard is the host's WireGuard device (wireguard networks).
	WireGuard *WireGuardInfo `json:"wireguard,omitempty"`
}

// WireGuardInfo says which WireGuard is in use and why, and its peers.
type WireGuardInfo struct {
	// Mode is "kernel", "userspace" (embedded wireguard-go), or "" when no
	// device runs; Reason says why (or why it could not start).
	Mode      string          `json:"mode"`
	Reason    string          `json:"reason,omitempty"`
	Offloads  string          `json:"offloads,omitempty"`
	Device    string          `json:"device,omitempty"`
	PublicKey string          `json:"public_key"`
	Port      int             `json:"port,omitempty"`
	Peers     []WireGuardPeer `json:"peers"`
}

// WireGuardPeer is one peer of the WireGuard device.
type WireGuardPeer struct {
	Node          string    `json:"node,omitempty"`
	PublicKey     string    `json:"public_key"`
	Endpoint      string    `json:"endpoint,omitempty"`
	AllowedIPs    []string  `json:"allowed_ips"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	RxBytes       int64     `json:"rx_bytes"`
	TxBytes       int64     `json:"tx_bytes"`
}

// DNSInfo describes the embedded DNS server.
type DNSInfo struct {
	Addr   string `json:"addr"`
	Domain string `json:"domain"`
	Error  string `json:"error,omitempty"`
	// Containers is the DNS in each local container's namespace
	// (--container-dns); nil when it is off.
	Containers *ContainerDNSInfo `json:"containers,omitempty"`
}

// ContainerDNSInfo counts the containers whose queries to 127.0.0.11
// meshnet answers first, and those it could not set up (they use
// Docker's resolver alone: local replicas only).
type ContainerDNSInfo struct {
	Serving int      `json:"serving"`
	Waiting int      `json:"waiting"`
	Failed  []string `json:"failed,omitempty"` // "sandbox key: why"
	// VIPClients is how many containers balance service VIPs in their own
	// namespace; VIPFailed those whose VIP table could not be written
	// ("sandbox key: why"), whose connections the host's table balances.
	VIPClients int      `json:"vip_clients"`
	VIPFailed  []string `json:"vip_failed,omitempty"`
}

// EngineInfo is how the daemon follows the Docker engine (its event stream, for
// container names, services and the leak sweep).
type EngineInfo struct {
	// Connected: the event stream is followed and the last listing succeeded.
	Connected bool `json:"connected"`
	// Since is when Connected last changed.
	Since time.Time `json:"since,omitzero"`
	// APIVersion is the Engine API version in use, the lower of the engine's
	// (EngineAPIVersion) and the newest meshnet knows.
	APIVersion       string `json:"api_version,omitempty"`
	EngineAPIVersion string `json:"engine_api_version,omitempty"`
	// LastError is why the last connection failed or ended, at LastErrorAt.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// PoolUsage is one address pool's use on each node.
type PoolUsage struct {
	Subnet  string      `json:"subnet"`
	Gateway string      `json:"gateway"`
	Nodes   []NodeUsage `json:"nodes"`
}

// NodeUsage is one node's share of a pool.
type NodeUsage struct {
	Node      string `json:"node"`
	Blocks    int    `json:"blocks"`
	Owned     int    `json:"owned"`     // addresses in owned blocks
	Allocated int    `json:"allocated"` // addresses in use
}

// Conflict is an address that ended up held by two nodes.
type Conflict struct {
	Subnet string   `json:"subnet"`
	Addr   string   `json:"addr"`
	Nodes  []string `json:"nodes"`
}

// Network is one meshnet network (meshctl networks).
type Network struct {
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
	// Subnet6 and Gateway6 are a dual-stack network's IPv6 half.
	Subnet6   string   `json:"subnet6,omitempty"`
	Gateway6  string   `json:"gateway6,omitempty"`
	VNI       uint32   `json:"vni"`
	Dataplane string   `json:"dataplane"`
	MTU       int      `json:"mtu"`
	Internal  bool     `json:"internal,omitempty"` // --internal
	Names     []string `json:"names"`              // Docker network names, per host
	Nodes     []string `json:"nodes"`              // hosts that have it
	Endpoints int      `json:"endpoints"`
	// Blocks are the address blocks of its subnets, both families'.
	Blocks []Block `json:"blocks"`
}

// Block is an address block and its owner.
type Block struct {
	Prefix string `json:"prefix"`
	Owner  string `json:"owner"`
	State  string `json:"state,omitempty"`
}

// Endpoint is one container endpoint (meshctl endpoints).
type Endpoint struct {
	ID        string   `json:"id"`
	Container string   `json:"container"`
	Network   string   `json:"network"`
	Subnet    string   `json:"subnet"`
	Addr      string   `json:"addr"`
	Addr6     string   `json:"addr6,omitempty"` // on a dual-stack network
	MAC       string   `json:"mac"`
	Node      string   `json:"node"`
	NodeAddr  string   `json:"node_addr"`
	Services  []string `json:"services"`
	Healthy   bool     `json:"healthy"`
	Up        bool     `json:"up"` // its node is alive or suspect
	// Published are the ports published on its node's addresses,
	// "hostIP:hostPort:containerPort/proto" (docker port cannot show a
	// remote driver's).
	Published []string `json:"published,omitempty"`
}

// Service is a service name and its replicas (meshctl services).
type Service struct {
	Name string `json:"name"`
	// Replicas are the healthy replicas of up nodes: what DNS and the
	// VIPs hand out.
	Replicas []Endpoint `json:"replicas"`
	// Mode is "vip" when any replica asks for a VIP
	// (meshnet.endpoint-mode=vip), else "dnsrr".
	Mode string `json:"mode"`
	// VIPs are the service's virtual addresses, one per network.
	VIPs []ServiceVIP `json:"vips,omitempty"`
	// Unavailable are replicas not handed out: stopped, unhealthy, or on
	// a node that is down.
	Unavailable []Endpoint `json:"unavailable,omitempty"`
	// Published are the service's ports published on every host of its
	// network by the routing mesh (label meshnet.publish).
	Published []ServicePort `json:"published,omitempty"`
}

// ServicePort is one routing-mesh port of a service.
type ServicePort struct {
	Proto      string `json:"proto"`
	HostPort   int    `json:"host_port"`
	TargetPort int    `json:"target_port"`
	Subnet     string `json:"subnet"`
	Network    string `json:"network,omitempty"`
	// Backends is how many healthy replicas the port spreads over.
	Backends int `json:"backends"`
	// PreferLocal: a host with replicas of its own keeps what enters
	// there on them (meshnet.publish-prefer=local).
	PreferLocal bool `json:"prefer_local,omitempty"`
}

// ServiceVIP is a service's virtual address on one network.
type ServiceVIP struct {
	Subnet  string `json:"subnet"`
	Network string `json:"network,omitempty"`
	Addr    string `json:"addr"`
	Owner   string `json:"owner"` // the node whose IPAM holds it
}

// Lookup is what the DNS server would answer (meshctl lookup).
type Lookup struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Rcode   string   `json:"rcode"`
	Answers []string `json:"answers"`
}

// Version is the daemon's build.
type Version struct {
	Version string `json:"version"`
	Go      string `json:"go"`
}

// Error is the body of every non-2xx reply.
type Error struct {
	Error string `json:"error"`
}

// RemovePeerRequest asks the daemon to remove a dead node.
type RemovePeerRequest struct {
	Node string `json:"node"`
	// Force removes the node even while a live node still sees it alive
	// (the operator knows it is gone, or is ready for its addresses to be
	// held twice).
	Force bool `json:"force,omitempty"`
}

// BypassFrames counts the frames the bridge bypass handed past the bridge.
type BypassFrames struct {
	ToOtherHosts uint64 `json:"to_other_hosts"`
	ToContainers uint64 `json:"to_containers"`
}
