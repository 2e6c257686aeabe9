// Package sandbox puts meshnet's DNS in front of Docker's embedded resolver
// inside each container's own network namespace, so that the names Docker
// users write, "api", a container name, a network alias, resolve to every
// healthy endpoint of that name across the cluster, through the
// container's normal resolver path, with no engine setting at all.
//
// # Why there
//
// Every container on a user-defined network asks 127.0.0.11, Docker's
// embedded resolver, which lives in the container's namespace (the engine
// opens two sockets there and DNATs 127.0.0.11:53 to them). For a local
// scope network it knows the endpoints on its own host only, and a name it
// knows it never forwards: with one replica of "api" here and four on
// other hosts, it answers one. No setting of the engine or the driver
// changes that. So meshnet answers first, where the container asks:
//
//   - in the namespace, two sockets of meshnetd's on 127.0.0.11 (random
//     ports; opened on a thread that entered the namespace, they belong to
//     it for good) and a table ip meshnet-dns whose nat output chain, at
//     priority -150, DNATs 127.0.0.11:53 to them before the engine's own
//     rule (-100) can: a connection is NATed once, by the first chain that
//     maps it;
//   - a dns.Server per container on those sockets, scoped to the
//     container's meshnet networks (dns.Scope): bare names of those
//     networks, the meshnet zone, PTR of overlay addresses;
//   - everything else goes to Docker's resolver, from a socket in the same
//     namespace carrying a firewall mark the redirect lets through, so the
//     names of the container's other networks, extra hosts and the world
//     resolve exactly as Docker would resolve them.
//
// A side effect is the shortest path DNS can have: no veth, bridge or host
// conntrack between the container and its answers, and recursion only for
// the one client those sockets can hear.
//
// # When
//
// Join names the sandbox key (a namespace file path) before the engine
// runs the container; on engine 20.10 the namespace is mounted there only
// when the container's process is created, a few milliseconds later. A box
// polls the key every millisecond and serves as soon as it is a
// namespace: about a millisecond of work (two sockets, one nftables
// transaction), done while the engine still moves the container's
// interfaces and runc execs its process, so it is in place before the
// container's first query (TestComposeStack starts ten one-shot clients
// that query at once on a host where only meshnet knows the name). The
// engine's container list (Sync) is the second source: it brings back the
// boxes of a restarted meshnetd and serves containers whose key meshnetd
// cannot open (the managed plugin does not see the engine's namespace
// mounts) through /proc/<pid>/ns/net.
//
// # When meshnetd is gone
//
// A redirect to sockets nobody reads would leave a container with no DNS
// at all. The DNAT applies only while 127.0.0.11 is in the table's set
// live, whose element has a timeout (Config.Lease, 3 s) that the daemon
// renews three times per lease. A clean stop removes the tables at once; a
// killed meshnetd's leases lapse. Either way the container is back on
// Docker's resolver, with local names only, until meshnetd returns and
// Sync sets the boxes up again.
//
// # Service VIPs
//
// A box also balances the service VIPs of its container's networks in the
// container's namespace: the daemon hands the manager every VIP of the
// host's networks with its replicas (SetVIPs, after each dataplane Apply),
// and each box writes those on its own networks as table ip meshnet-vip
// through a second nftables connection into the namespace
// (dataplane.WriteClientVIPs, which owns the rules' shape), again when
// they or the container's networks change. So the container's own
// conntrack holds each connection's replica and un-NATs the replies,
// wherever they come from (dataplane/doc.go, "Service VIPs", says why).
// Unlike the DNS redirect the table has no lease: balancing in the kernel
// does not need meshnetd, so it stays across a stop or a kill -9, and a
// new meshnetd rewrites it; it goes when the container leaves its last
// meshnet network. A box that cannot write it says so in its status, and
// the host's own VIP table balances that container's connections.
// VIPTableReady lists the containers whose table is in place, and
// Config.VIPTableChanged says when that list changes: the daemon's bridge
// bypass takes only those past the bridge (the host's table needs the
// others' replies to cross it).
// `meshnetd --cleanup` does not enter containers: one still running keeps
// its table, inert once its meshnet interface is gone, until it stops.
//
// # Cost
//
// Per container: two sockets, two nftables netlink sockets, a UDP reader, a
// TCP acceptor, a 4-query batch (48 KiB of buffers), and one netlink
// transaction per lease third. Forwarded queries open a socket each in the
// namespace (a short-lived locked thread), as they wait on Docker anyway.
package sandbox
