// Package gossip owns meshnet's cluster: membership over hashicorp/memberlist
// (join, leave, failure detection) and the replicated state store every
// other package reads its picture of the mesh from (networks, address
// blocks, endpoints, node facts, removals). It touches neither the kernel
// nor Docker.
//
// # What it promises
//
//   - Owner authority. Every record has an owner node and only the owner
//     writes it (Store.Put, Store.Update and Store.Delete act as the local
//     node; Update is the read-modify-write that sees deletions made
//     meanwhile), which peers check: see "Records bound to their owner"
//     below. Versions are the owner's hybrid logical clock: above
//     everything the node has seen and at least its wall clock in
//     nanoseconds, so a node that lost its state and restarts still writes
//     above its earlier versions. If a
//     peer hands a node one of its own records it does not know, the owner
//     decides: newer than anything it knows means an earlier run wrote it
//     and it is adopted; at or below the tombstones it has collected means
//     a stale copy, and it is deleted again.
//   - Merge is order and duplication independent. Store.Merge keeps, per
//     key, the record that a total order prefers (version, then tombstone,
//     then value bytes), so every node that has seen the same records holds
//     the same state, whatever the order and however often they arrived.
//     Deletes are tombstones and win over older writes wherever they land.
//     Tombstones are collected after TombstoneTTL counted from their version
//     (the writer's clock), so all nodes drop them at about the same time.
//   - Convergence. Each change is broadcast (memberlist's piggybacked
//     gossip; every node passes on what was news to it, once, also when the
//     news came by push/pull first and a broadcast copy follows: relay.go),
//     and the whole state travels in memberlist's push/pull, so a node that
//     missed broadcasts or was partitioned converges anyway. The rejoin loop
//     contacts seeds and lost peers, because memberlist itself stops talking
//     to nodes it declared dead and two healed halves would otherwise stay
//     apart; and a node exchanges full state with peers that come back
//     (catchup.go), so what each side wrote during a partition crosses at
//     once, not at the next push/pull.
//   - Dead is not removed. A node memberlist declares dead (or that left)
//     keeps its records: Snapshot.UpRecords hides them at once (endpoints
//     stop carrying traffic) and shows them again if the node returns,
//     while Snapshot.Records keeps listing them (its address blocks stay
//     reserved). Only a KindRemoval record (meshctl rmpeer) hides a node's
//     records, up to the version it names; what the node writes after it
//     counts again.
//   - Bounded input. Records, messages and push/pull states from peers are
//     validated and size-bounded; a gzip bomb or a huge state is refused
//     without being held in memory. Values of the kinds this package
//     defines are checked where they enter (check.go): a node record with
//     an address that does not parse or a WireGuard key of the wrong
//     length, an endpoint with a bad address, MAC or subnet, a network with
//     a bad subnet, gateway or VNI, a removal reaching past its own version
//     never reach a consumer, so one bad record cannot fail every node at
//     once. A version more than MaxClockAhead (a minute) ahead of the local
//     wall clock is refused and the clock does not move to it: versions are
//     hybrid logical clocks, and one record at 2^64-1 would otherwise win
//     over every later write of its key, on every node, forever.
//   - One name, one node. A node started under a name that is alive
//     elsewhere in the cluster (another address, or a node key its member
//     does not advertise) is refused: memberlist refuses its address,
//     every node that sees the attempt logs it once, the owner of the name
//     keeps it, and the newcomer is told (Cluster.Conflict,
//     Store.Conflict) with the other node's address, and exits
//     (identity.go). A node that restarts with its key, from the same or
//     a new address, is the same node; one that restarts without it (a
//     wiped state folder, a reinstalled host) takes its name back as a
//     new identity (see "A name's key changes" below).
//   - Key rotation without downtime. Every node holds a memberlist keyring
//     (one primary key encrypts, every installed key decrypts); Cluster.Keyring
//     walks all members that are up through install, use and remove with
//     request/reply user messages, encrypted with the current key, and
//     reports each node's result (keyring.go). Each node persists its keyring
//     (Config.PersistKeys) before a change takes effect.
//
// # Record values
//
// This package is the one place record values are decoded and checked
// (decode.go): the wire types of every kind (values.go, and ipam's in
// ipamvalues.go, whose meaning stays ipam's), the parsers that turn them
// into typed values with netip addresses (ParseNode, ParseNetwork,
// ParseEndpoint, ParseRemoval, ParseBlock, ParsePool, ParseRequest), and
// Snapshot.View, which decodes a snapshot's nodes, networks and endpoints
// once, for every reader (the daemon's desired state, the DNS table, the
// sweep, the control API, ipam). Merge admits a peer's node, network,
// endpoint or removal record only if it parses, with the same functions
// every reader uses, so what one reader takes every reader takes; a bad
// record is refused and counted (Store.Rejections), and one that reaches a
// view another way (a node's own record from a version with other rules)
// is left out and counted in View.Rejected.
//
// It is here, not in a package of its own, because gossip itself must read
// values to admit records (node keys and addresses, removals: trust.go)
// and a record package above gossip could not serve that, while one below
// it would need a copy of Record and Kind. Readers take values only
// through these functions; Record has no Decode method.
//
// An endpoint's address has one form, the bare address ("10.42.0.5") that
// every meshnet version writes; "10.42.0.5/16", which ipam used to accept
// and the daemon silently dropped, is refused. The wire format is
// unchanged: old and new daemons parse each other's records, and
// decode_test.go keeps the encodings of the version before this layer.
//
// # Records bound to their owner
//
// Every node has an Ed25519 node key (the daemon keeps it in --state-dir,
// node.key), and its node record names the public key. Every record a node
// writes carries that key and a signature over kind, owner, ID, version,
// deletion flag and value bytes in a length-prefixed encoding (sign.go).
// Every record a peer hands over, by broadcast or push/pull, passes
// Store.Merge's admission (trust.go) or is dropped:
//
//   - the signature verifies, and its key is the one pinned to the owner's
//     name. The first key seen for a name is pinned (trust on first use)
//     and kept in the node's state file, so a restart opens no window.
//     A record for that name under another key is refused unless it is a
//     node record that moves the pin (next section). A record in a node's
//     own name under another key is refused too, unless it comes from an
//     earlier run of the node itself (next section); if it is a node
//     record and this node is the newcomer (it has had a peer for less
//     than newcomerWindow and the other started first), it is told so
//     (Store.Conflict) and exits.
//   - rolling upgrade: a node that has never been seen signing is taken to
//     run a version from before signing, and its unsigned records are
//     accepted (logged once per node, counted in meshctl status). Once a
//     node has signed, unsigned records in its name are forgeries. Old
//     nodes ignore the signature fields, so both versions keep one cluster
//     during the upgrade. They also drop them when they pass records on:
//     an upgraded node refuses such a stripped copy of a signing node's
//     record (counted as "unsigned record from a node that signs") and
//     takes the record from the owner or another upgraded node instead,
//     by broadcast or push/pull, so records may cross a half-upgraded
//     cluster a push/pull round later than usual.
//   - a removal (KindRemoval) is signed by whoever ran rmpeer, and never
//     taken for a node that is alive and has not announced itself since
//     the removal. It is taken whether or not its writer is alive here: a
//     removal must reach every node, through relays and after its writer
//     left, or the nodes would disagree on who holds the removed node's
//     address blocks (a rule that wanted the writer alive failed the
//     ipam simulation for exactly that).
//
// # A name's key changes
//
// A node key lives in the state folder, and a folder gets wiped: a host
// reinstalled or restored from an image reuses its hostname, which is a
// normal operator event and must not cost the host its name. Pinning a
// name for good (a first version of this did, releasing it only on
// meshctl rmpeer) left such a host refused under its own name forever.
// The rule now follows memberlist, which already decides who holds a name
// at the membership level: it refuses a live name at another address and
// lets a dead or departed name go (DeadNodeReclaimTime). A peer moves a
// name's pin to a new key when that key's node record is newer than the
// node record it holds for the name (so a stale copy never moves it back)
// and (trust.go, pinMovesLocked):
//
//   - the name is dead or left in its member view: the pin was released
//     at that transition, and a host back with a new key is taken as a
//     fresh identity. A name never seen as a member in this run is not
//     released: nothing says its holder is gone; or
//   - the name is alive, and memberlist has its member at the address the
//     record names with the new key in its metadata (every signing node
//     advertises its key there, identity.go): the same host restarted
//     with a wiped state folder before the cluster declared it dead. A
//     member's metadata is bound to its address by memberlist (a live
//     name at another address is a conflict, and a node refutes any alive
//     message about itself that carries other metadata), so a key holder
//     elsewhere cannot claim it by writing the address into a record; or
//   - a removal of the name (meshctl rmpeer) lies below the record.
//
// A second node under a live name at another address is refused on every
// node that sees the name alive, as memberlist refuses its address. Where
// nodes' views of a name's liveness differ (one sees it dead, another
// alive), they differ on its key just as memberlist differs on its
// address, and converge with it: once the name is alive everywhere at one
// address with one key in its metadata, every node takes that key's node
// record at the next exchange (a member whose key changes triggers a
// catch-up push/pull, catchup.go). Copies signed by a key a name moved
// away from are dropped without a word: they are superseded, not forged.
//
// The host itself sees its earlier run's records come back from its peers,
// signed by the old key. A record in its own name under another key is its
// own history when that key's node record names this node's own address
// and gossip port, or the address where a peer's member list at the join
// reports this name dead or left (identity.go, mergeDelegate), and
// predates this run (two live processes cannot share an address and port);
// or when the peer it came from also holds this run's node record, under
// this run's key (that peer moved the name's pin to the new key, and what
// it holds under the old one is history: a peer drops the old node record
// once it has the new one, so this is what tells a node whose first
// exchange failed on its side after the peer had read its state). The
// record also predates this run (earlierRunLocked). A node that
// started with an empty state folder adopts such records while it is new
// to the cluster (newcomerWindow from its first full state): the name,
// not the key, owns records, so whoever holds the name next holds its
// address blocks (which stay reserved meanwhile, as for any dead node).
// It writes each again under its own key at a new
// version (store.go), so its endpoints and address blocks stay its own,
// every copy under the old key is superseded, and peers, which now pin the
// new key, relay only the new ones; a record hidden by a removal stays
// hidden. A node that kept its state folder has its own copies and drops
// them. A node record of its name at another address that no peer reports
// gone is a live duplicate's: this node is the newcomer under a taken
// name and exits (above).
//
// Refusals are logged once per owner and reason and counted
// (Store.Rejections, meshctl status), so a peer that keeps sending the same
// bad records cannot flood the log.
//
// What this protects against: a holder of the gossip key (a stolen key, a
// host that was in the cluster once, a compromised container with the key
// file) writing in a live node's name: its endpoints, tunnel endpoints or
// WireGuard keys, address blocks, deletes of its records, removals of live
// nodes; and any record that would freeze a key or crash consumers. What
// it does not protect against: a thief of both the gossip key and a node's
// node.key, who is that node; a node that lies about its own records (its
// own endpoints, addresses and blocks are its word); a key holder that
// pins its key to a name no node has used yet (trust on first use), or
// that writes wrong records under its own name; and a key holder's load
// on memberlist itself (joining, probing). Since a name's key follows
// memberlist's view, whoever can steer that view can take a name: a key
// holder may claim the name of a node that is dead or left (as memberlist
// lets it claim its address), and one that forges memberlist's own
// messages (a leave of a live node, or an alive message at its address
// with a higher incarnation and its own key, until the node refutes it)
// can move the name on the nodes that believe it; and one that hands a
// node that has just started with an empty state folder (while it is new)
// made-up records "of its earlier run", under a node record naming its
// address or beside a copy of its own node record, gets them adopted. Two
// nodes that share one node.key (a cloned state directory) are refused at
// membership by address, but records the clone sends in its first
// exchange are validly signed and taken.
//
// # Member states
//
// The store's view of each node follows memberlist's events:
//
//	         join / rejoin
//	   +-----------------------------+
//	   v                             |
//	 alive ---(probes fail)---> [suspect] ---(timeout)---> dead
//	   |   <---(answers a ping)---                           |
//	   |                                                     |
//	   +---(graceful leave: Run's ctx done)---------------> left
//
//	what consumers see:   alive, suspect: Up, in UpRecords and Records
//	                      dead, left: not Up; out of UpRecords, still in Records
//	                      removed (KindRemoval): out of both, up to Removal.UpTo
//
// Memberlist v0.5 has no event for suspicion and never fills in Node.State
// (a field of its own shadows it). The node whose probe fails logs
// "Suspect NAME has failed" before it spreads the suspicion, so the log
// adapter reads suspicions from there (suspect.go): a node reports a peer
// suspect when it suspects it itself, until memberlist's verdict, until
// the suspect answers one of the pings this node then sends it every probe
// interval (a refutation makes no event either: without the pings a daemon
// restarted within its suspicion stayed suspect for the whole window, 25 s
// on a small cluster), or until the suspicion window passes.
// Consumers treat suspect like alive: withdrawing endpoints on suspicion
// would turn every lost probe into an outage. "left" cannot be read from
// memberlist's leave event either: a leaving node first re-advertises itself
// with the metadata "leaving", and the event carries that metadata.
//
// # A dead daemon is not a dead host
//
// Gossip cannot tell a host that is gone from a host whose meshnetd is
// stopped, crashed or being upgraded: both stop answering memberlist's
// probes and both end up dead here. Only a graceful leave (Run's ctx done)
// says "left", and meshnetd leaves only when told to (--leave-on-stop); a
// plain stop closes the Cluster without a leave, as a crash would. The
// difference is made above gossip, by the daemon's data-path probe
// (daemon/doc.go, "Gossip state and data-path state"): the kernel of a host
// whose daemon is down still answers echoes through the VXLAN tunnel (and
// a kernel WireGuard device), a host that is gone does not. The store reports memberlist's verdict
// unchanged; it is the daemon's reconcile that keeps a dead node's
// endpoints while its data path answers.
//
// # Why it is shaped so
//
// The store is pure Go with an injected clock and persistence hook, so its
// rules are tested without a network (store_test.go, merge_test.go); the
// Cluster only wires memberlist's delegates to it. The delegates never
// call the store: memberlist forbids blocking in them, and a local write
// holds the store's lock across its fsync, so they decode and enqueue, and
// one goroutine merges, persists and passes news on (inbound.go). Memberlist's *Node values
// are rewritten in place under memberlist's lock, so the Cluster reads them
// only inside the event callbacks (which hold that lock) and keeps its own
// copy for the rejoin loop. The owner persists its own records before
// announcing them (a write it cannot keep is undone and never published),
// because after a restart it must be the authority on them again.
//
// # Files
//
//	record.go, values.go, ipamvalues.go  records and their wire values
//	decode.go, check.go, view.go         decoding and checks, the typed view
//	store.go, snapshot.go                the store, its snapshots
//	trust.go, sign.go, identity.go       owners' keys, signatures, one name one node
//	cluster.go                           Cluster: config, New, Run, Close
//	delegate.go, inbound.go              memberlist's delegate, the merge queue
//	codec.go                             gossip messages and push/pull states on the wire
//	broadcast.go                         spreading records (queue, large ones over TCP)
//	members.go, suspect.go               members' liveness from memberlist's events and log
//	rejoin.go, seeds.go, catchup.go      finding the cluster again after a partition
//	keyring.go, keyring_rotate.go        gossip key rotation
//	heard.go, known.go, sightings.go     heard from the cluster, known peers, who sees whom
package gossip
