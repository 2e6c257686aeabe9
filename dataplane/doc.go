// Package dataplane is meshnet's kernel boundary: it turns a desired State (the
// networks, this host's containers, the other hosts' containers) into bridges,
// veths, VXLAN devices, FDB and neighbour entries, WireGuard devices, peers and
// routes, sysctls and firewall rules.
// It knows nothing of gossip or Docker; the rest of meshnet never sees netlink.
//
// # Shape
//
// One small interface, Dataplane{Apply, PublicKey, WireGuardStatus, Close},
// in the manner of tailscale's router: Apply takes the whole desired State
// every time, not events. One implementation, Kernel (New): vxlan networks,
// and, when Options.WireGuard holds a key, wireguard networks over one
// WireGuard device that it drives through the wgDevice boundary (the kernel
// module or the embedded wireguard-go, wgdevice.go); both kinds of network
// coexist on one host. Without a key, wireguard networks are reported and
// left alone and PublicKey is "". The daemon reads the WireGuard key and
// status through the interface, never the type. The
// reconciler calls it on every change and on a timer, so a missed event or a
// hand-made change in the kernel is repaired by the next call (flannel's vxlan
// backend, which only reacts to events, keeps a missed delete forever).
//
// Apply is split in two halves. The pure half (model.go, the rule building in
// firewall.go) compiles a State into the kernel objects it implies and diffs
// that against a snapshot of the kernel into steps; it is unit-tested without
// root, including every transition between a set of states on a simulated
// kernel. The netlink half (kernel.go, vxlan.go) reads the kernel into the same
// model and executes the steps.
//
// # What Apply promises
//
//   - Idempotent: a second Apply of the same State writes nothing (no netlink
//     notification at all); devices that already match are adopted, never
//     flapped, so a restarted daemon does not interrupt running containers.
//     Attributes that can change in place (MTU, master, up, bridge MAC) are
//     changed in place; a vxlan device is recreated only when its VNI, port,
//     local address or flags differ, which the kernel cannot change live.
//   - Adds before deletes: devices, addresses, FDB and neighbour entries and
//     accept rules are created first; what is no longer wanted is computed from
//     a fresh read of the kernel and deleted last. A veth moves to its new bridge
//     before the old bridge goes; a remote that moved host is rewritten, never
//     missing in between.
//   - Replace, do not fail: entries are written with NLM_F_REPLACE semantics, so
//     an entry the kernel learned or someone else wrote with other values is
//     overwritten, not an error.
//   - Keep going: every failure is collected and returned with errors.Join; one
//     bad network or entry does not stop the others. A network that fails
//     validation is reported and its existing devices are left alone (neither
//     changed nor deleted), so a bad record upstream cannot cut running
//     containers off.
//   - State.HoldDeletes makes Apply add and change only: a caller that does
//     not know yet which kernel objects are stale (a daemon started with an
//     empty state folder while containers run, or restarted and not yet
//     told the cluster's state) keeps them instead of cutting running
//     containers off. That includes the WireGuard device's peers: none is
//     removed and none loses an allowed prefix while deletes are held, and
//     a restarted daemon adopts the peers it finds instead of writing them
//     again (wgpeers.go). Both were found by a ping every 10 ms across a
//     restart with the kernel module (e2e TestKernelWireGuardNoLoss): 38 and
//     83 pings lost, then none.
//   - Close removes nothing: containers keep talking while the daemon restarts
//     or is down. Teardown removes everything meshnet made (`meshnetd --cleanup`).
//
// Everything meshnet creates has a prefix — bridges mnbr<VNI>, vxlan devices
// mnvx<VNI>, host veths mnh<endpoint-id>, container veths mnc<endpoint-id>,
// the WireGuard device mnwg0, routes with protocol 109, tables inet meshnet
// and bridge meshnet, rule comments "meshnet: ..." — which is how a new run
// finds what an old one left, and how it knows what it may delete.
//
// # Each container receives only its own unicast
//
// Each vxlan device has learning off and proxy (ARP/ND reply) on. For every
// remote container Apply writes a permanent FDB entry on the vxlan device
// (MAC → remote VTEP, NTF_SELF) and a permanent neighbour entry (IP → MAC).
// A container's ARP request is then answered by the local vxlan device from
// its neighbour table, and a frame to a remote MAC is unicast straight to the
// host holding it; no multicast underlay is needed. Kernel miss callbacks
// (l2miss/l3miss), flannel's original design and Docker's overlay, need a
// daemon answering in the packet path: the first packet to a new peer waits
// for it, and when the daemon is down nothing resolves. Static entries keep
// working with the daemon stopped, and flannel moved to them for the same
// reasons.
//
// That entry alone is not enough: the vxlan device's table is consulted only
// once a frame reaches the vxlan port, and the bridge decides that from its
// own table. A bridge that learns and floods sends a frame for a MAC it has
// not learned to every port, so each container saw its neighbours' traffic
// to other hosts, and a container sending with a remote container's MAC made
// the bridge learn that MAC on its port and drew that traffic to itself
// (issue 15). So the bridge's table is static too (brfdb.go): Apply writes,
// for every container of the network, an entry of the bridge itself
// (NTF_MASTER, static, not permanent, which would mean "the host's own
// address"): a local container's MAC on its veth, a remote container's MAC
// on the vxlan port. Both tables are reconciled from the full State like
// everything else; an entry the bridge learned, or one on the wrong port, is
// replaced, and one for a MAC no container has is deleted.
//
// Every meshnet bridge port has learning off (nothing is learned, so nothing
// can be moved by a forged source MAC), and every veth has unicast flooding
// off (BR_FLOOD): a frame to a MAC the bridge does not know goes to no
// container. Broadcast and multicast still flood, as on any switch. The
// static entry of a local container is written in the same Apply that
// creates its veth, which the daemon runs inside Join, before Docker moves
// the interface into the container: the container's first frame, and the
// first frame to it, find the entry, so flooding has nothing to cover for
// (one-shot containers work from their first instruction). Should that write
// fail, the container is unreachable until the next Apply (the reconciler's
// timer), and the failure is reported.
//
// Anti-spoofing (antispoof.go) makes that hold against a hostile container,
// which has CAP_NET_RAW in Docker's default and can send any frame. Table
// bridge meshnet judges every frame entering a meshnet bridge from a veth
// (any meshnet network, vxlan or wireguard): the source MAC, the IPv4
// source, and ARP's sender MAC and address must be the container's own;
// IPv6 only from its own address on a dual-stack network, a link-local
// source or ::, neighbour advertisements only for its own global address,
// and no router advertisements or redirects; no other ether type.
// Everything else is dropped and counted. A second chain passes ARP to a
// container only when it asks about or answers that container's address, so
// a neighbour's who-has for a remote container does not even show (IPv6
// neighbour solicitations go to multicast groups; they are not filtered per
// container). The rules name ports only through three named sets (veth .
// MAC, veth . IPv4 address, veth . IPv6 address), so they are
// fixed while containers come and go; Apply adds and removes elements, and
// Teardown removes the table. Nothing else needs an exception: DNS to
// 127.0.0.11 is answered inside the container's namespace (sandbox
// package), replies of published ports and hairpin connections carry the
// container's own addresses (NAT happens after the bridge's prerouting),
// and what comes from the vxlan port was checked on the host it left. A
// container that routes for others (a VPN gateway inside a container)
// cannot do so on a meshnet network: its forwarded packets carry sources
// that are not its own.
//
// The bridge holds the gateway address, the same on every host, so containers
// route through their own host. Its MAC is fixed per host and network (derived
// from the underlay address and VNI): left alone, a bridge takes the lowest MAC
// of its ports and changes it as containers come and go, which would break every
// container's cached gateway entry. It does not accept IPv6 router
// advertisements (accept_ra=0), so nothing arriving over the overlay can
// configure the host. MTU is the underlay's minus 50 unless the network sets it.
// The vxlan device has no parent device: encapsulated packets follow the
// routing table to the VTEP, so an underlay interface that is renamed or
// recreated does not force the vxlan device to be recreated.
//
// # Why accept rules in the iptables filter table
//
// meshnet's own rules live in table inet meshnet: masquerade for traffic from a
// network's subnet leaving through anything but its bridge, a forward-hook
// drop between two meshnet bridges (networks are isolated even where FORWARD's
// policy is ACCEPT), the drops between Docker's bridges and meshnet's (below),
// the tunnel port guards, and the NAT of published ports.
//
// That is not enough on a real Docker host. Docker sets the iptables FORWARD
// policy to DROP and loads br_netfilter with bridge-nf-call-iptables=1, so both
// frames bridged on a meshnet bridge (vxlan ↔ veth) and routed egress traverse
// the iptables FORWARD chain and are dropped there. In nftables an accept in one
// base chain does not stop another base chain on the same hook from dropping,
// so an accept in table inet meshnet cannot help. The accepts therefore go into
// iptables' own table: table ip (and ip6) filter, chain FORWARD. Per bridge B:
// -i B -o B (bridged), -i B ! -o mnbr+ (egress), and -o B -m conntrack
// --ctstate RELATED,ESTABLISHED (replies). They are written over nftables
// netlink, encoded byte for byte as iptables-nft 1.8 encodes those options
// (meta iifname/oifname compares, the xt "conntrack" match revision 3, which
// iptables 1.8.9 uses and which it can parse back, unlike a native "ct
// state"), and tagged with a rule comment (nftables userdata, shown by
// iptables as -m comment). So `iptables -S` and Docker's own iptables calls
// keep working, and Apply finds its rules by comment. Where no filter table or
// no FORWARD chain exists nothing is created there (nothing drops), with one
// exception: a daemon's dataplane (Options.GuardForwarding) that turns IP
// forwarding on, because it was off, first sets FORWARD's policy to DROP,
// creating the table and chain if need be, as Docker does when it turns
// forwarding on itself (forwardguard.go). meshnetd starts before the engine
// at boot; the engine then finds forwarding on and leaves the policy alone,
// which left a rebooted host forwarding between all its interfaces. Where only
// iptables-legacy has a filter table, Apply logs a warning: meshnet does not
// write legacy tables.
//
// The accepts are appended to FORWARD, not put at the head of DOCKER-USER (as
// meshnet once did): an accept there ends the packet's walk through FORWARD,
// so an operator's own drop in DOCKER-USER (the cloud metadata address is the
// classic) no longer applied to meshnet containers, and Docker's isolation
// and bridge rules were skipped. Docker keeps its jumps at the head of
// FORWARD: engine 20.10 inserts -j DOCKER-USER first and
// DOCKER-ISOLATION-STAGE-1 after it, engine 28 -j DOCKER-USER then -j
// DOCKER-FORWARD, and each re-inserts them at the head when it starts or
// makes a network. Appended, meshnet's accepts come after all of them, so the
// operator's DOCKER-USER rules and Docker's own verdicts are seen first; a
// packet reaches meshnet's accepts only where Docker would have left it to
// the DROP policy. Apply checks the order from the kernel every time: a
// meshnet rule found in FORWARD ahead of a jump to DOCKER-USER (someone
// appended the jump, or flushed and rebuilt the chain in another order) is
// appended again and the old one deleted, and rules left in DOCKER-USER by
// an older meshnet are deleted.
//
// # Docker's bridges
//
// Docker keeps its bridges apart (DOCKER-ISOLATION-STAGE-1/2, or DOCKER-FORWARD
// in engine 28), but only its own: its rule -i docker0 ! -o docker0 -j ACCEPT
// lets a docker0 container open connections to anything else, a meshnet bridge
// included, and meshnet's egress accept does the same the other way. Table
// inet meshnet's forward chain therefore drops, both ways, what crosses between
// a meshnet bridge (mnbr*) and a bridge named as Docker names its bridges
// (docker0, br-*, docker_gwbridge), unless the connection was DNATed (ct status
// dnat): published ports, meshnet's and Docker's, stay reachable from both,
// through the host's address. Names, because Docker creates bridges at any
// moment and the rules must hold before the next Apply; the cost is that an
// uplink named br-... would be cut off from meshnet networks, and a default
// bridge renamed with dockerd --bridge is not covered.
// State.AllowDockerBridges (meshnetd --allow-docker-bridges) leaves the drops
// out.
//
// # Published ports
//
// A LocalEndpoint's Ports are published as Docker's bridge driver publishes
// them with the userland proxy off, all in table inet meshnet except the
// accept (ports.go):
//
//   - chain prerouting (type nat, priority dstnat): a packet to a local
//     address (fib daddr type local) or to the mapping's HostIP, on the
//     host port, is DNATed to the container; chain output (nat, dstnat)
//     does the same for the host's own connections, 127.0.0.1 included.
//     Docker's own nat chains sit at the same hook and priority; they only
//     match their own ports, and a host port is never taken twice (the
//     daemon holds it).
//   - chain postrouting: masquerade for hairpin (a container of the
//     bridge reaching a published port through the host's address; the
//     reply would otherwise go straight back to it, un-NATed) and for
//     sources in 127.0.0.0/8 (route_localnet is on for every bridge of a
//     network that is not internal, or the kernel drops such packets as
//     martians). Nothing else is SNATed: a client on another host is seen
//     by the container with its own address. The veths of such networks
//     are hairpin bridge ports (Docker sets the same with the proxy off):
//     br_netfilter DNATs the bridged frame of a container reaching its own
//     published port and sends it back out of the port it came in by.
//   - chain raw (filter, prerouting, priority raw, so before conntrack):
//     packets from a meshnet bridge to 127.0.0.0/8 are dropped, which
//     route_localnet would otherwise let reach the host's loopback
//     services. Before conntrack, because the reply to a 127.0.0.1
//     connection is addressed to the gateway until conntrack restores it.
//   - iptables filter (appended to FORWARD): -d ADDR/32 -o BR -p PROTO
//     -m PROTO --dport PORT -j ACCEPT, Docker's own form, encoded as
//     iptables-nft encodes it, so FORWARD DROP lets the new connection in;
//     replies pass the "return" and "egress" accepts.
//   - chain forward: the drop isolating meshnet bridges from each other
//     spares DNATed connections (ct status dnat, which both directions
//     carry), so other networks reach a published port through the host's
//     address, as on Docker's bridge through its proxy. Connections from
//     other hosts never matched it; those from Docker's bridges are spared
//     by the drops between them and meshnet's the same way.
//
// Rules are named by comment (protocol, host address and port, container
// address and port, bridge), found and diffed like every other rule. Two
// mappings claiming one host port (same protocol and port, addresses equal
// or one of them every address) are reported and only the first is
// published. Choosing ports, refusing conflicts and holding the host
// ports with sockets is the daemon's job (daemon/doc.go); the dataplane
// publishes what State says.
//
// # Service VIPs
//
// State.VIPs are service addresses balanced in the kernel over the
// service's healthy replicas, on every host; this kernel has no IPVS, and
// a user's may not. Two tables do it, the same rule in two places:
//
//   - In each client container's own namespace (clientvip.go): the
//     sandbox package, which already holds a connection into every local
//     container on a meshnet network, writes table ip meshnet-vip there
//     with WriteClientVIPs: a nat output chain DNATs the VIPs of the
//     container's networks to a replica, a filter output chain refuses a
//     VIP without replicas. This is where a container's connection is
//     balanced, as Swarm balances it (with IPVS, in the same place).
//   - On the host (vip.go), in a nat prerouting chain, for a VIP the host
//     answers ARP for with its bridge's MAC (the VIP is in ServiceAddrs, a
//     /32 on lo, like the DNS address; arp_ignore 0, the default, answers
//     for any local address on the bridge, and the vxlan device has no
//     neighbour entry for it, so no other host answers): for a container
//     whose namespace meshnet has not reached (status says which), and for
//     the routing mesh, which shares the table.
//
// Both pick a replica by numgen inc over an anonymous map (kube-proxy's
// nftables mode does the same with random; inc spreads one client's
// connections exactly evenly). The choice is made once per connection and
// kept in its conntrack entry: a change of the replica set rewrites the
// tables in one transaction each and leaves every established connection
// on its replica, and the only idle timeout is conntrack's own (TCP
// established: 5 days by default), none of meshnet's. A container's table
// has no lease: it stays while meshnetd is stopped or killed, as the
// host's does, and goes when the container leaves its last meshnet
// network.
//
// Why in the container: the replica answers the client's own address. On
// a vxlan network client and replica share one L2 segment, and the reply
// is bridged straight to the client. When the client's host DNATs, it
// un-NATs that reply only because br_netfilter passes bridged IPv4 frames
// through conntrack and NAT (bridge-nf-call-iptables=1, as Docker sets
// it); without it the reply reaches the client from the replica's address,
// which drops it. DNAT in the client's namespace makes the client's own
// conntrack un-NAT the reply wherever it comes from, with no help from any
// host: that is what a network bridged outside the host's namespace needs
// (docs/netns-dataplane.md; dataplane TestClientVIP balances with
// br_netfilter off on both hosts). It was first weighed and left for the
// host's table because it means rules in every container, rewritten in
// each on every replica change (one transaction per container, a
// millisecond each); the plan to leave the host's netfilter changed the
// balance. For a replica on another host of a wireguard network the reply
// is routed back through the client's host either way. SNAT to the
// gateway would make the path symmetric too, but the gateway is the same
// address on every host, so a remote replica's answer would go to its own
// host, and the replica would lose the client's address.
//
// On the host's table, two details keep the client's address: table
// inet meshnet masquerades DNATed connections leaving a bridge they came
// from (hairpin of published ports), which would catch every VIP
// connection the host balances, so the DNAT
// rule sets bit 25 of the conntrack mark and a nat postrouting chain at
// srcnat-1 gives such connections an identity SNAT (their own source):
// the first NAT binding of a connection wins, and the masquerade is not
// consulted. And the DNAT chain runs at dstnat-10, before meshnet's and
// Docker's published ports, which match any local address, the VIP
// included. Traffic to a VIP that was not DNATed (no replica left) is
// rejected in an input chain: it never reaches a host socket, and a
// client fails at once instead of waiting. A host's own sockets do not
// reach VIPs (no output chain: the source would be the gateway, the same
// on every host, and a remote replica's reply would go astray).
//
// # Routing mesh
//
// State.MeshPorts publish a service's port on every host that has the
// service's vxlan network, with the client's address kept (mesh.go):
//
//   - The entry host E, where the client connects: in table ip
//     meshnet-vip's prerouting chain, after the VIPs, fib daddr type local
//     plus the port DNATs to a replica from a numgen inc map, with the
//     target port, and sets the VIP's conntrack bit, so the identity SNAT
//     keeps the client's address (and table inet meshnet's hairpin
//     masquerade stays out), and the mesh bit. A replica on E itself is
//     reached through the bridge. For a replica R on another host H, chain
//     meshroute (prerouting, after the DNAT) gives the connection's packets
//     the mark of H's mesh index (MeshIndex: the low 16 bits of H's IPv4
//     underlay address) from a map of remote replicas, and an ip rule per
//     peer (fwmark index/0xffff, priority 1000) sends them to a table
//     whose default route goes to H through the probe device, mnprobe: a
//     host-to-host VXLAN link on VNI 1 whose FDB already holds every
//     peer's probe MAC; a permanent neighbour entry maps H's underlay
//     address to that MAC. iptables FORWARD accepts the connection towards
//     each replica (out of the bridge or out of mnprobe) in Docker's
//     published-port form, after DOCKER-USER, so an operator's drop there
//     still wins.
//   - No SNAT means the replica R answers the client's own address, through
//     its own host H, which never saw the DNAT. So H must send R's replies
//     back to E. H recognises such a connection by where it arrives: on
//     mnprobe, from E's probe MAC, and chain meshmark (prerouting, mangle)
//     stores E's index in its conntrack mark (not for a connection H
//     DNATed itself, whose replies also come back on mnprobe). H routes the
//     packet to R's bridge like any other (FORWARD: the same accept towards
//     the replica). R's replies are routed (R sends them to its gateway);
//     the same chain copies the index into their packet mark, and E's
//     table on H sends them back through mnprobe. Chain meshout clears the
//     index from the mark before encapsulation: the VXLAN driver routes the
//     outer packet with the inner one's mark and would send it back into
//     the device. E receives the reply on mnprobe, its conntrack un-NATs it
//     (iptables FORWARD accepts established traffic from mnprobe), and it
//     reaches the client from the address it connected to.
//   - Mesh connections used to cross the overlay, bridged from E into the
//     network, and H recognised them by E's bridge MAC: that needs H's
//     host to see the network's bridged frames, which a bridge in a
//     namespace of its own (docs/netns-dataplane.md) takes away. Over
//     mnprobe the mesh needs nothing of the bridge but a route to it.
//     During a rolling upgrade both ways run: a node record lists
//     gossip.FeatureMeshProbe (State.MeshProbeHosts); an entry host sends
//     over mnprobe only to hosts that list it and bridges the rest into the
//     overlay, and a replica's host still marks, per network, what arrives
//     bridged from the bridge MAC of a host that does not list it.
//   - One client cannot keep its address: one on the replica's own host H
//     (a process, or a container masqueraded to H's address) connecting
//     through another host E. The replica's reply is addressed to a local
//     address of H, and the local table is looked up before any rule, so
//     it would be delivered on H itself and reset by the client. E SNATs
//     such connections (source H, replica on H: meshHairpin) to its own
//     underlay address, and the replica sees E.
//   - The mesh's rules, tables and neighbour entries on mnprobe belong to
//     the probe (probe.go, SetReturnPath), which owns the device; they exist
//     while the daemon publishes a mesh port and go with it. Both
//     directions use them: E's packets towards H, H's replies towards E.
//
// Why so: the alternatives each lose something users asked for. SNAT to
// the entry host (Swarm's ingress) hides the client's address; direct
// server return needs the replica's host to send from the entry host's
// address, which cloud networks drop as spoofed; routing the replies over
// the underlay to E needs hosts on one L2 segment. Over the probe device
// the replies are encapsulated like any overlay traffic and pass the same
// ports and the tunnel guard. What it costs: the reverse-path filter must
// be off on mnprobe (set) and must not be forced on by
// net.ipv4.conf.all.rp_filter (the kernel drops whatever arrives on a
// device without an IPv4 address when the check is on; meshctl status says
// so); two hosts whose underlay addresses share their low 16 bits cannot
// both be entry hosts for replicas on the other (reported). mnprobe's MTU
// is a vxlan network's (the underlay's less VXLAN's overhead), so mesh
// connections between hosts carry the same segments as the overlay's.
// wireguard
// networks are not published: WireGuard accepts a packet from a peer only
// from that peer's AllowedIPs, and a client's address is not among them.
// A host's own processes reaching the port through a local address are not
// balanced (no output chain, as for VIPs); they reach a replica through
// another host's address.
//
// # Internal networks
//
// A Network with Internal set (docker network create --internal) keeps its
// traffic inside its subnet, as Docker's bridge does (-i BR ! -d SUBNET
// -j DROP, -o BR ! -s SUBNET -j DROP): two drops in chain forward, no
// masquerade, no egress accept in iptables, no route_localnet, and its
// endpoints' Ports are ignored. The bridge still holds the gateway (the
// DNS service address is reached through it); the daemon gives containers
// no default route. Bridged and tunnelled traffic stays inside the subnet,
// so containers of the network on other hosts are reachable.
//
// # Dual-stack networks
//
// A Network with Subnet6 carries IPv6 beside IPv4 on the same bridge and
// vxlan device; nothing about it is a second network. The bridge holds both
// gateways. The IPv6 one is added without duplicate address detection: it
// is the same address on every host, as the IPv4 gateway is, and the
// overlay never carries a solicitation for it (the vxlan device answers
// from its own entries and floods nothing), so detection could only delay
// it. Remote IPv6 addresses are further RemoteEndpoints: a static neighbour
// entry each on the vxlan device, whose proxy answers neighbour
// solicitations from them as it answers ARP (the kernel's vxlan proxy does
// both), behind the same FDB entry as the endpoint's IPv4 address. So IPv6
// adds no flooding and no learning. Anti-spoofing gains the set port_ip6
// (see above); the bridge never accepts router advertisements. IPv6 leaving
// the network is masqueraded (NAT66), as Docker does for its IPv6 networks,
// unless IPv6Routed; Apply turns IPv6 forwarding on for such networks. An
// IPv6 underlay needs nothing of its own but the MTU (VXLANOverhead6): the
// vxlan device's local address, FDB destinations and the tunnel guard's
// member sets are family-neutral. A dual-stack wireguard network routes its
// IPv6 blocks through the WireGuard device as it routes IPv4 ones; where
// proxy_arp lets the bridge answer ARP for every remote IPv4 address,
// proxy_ndp answers only for addresses with a proxy entry, so Apply keeps
// one per remote IPv6 address (its Remotes) on the bridge.
//
// # Why WireGuard networks are routed, through one device per host
//
// A network with Kind "wireguard" keeps what a vxlan network gives its
// containers (the same subnet on every host, the gateway on the local bridge,
// the DNS route, NAT for egress) but is L3: WireGuard carries IP packets,
// not frames. The bridge holds the gateway and the connected route of the
// whole subnet; every address block another host owns is a more specific
// route through the WireGuard device, and proxy_arp on the bridge answers a
// container's ARP for those addresses with the bridge's MAC, so the container
// sends to its own host, which routes into the tunnel. A container whose
// address lies in another host's block gets a /32 back to its bridge.
//
// There is one device per host (mnwg0), shared by every wireguard network:
// WireGuard's peers are hosts, and a peer's AllowedIPs are the blocks it
// owns (plus single addresses it holds outside them), so the configuration
// grows with hosts and blocks, not containers, and WireGuard's own source
// check (a packet from a peer must come from its AllowedIPs) ties every
// address to the host that owns it. Since the device is shared, the forward
// chain isolates networks on it: what leaves the tunnel goes only to the
// bridge of the network its source belongs to, and only a network's bridge
// may send to that network's remote blocks.
//
// The device is the kernel's where the module is, configured through wgctrl;
// otherwise (this machine) the embedded golang.zx2c4.com/wireguard runs on a
// TUN device created with IFF_VNET_HDR and TSO/USO, so it moves batches of
// coalesced segments (GSO/GRO) per syscall; status reports both. Peers are
// keyed by public key: a changed endpoint or set of blocks updates the peer
// in place and keeps its session; an endpoint WireGuard learnt by roaming is
// not overwritten until the published one changes. A peer's blocks are
// written add-only while they only grow: replacing them clears the peer's
// table before setting it again, and a packet routed in that instant is
// dropped (the kernel before 6.16 cannot remove one prefix alone, so a peer
// that loses a block still has its set replaced). Unlike kernel devices,
// the embedded device lives in meshnetd's process: it goes when the daemon
// stops, and the next Apply brings it back with the same key.
//
// # The data-path probe
//
// Gossip (memberlist over UDP and TCP 7946) says nothing of the tunnel: with
// UDP 4789 blocked between two hosts every member is alive and no container
// packet passes. So each host checks every peer through the tunnel itself
// (probe.go): a VXLAN device of its own, mnprobe, on the reserved VNI 1
// (networks start at 2), with the same UDP port and local address as the
// networks' devices, so its packets take the same socket, encapsulation,
// routes and firewall path (the tunnel guard below included) as containers'
// traffic. Each host holds one IPv6 link-local address on it, derived from
// its underlay address (fe80::6d6e:0:a.b.c.d for IPv4, a hash for IPv6:
// unique as the underlay address is, and link-local, so it needs no route
// and clashes with nothing the host has), and a MAC derived the same way;
// for every peer a permanent FDB entry (its probe MAC -> its VTEP) and
// neighbour entry (its probe address -> MAC), as for containers. Every
// second the daemon sends an ICMPv6 echo to each peer's probe address from
// a raw socket carrying the overlay mark (a host socket must, to pass the
// guard's host-socket drop); the peer's kernel answers, not its daemon, so
// a host whose meshnetd is down still answers. A peer is up while an answer
// came within 3 s, down once it has been probed that long without one.
//
// The device is outside the prefixes Apply owns, so Apply never deletes it;
// it exists only while the host has a vxlan network (the tunnel guard on the
// VXLAN port exists then too: the daemon makes it after Apply and removes it
// before), and Close leaves it, like everything else. IPv6 must be enabled
// on the host (a missing address is reported). The probe covers the outer
// path (encapsulation, UDP port, firewall on both hosts), not a bridge's
// FORWARD verdicts for containers' frames.
//
// WireGuard networks are probed the same way through the WireGuard device
// itself (a probe configured with Tunnel KindWireGuard): the device holds
// this host's probe address, and each peer's AllowedIPs carry the peer's
// probe address as a /128 (ProbePrefix; the daemon adds it), so an echo is
// encrypted, sent to the peer's WireGuard port and answered by its kernel
// through its own device. No FDB or neighbour entries: WireGuard routes by
// AllowedIPs. The address is added after each Apply (the device may have
// been made anew) and goes with the device. A kernel WireGuard device
// answers while its daemon is down; the embedded one does not, as it lives
// in meshnetd's process.
//
// # Tunnel ports
//
// The kernel's VXLAN socket decapsulates whatever reaches its port: VXLAN
// carries a VNI and a frame and nothing that proves who sent it, and VNIs and
// MACs are easy to guess. So the tunnel ports are accepted only as tunnel
// traffic, in table inet meshnet:
//
//   - chain input accepts the VXLAN and WireGuard ports only from the cluster's
//     current members (State.Members, held in the named sets members4 and
//     members6, so rules stay fixed while hosts come and go), and only when the
//     packet arrived on the interface the member's address is routed through
//     (fib saddr . iif oif, the reverse-path check): the underlay interface,
//     without naming it. A container on this host forging a member's source
//     arrives on a veth of a bridge and fails it. Everyone else is dropped.
//   - chain forward drops packets to a member's tunnel port whatever interface
//     they come from: a container on a meshnet bridge, on docker0 or any other
//     bridge of a member host would be masqueraded to that host's address, a
//     member's.
//   - chain localout (filter, output) drops packets to a member's VXLAN port
//     from the host's own sockets: meta skuid matches only a socket a process
//     holds (any user, root included), and the kernel's VXLAN socket has none.
//     A host process's packet into an overlay (the host pinging a remote
//     container) is encapsulated with that process's socket still attached,
//     so packets routed out of a meshnet bridge are marked first (bit
//     0x01000000 of the mark, set with "mark | bit", so other marks are kept)
//     and marked packets pass; setting a mark on one's socket takes
//     CAP_NET_ADMIN. WireGuard's port is left out: the embedded wireguard-go
//     sends from meshnetd's own socket, and WireGuard drops what it cannot
//     authenticate.
//
// This leaves what no host firewall can tell: anyone who can put a packet with
// a member's source address on the underlay (a machine on its segment, a
// router on the path, root on a member) can still inject into a vxlan network.
// The README says so; a wireguard network is the answer. The vxlan device's
// bridge port has learning off, so a forged source MAC arriving from the
// overlay cannot redirect traffic.
//
// # What the host's netfilter costs, and the way out
//
// A meshnet bridge lives in the host's namespace, where Docker loads
// br_netfilter and sets bridge-nf-call-iptables=1: every frame bridged
// between a container and the vxlan port goes through conntrack, the nat
// hooks and the whole iptables FORWARD chain (Docker's rules, then meshnet's
// accepts), on both hosts. Swarm's overlay keeps its bridge and vxlan device
// in a namespace of their own with no rules, so only the outer UDP packet
// meets the host's netfilter. Measured on the benchmark's two simulated hosts
// (2026-12-05, docs/benchmarks.md): turning bridge-nf-call-iptables off in
// the hosts' namespaces (an experiment, not something meshnet may do: Docker
// relies on it for its own bridges) takes meshnet vxlan from 0.85× to 0.96×
// Swarm's throughput with one stream and from 0.79× to 0.96× with four, and
// its CPU per GB from 1.23× to 1.05× Swarm's; dropping the anti-spoofing
// chain as well brings it to 0.99×. Shortening meshnet's own chains (an accept
// for intra-bridge frames at the head of inet meshnet's forward chain) moved
// it by 1–3%, within the noise, and was not kept.
//
// The cheaper alternatives are closed, and three were measured on the same
// hosts (2026-12-05, iperf3 by hand between the benchmark's containers,
// alternating with Swarm's, `meshbench -parts dataplane -hold`):
//
//   - Skipping conntrack. A notrack for frames between two addresses of the
//     subnet, in a bridge-family prerouting chain ahead of br_netfilter,
//     left throughput where it was (0.89× Swarm's against 0.92× without it,
//     within the rounds' noise): conntrack is not where the time goes. And
//     it would be wrong: a service VIP's reply is such a frame and must be
//     un-DNATed by the connection the request created.
//   - Shorter rule sets. With meshnet's anti-spoofing chain and then its
//     forward chain flushed, CPU per GB fell by 1% and a further 3%, inside
//     the noise. perf over the same runs puts nft_do_chain at 4.4% of the
//     samples against Swarm's 1.4%, and the interface-name copies of iifname
//     and oifname matches (nft_meta_store_ifname, strnlen, sized_strscpy) at
//     1.8%: the cost is the walk itself, through Docker's FORWARD rules and
//     every base chain on the hooks, for every frame, which only leaving
//     the namespace avoids.
//   - Hiding frames from br_netfilter, which passes over a frame carrying a
//     VLAN tag (bridge-nf-filter-vlan-tagged is 0 by default): tagging at
//     the ports needs bridge VLAN filtering and tc's vlan action, which this
//     machine's kernel has neither of, and it would rest on a default an
//     operator may change.
//
// br_netfilter's switch is per namespace (the per-bridge option only adds
// to it). So frames must not cross a bridge in the host's namespace. The
// way taken is the bridge bypass (below): a container's own IPv4 to its
// subnet is redirected past the bridge by tc. The way planned first was a
// namespace per network, as libnetwork's overlay driver does: the bridge, the vxlan device (created in the host's namespace,
// so its UDP socket stays there, then moved) and the containers' host-side
// veths in it; the gateway on that bridge, routing through an uplink veth
// pair to the host, so egress and published ports are routed through the
// host as today (and still meet DOCKER-USER); the anti-spoofing bridge table
// in the network's namespace; service VIPs DNATed in the client container's
// namespace (where the sandbox package already keeps per-container tables),
// as Swarm does; the routing mesh carried to the replica's host over the
// probe device, since that host no longer sees the bridged first frame it
// marked before. Its first two steps (VIPs in the client, the mesh over
// the probe device) are built, and the bypass needed them too; the move
// itself is not: it moves every kernel object this package owns, and the
// bypass gets what it was for without that. docs/netns-dataplane.md keeps
// the plan for if the bypass's limits bite.
//
// # The bridge bypass
//
// What the namespace move buys (no frame between containers meets the
// host's hooks) can be had without moving anything: the cost is in the
// bridge, so a frame that needs nothing of the bridge need not cross it.
// With Options.BridgeBypass (meshnetd --bridge-bypass), bypass.go attaches
// one tc program (bypassprog.go; direct action, on the ingress of each
// container's host-side veth, of the vxlan devices and of the WireGuard
// device) that reads three hash maps, the bypass's ports (by ifindex),
// destinations (by network and MAC) and, for wireguard networks, local
// addresses (by IPv4 address):
//
//   - veth: when the frame's source MAC and IPv4 source are the
//     container's own and its destination is in the subnet and not the
//     bridge's own MAC (the gateway: egress, DNS, published ports, VIPs
//     balanced on the host), a frame to another container of the network
//     on this host goes straight into that container's namespace
//     (bpf_redirect_peer), and any other unicast to the vxlan device, whose
//     static FDB sends it to the right host (an unknown MAC is dropped
//     there, never flooded);
//   - vxlan device: a frame from a source in the subnet to a local
//     container's MAC goes straight into that container's namespace.
//
// A wireguard network is routed, so what is bypassed there is the host's
// routing hop as well as its bridge, br_netfilter and FORWARD:
//
//   - veth: the same checks; a frame to another container here by its MAC
//     goes into it as above; one to the bridge's MAC (proxy_arp answers
//     for every remote address) for an address of the subnet that is not
//     the gateway nor a container here goes to the WireGuard device
//     (bpf_redirect; the device has no link layer, so the Ethernet header
//     is dropped), whose cryptokey routing picks the host;
//   - WireGuard device: an IPv4 packet for a container here, from a source
//     in that container's subnet (another network's goes to FORWARD, which
//     refuses it), gets an Ethernet header (the container's MAC, the
//     bridge's) pushed on and goes straight into the container.
//
// Both decrement the TTL and update the header's checksum as the host's
// forwarding would (a container two hosts away is still two hops: ping
// says ttl=62 with the bypass or without), and leave to the host a packet
// whose TTL would expire, so that it answers time exceeded. WireGuard's
// own source check (a peer's packets must come from its AllowedIPs) is what
// ties a packet to its host, as before. The embedded WireGuard device is
// made anew with each run of meshnetd (it lives in the process): between
// the new device and the new run's first Apply, the old program's filters
// on the veths send to the old device's index, which is gone, and those
// frames are lost; the embedded device carries nothing while meshnetd is
// down anyway.
//
// Everything else takes the bridge as before: ARP, IPv6, broadcast and
// multicast, forged sources (so the anti-spoofing table still judges
// them: TestContainersReceiveOnlyTheirOwn runs with the bypass on and
// off), and whatever arrives from outside the subnet (a host's own address,
// a routing-mesh connection from an older meshnetd), which needs the host's
// conntrack for its replies. What the bypass changes for an operator:
// traffic between containers of one network skips the host's FORWARD
// chain, DOCKER-USER included, as traffic inside Swarm's overlay does (it
// still applies to egress, published ports and other networks); a VIP is
// balanced in the client's namespace (the sandbox's table: meshnetd refuses
// --bridge-bypass=on with --container-dns=false, and auto is off without
// it); tcpdump on the bridge no longer sees that traffic (on the veth or
// the vxlan device it does).
//
// The first of those is why the default, BypassAuto, bypasses only a host
// that filters no forwarded traffic of its own (hostfilter.go): DOCKER-USER
// holds nothing but Docker's return, FORWARD nothing but Docker's jumps and
// per-bridge accepts and meshnet's accepts (ufw's jumps to its chains
// count), and no base chain at the forward hook of another table (ip, inet
// or bridge family: an nftables ruleset, firewalld, iptables' mangle
// FORWARD) holds a rule or drops by policy. Docker's nftables backend's
// and meshnet's own tables, and IPv6 (never bypassed), do not count; rules
// at other hooks (raw or mangle PREROUTING) are not looked at. Apply reads
// this each time, and WatchHostFilters follows nftables' change
// notifications so that the daemon applies again the moment it changes:
// an operator's new rule takes every container back to the bridge within
// an Apply (28 ms in e2e's TestOperatorFirewall), and its removal brings
// the bypass back. The other choice was to ask operators to opt in; but
// then nearly every host would pay the bridge's cost for a firewall it does
// not have, while a host that has one is now seen to have it. A container whose own VIP table is
// not in place (from its start until its box writes it, about a second, or
// for good when the write failed, which meshctl status lists) is
// LocalEndpoint.Bridged: its veth carries no program, and its destination
// entry sends frames to it to the bridge, from the overlay and from the
// other containers here alike, so all of its
// traffic crosses the bridge both ways and the host's VIP table, whose
// conntrack must see the replica's reply, balances its connections.
//
// Why a BPF program, and this one. The first bypass was tc's u32
// classifier and mirred action, which every kernel has: a filter per pair
// of local containers on each veth, so its filters grew with the square of
// a network's containers on a host (100 containers: 10,200 filters, 0.6 s
// of writes per container started) and a frame walked them in turn; it was
// bounded at 32 containers per network and host. The program does two hash
// lookups per frame (its port, then the destination or address) and a change writes a
// map entry or two and attaches to one veth, whatever the count, so there
// is no bound. Its cost, by perf on the benchmark's hosts: about 5% of the
// CPU a vxlan stream takes, where Swarm's bridge takes about 4%
// (docs/benchmarks.md). bpf_redirect_peer
// (Linux 5.10) hands a frame into the container's namespace without the
// host-side veth's transmit and the CPU backlog queue the mirred way paid
// (that veth's peer receives it as if it had come through the pair); the
// frame's type is set to PACKET_HOST first, as the veth's own receive sets
// it, or the container's IP stack would drop it as another host's. The
// program is built in Go (cilium/ebpf's asm), not compiled from C: no
// clang at build time, and it is short enough to read whole
// (bypassInstructions, with its C-like summary); TestBypassProgram runs it
// on a frame per rule through the kernel's test run. Where the kernel
// refuses it (no BPF, a kernel older than 5.10, no CAP_BPF or
// CAP_SYS_ADMIN: the managed plugin has the latter), the bypass is off,
// every container on the bridge, and meshctl status says why.
//
// Restarts: the program and its maps live as long as a tc filter holds the
// program, so bypassed frames keep their way while meshnetd is down. A new
// run loads a program of its own, writes its maps whole from the state,
// and then replaces each device's filter in place (the same priority and
// handle): a frame meets the old program or the new one, both with whole
// maps, and the old one is freed with its last filter. Filters of an older
// meshnetd's u32 bypass go first, the bridge carrying those frames
// meanwhile. The clsact qdisc under the filter is added once and never
// removed, because adding or removing a qdisc deactivates the device for a
// moment and drops what it sends then (TestBypassFlipLosesNothing: 3 to 7
// of 1,200 pings lost over 40 changes that way, which e2e's no-loss
// restarts caught once the bypass was on by default: a restarted meshnetd
// keeps containers bridged until their boxes have written their VIP
// tables).
//
// # Namespaces
//
// Options.NetNS points the dataplane at another network namespace; tests use
// it to program fresh namespaces without ever switching the test's thread.
// Netlink and nftables sockets are opened inside that namespace once. The few
// settings netlink cannot reach (sysctls under /proc/sys, which resolve against
// the namespace of the thread that opens them) are written from a goroutine
// that locks its thread, enters the namespace and exits without unlocking, so
// the thread dies instead of returning to Go's pool in the wrong namespace.
package dataplane
