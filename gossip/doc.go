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
//     meanwhile). Versions are the owner's hybrid logical clock: above everything the node has
//     seen and at least its wall clock in nanoseconds, so a node that lost
//     its state and restarts still writes above its earlier versions. If a
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
//     gossip; every node passes on what was news to it, once), and the whole
//     state travels in memberlist's push/pull, so a node that missed
//     broadcasts or was partitioned converges anyway. The rejoin loop
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
//     without being held in memory.
//   - Key rotation without downtime. Every node holds a memberlist keyring
//     (one primary key encrypts, every installed key decrypts); Cluster.Keyring
//     walks all members that are up through install, use and remove with
//     request/reply user messages, encrypted with the current key, and
//     reports each node's result (keyring.go). Each node persists its keyring
//     (Config.PersistKeys) before a change takes effect.
//
// # Member states
//
// The store's view of each node follows memberlist's events:
//
//	         join / rejoin
//	   +-----------------------------+
//	   v                             |
//	 alive ---(probes fail)---> [suspect] ---(timeout)---> dead
//	   |   <---(refuted)-------                              |
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
// suspect when it suspects it itself, until memberlist's verdict or until
// the suspicion window passes (a refutation makes no event either).
// Consumers treat suspect like alive: withdrawing endpoints on suspicion
// would turn every lost probe into an outage. "left" cannot be read from
// memberlist's leave event either: a leaving node first re-advertises itself
// with the metadata "leaving", and the event carries that metadata.
//
// # Why it is shaped so
//
// The store is pure Go with an injected clock and persistence hook, so its
// rules are tested without a network (store_test.go, merge_test.go); the
// Cluster only wires memberlist's delegates to it. Memberlist's *Node values
// are rewritten in place under memberlist's lock, so the Cluster reads them
// only inside the event callbacks (which hold that lock) and keeps its own
// copy for the rejoin loop. The owner persists its own records before
// announcing them (a write it cannot keep is undone and never published),
// because after a restart it must be the authority on them again.
package gossip
