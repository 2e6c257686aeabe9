// Package daemon wires meshnetd together: the gossip cluster and its record
// store, IPAM, the dataplane, the DNS server, the Docker plugin and event
// watcher, and the control API. It owns no protocol or kernel logic of its
// own; it owns the decisions that need all of them at once.
//
// # What it owns
//
//   - The reconcile loop (daemon.go, desired.go, wireguard.go, tunnels.go):
//     on every store change and every 30 s it computes the
//     whole desired kernel state from one snapshot's typed view
//     (gossip.View, decoded once per snapshot and shared with the DNS
//     table, the sweep and the control API; this host's networks,
//     every live remote endpoint, WireGuard peers from the owned address
//     blocks, the members allowed on the tunnel ports) and hands it to
//     dataplane.Apply. Nothing is applied from events: a missed event or a
//     hand-deleted link is repaired by the next pass. A daemon started with
//     an empty state folder holds Apply's deletes until the cluster has
//     handed its earlier records back (holddeletes.go).
//   - The DNS table (dnstable.go): its own subscriber to the store, built
//     once per snapshot and swapped into every DNS server, so a name answers
//     as soon as its record arrives and never waits behind an Apply.
//   - The plugin backends (plugin.go): Docker's calls become records
//     (networks, endpoints) and IPAM calls; they answer from local state, so
//     a host cut off from the others keeps starting containers in the
//     blocks it owns.
//   - Published ports (plugin.go, published.go, portholder.go):
//     ProgramExternalConnectivity picks each host port (the first free one
//     of a -p range, the kernel's ephemeral choice for -p PORT), refuses a
//     port another local container publishes or a host program holds (the
//     engine fails docker run with the message), and writes the result
//     into the endpoint record, which records.json keeps: the engine never
//     asks again for a running container, so a restarted daemon rebuilds
//     the rules from the record. Like Docker 28, meshnetd holds a socket on
//     every published TCP and UDP port (TCP listening, both behind a
//     drop-all BPF filter; the DNAT takes the traffic first), so a program
//     that tries the port later fails instead of silently never seeing its
//     traffic. The sockets die with the process; every reconcile binds
//     what the records publish and closes the rest, and a port a program
//     took while meshnetd was down is logged and stays published. SCTP
//     ports are checked against the records only. Revoke and Leave take
//     the ports out of the record; endpointsMu keeps the plugin and the
//     event watcher from overwriting each other's fields of it.
//   - Container facts the driver is never told (containers.go): names,
//     services, aliases, health and ports from the engine's events, written
//     into this node's endpoint records for DNS. Each record is rewritten
//     through Store.Update from its current value, so an endpoint the
//     engine deletes during the pass stays deleted.
//   - Which containers get meshnet's DNS in their own namespace (package
//     sandbox): Join attaches the endpoint's sandbox at once, Leave and
//     DeleteEndpoint detach it, and every full container list from the
//     watcher re-syncs the set (a restarted meshnetd finds its containers
//     again); each new DNS table goes to every container's server.
//   - Service VIPs (vip.go): a service whose replicas carry
//     meshnet.endpoint-mode=vip gets one address per network, allocated
//     from its IPAM by the lowest-named up node holding a replica and
//     published as a "vip" record (a race between two writers is settled
//     by the lowest owner, the loser frees its address); the reconciler
//     puts every winning VIP of a local network, with the healthy
//     replicas of up nodes, into dataplane.State.VIPs and on lo, and
//     after each Apply hands the same list to the sandboxes, which
//     balance them in each container's own namespace; the DNS
//     table answers the VIP for the service's name and every replica for
//     tasks.<service>. The default mode is dnsrr (why: vip.go).
//   - The routing mesh (mesh.go): replicas' meshnet.publish ports, carried
//     in their endpoint records, become dataplane.State.MeshPorts on every
//     host with the network (one target per port, the lowest subnet and
//     target port winning a conflict everywhere); the host port is held
//     with a socket, and the VXLAN probe's device carries the replies back
//     to the entry host while any port is published.
//   - The leak sweep (sweep.go): what Docker could not release while
//     meshnetd was down is freed once no container has held it for
//     --reclaim-after, judged against what the engine itself reports.
//   - Persistence of this node's own records (with the node keys it has
//     pinned to names), its last-known peers, its gossip keyring, its
//     WireGuard key and its node key under --state-dir, each written
//     atomically, so a restart adopts the kernel state it finds instead of
//     rebuilding it. The node key (nodekey.go) signs every record the node
//     writes; peers know the node by it (gossip/doc.go, "Records bound to
//     their owner"), so it must live as long as records.json.
//   - Node identity: the node key in --state-dir is the node's identity
//     for its records; a wiped state folder gives the host a new one,
//     which the cluster takes under the same name once the old run is
//     dead or left, or at once from the same address (gossip/doc.go, "A
//     name's key changes"), and the host adopts its earlier run's records
//     from its peers. When gossip finds this node's name taken by a live
//     node that was there first (another address), Run closes
//     gossip without a graceful leave (which would announce the other
//     node's name as gone) and returns IdentityConflictError; meshnetd
//     exits with status 3.
//   - The plugin backends' option parsing (netopts.go): meshnet's own -o
//     options and what compose files written for Docker's overlay carry
//     (com.docker.network.driver.mtu, encrypted).
//   - Who may have outside names forwarded by the DNS server (localsrc.go):
//     queries that come in on this host's container bridges, from their
//     subnets; the set is re-read when links change and swapped atomically.
//   - meshctl's answers (control.go, keys.go), including how the event
//     watcher stands with the engine (engine.go): the negotiated API version,
//     and a problem once it has been without the engine for 20 s.
//   - Metrics and readiness (health.go; package metrics serves them with
//     --metrics-addr): a scrape reads the same status meshctl gets, plus
//     the store's record counts, the FDB and neighbour entries of the last
//     apply, and the DNS servers' counts (one dns.Counts for the server on
//     the DNS address, one shared by every container's server, so counters
//     survive the servers). Ready means the plugin socket answers
//     Plugin.Activate, as the engine asks it, and the DNS server listens;
//     systemd hears READY=1 at the first, STOPPING=1 when Run ends.
//   - What start-up says about DNS (daemon.go, runDNS): the DNS address is
//     added to lo by the first apply, so a fresh start's first listen
//     fails; that is logged as waiting for the address meshnetd is adding,
//     and the error with its advice only once it has lasted dnsAddrGrace.
//   - The data-path probe's peers and what follows from its answers
//     (datapath.go; the probe itself is dataplane/probe.go): see below.
//
// # Gossip state and data-path state
//
// meshctl peers shows two things per peer: memberlist's verdict (alive,
// suspect, dead, left) and what the probes through the tunnels see (up with
// the round trip, down, unknown): through VXLAN towards every node holding a
// vxlan network of a subnet this host has too, through WireGuard towards
// every node holding such a wireguard network and publishing a key, whatever
// gossip says of it, except nodes that left or were removed. DataPath is the
// worst of the two, each listed under Tunnels. A peer gossip has up whose
// data path is down through either tunnel is a problem in meshctl status (a
// blocked tunnel port, typically, named with its port) and
// meshnet_peer_data_path_up{tunnel=...} says 0.
//
// The two together tell a stopped daemon from a gone host:
//
//	gossip      data path   meaning                        its entries here
//	alive       up          fine                           kept
//	alive       down        tunnel port blocked            kept (gossip has it up)
//	dead        up          daemon down, host carries on   kept (reconcile counts it up)
//	dead        unknown     not probed for 3 s yet         kept until the probe says
//	dead        down        host gone                      withdrawn
//	left        any         told to leave                  withdrawn
//
// reconcile applies a view of the snapshot in which a dead node whose
// probe through either tunnel is up counts as suspect (dataPathView): its endpoints, forwarding
// and neighbour entries and its place in the tunnel guard's member set stay.
// So does one a probe has not had a whole timeout to hear from yet
// (unknown: this daemon just started, or the node just entered the probe's
// list): a restarted daemon that hears in its first seconds that another
// daemon was declared dead must not cut that host off before its probe
// could answer. A probe going down triggers a reconcile, so a host that
// goes away is withdrawn within the probe's 3 s of being declared dead (or
// of entering the probe's list, whichever is later). DNS still follows gossip alone: a dead
// daemon's services leave the answers, as before.
//
// A stopping meshnetd (SIGTERM: systemctl restart, a plugin disable or
// upgrade) closes gossip without a leave unless --leave-on-stop is set, and
// leaves every kernel object in place (dataplane Close removes nothing).
// Restarted with its state folder, it holds its dataplane deletes until it
// has merged a full state from a peer (holddeletes.go, at most
// restartHoldMax): its store starts with its own records only, and its
// first Apply would otherwise delete every other host's entries.
//
// WireGuard peers follow the WireGuard probe alone: a dead node whose
// probe through the WireGuard device answers keeps its peer, AllowedIPs and
// routes. A kernel WireGuard device outlives its daemon like VXLAN devices
// (Close removes nothing), so it keeps answering and nothing is withdrawn
// while meshnetd restarts; the held deletes cover its peers, and the
// restarted daemon adopts the peers it finds rather than writing them again
// (a ping every 10 ms across a restart and across 60 s down loses none: e2e
// TestKernelWireGuardNoLoss, on VMs). The embedded WireGuard (userspace) lives in
// meshnetd's process: while its daemon is down, wireguard networks to and
// from that host carry nothing, whatever is kept, and its probe goes
// unanswered, so its peer is withdrawn as before once gossip declares it
// dead; when it is back, the same key and fresh handshakes restore traffic.
//
// # Why it is shaped so
//
// The packages below it are pure or sit behind one interface (the
// dataplane), so they are tested alone; what remains here is ordering and
// policy, tested with real stores and IPAM but without a kernel
// (desired_test.go, sweep_test.go, the fuzz targets), and end to end by the
// e2e suite.
package daemon
