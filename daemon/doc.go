// Package daemon wires meshnetd together: the gossip cluster and its record
// store, IPAM, the dataplane, the DNS server, the Docker plugin and event
// watcher, and the control API. It owns no protocol or kernel logic of its
// own; it owns the decisions that need all of them at once.
//
// # What it owns
//
//   - The reconcile loop (daemon.go, desired.go, wireguard.go, tunnels.go):
//     on every store change and every 30 s it computes the
//     whole desired kernel state from one snapshot (this host's networks,
//     every live remote endpoint, WireGuard peers from the owned address
//     blocks, the members allowed on the tunnel ports) and hands it to
//     dataplane.Apply, and a new DNS table to the DNS server. Nothing is
//     applied from events: a missed event or a hand-deleted link is repaired
//     by the next pass.
//   - The plugin backends (plugin.go): Docker's calls become records
//     (networks, endpoints) and IPAM calls; they answer from local state, so
//     a host cut off from the others keeps starting containers in the
//     blocks it owns.
//   - Container facts the driver is never told (containers.go): names,
//     services, aliases, health and ports from the engine's events, written
//     into this node's endpoint records for DNS.
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
//   - Node identity: when gossip finds this node's name taken by a node
//     that was there first (another address or node key), Run closes
//     gossip without a graceful leave (which would announce the other
//     node's name as gone) and returns IdentityConflictError; meshnetd
//     exits with status 3.
//   - meshctl's answers (control.go, keys.go).
//
// # Why it is shaped so
//
// The packages below it are pure or sit behind one interface (the
// dataplane), so they are tested alone; what remains here is ordering and
// policy, tested with real stores and IPAM but without a kernel
// (desired_test.go, sweep_test.go, the fuzz targets), and end to end by the
// e2e suite.
package daemon
