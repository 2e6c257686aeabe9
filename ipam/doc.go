// Package ipam hands out container addresses of meshnet pools so that no
// two hosts ever hold the same one, without consensus and through
// partitions.
//
// # What it owns
//
// Pools keyed by subnet (the pool ID is the subnet string, e.g.
// "10.42.0.0/16"); the cutting of each pool into blocks; which node owns
// each block; allocation inside owned blocks; the local allocation table
// (Dir/ipam.json) and a cache of the other nodes' ipam records
// (Dir/ipam-cluster.json). It touches neither the kernel nor Docker.
//
// # What it promises
//
//   - A node allocates only inside blocks it owns, and every block has at
//     most one owner. Ownership moves only by a handoff from the owner, or
//     to an heir after an operator removed the owner (meshctl rmpeer).
//   - It never hands out an address that is reserved (subnet, broadcast,
//     gateway), that appears in any endpoint record of any node, live or
//     dead, or that another node lists as held.
//   - An address is returned only after the table that records it is on
//     disk (write temp, fsync, rename, fsync dir): a crash never loses or
//     doubles an allocation; a damaged table stops the node with an error
//     naming the file, never a silent reset.
//   - A node creates a pool, and asks for blocks, only once it has heard
//     from its cluster in the life of its state (see "Waiting for the
//     cluster"); what it owns by its own persisted records it uses at any
//     time, also alone.
//   - The one way to get an address held twice is a pool created on both
//     sides of a partition (or a node removed while it still ran). When the
//     sides meet, every node picks the same winner from the same records;
//     each doubled address is reported (Status().Conflicts, a log line)
//     and handed out to nobody else while either holder keeps it.
//
// # Why it is shaped so
//
// The anchor is Weave Net's ring IPAM: space is split among nodes; a node
// allocates freely in what it owns, also when partitioned; only the owner
// gives space away, and only space it does not use; a recipient's space
// is never taken against its will; rmpeer hands a dead node's space to the
// node it is run on. Weave avoids two rings by consensus among the first
// nodes; meshnet lets both sides create and resolves at merge instead,
// because a Docker host must be able to create a network while alone.
//
// Every fact lives in records of the gossip store, each written only by
// its owner (the store's rule), so nodes never overwrite each other:
//
//	ipam-pool/N/<subnet>           N takes part: lineage, gateway, block size,
//	                               spare blocks, requests it answered
//	block/N/<subnet prefix lin>    N's stance on a prefix: a claim, a grant
//	                               (To), or a concession (with Held addresses)
//	ipam-request/N/<subnet>        N asks one donor for blocks
//
// A node's stance on a block is its most specific record covering it (the
// creator's single record for the whole subnet covers every block it has
// not handed on). Each handoff or inheritance writes generation Gen+1; the
// highest live generation names the owner. A grant is written before the
// grantee claims, so at every instant at most one node's own records say
// it owns a block — and a node's own records alone are an upper bound of
// what it owns, which is what it trusts after a restart.
//
// # Block size
//
// A pool's creator fixes it for everyone (--ipam-opt block-prefix=N
// overrides): 64 addresses (/26 in IPv4), grown so a pool has at most
// 16384 blocks (so a /8 gets /22s; per-change work stays in the
// milliseconds), shrunk down to 16 addresses (/28) so a pool has at least
// 16 blocks and one for every node up at creation (a /24 gets /28s). A
// subnet that cannot give every current node a /28 is refused with the
// minimum size to use. 64 addresses serve a typical host with one block
// and waste little; 16 blocks leave room for hosts that join later.
//
// # Handoff
//
//  1. Node B, with no free address, writes ipam-request{Seq, Donor: A}:
//     the up member advertising the most spare blocks.
//  2. A picks blocks it can spare (owned, not contested, no other node's
//     address in them; empty ones first, then ones it uses a quarter or
//     less), writes a grant {To: B, Gen+1, ForSeq, Held: the addresses A
//     keeps there} for each — from then A does not own them, B avoids
//     what A keeps — then records Seq as answered.
//  3. B sees the grant and writes its claim {Gen+1, From: A}; it allocates.
//
// A donor that has nothing says so by answering with no grant; B asks the
// next donor, or the same one after RequestTimeout. A donor that does not
// answer at all most likely lost the broadcast (or B's pool record, without
// which the request is not a member's): after a quarter of RequestTimeout B
// gossips both once more, and after RequestTimeout it asks again at once
// (another donor with spare blocks first). A preferred address in another
// node's block asks for that block; its owner gives it only if empty.
// Crash anywhere: records are persisted by the store before they are
// gossiped, a lost answer only means an extra block.
//
// # Conflicts
//
// Two hosts creating one subnet at about the same time make two lineages.
// The daemon makes that rare (before a host creates a pool it exchanges
// state with two peers, so a creation made a moment before elsewhere is
// joined, not rivalled), but cannot rule it out. Lineages (creations of a
// subnet): the later epoch wins (a pool every
// node released and created again with other settings), else the first
// creation (creator's clock), else the smaller creator name. Within a
// lineage, two claims at the same generation: the smaller node name wins.
// The loser rewrites its stance as conceded, listing the addresses it
// still holds in the block (Held); a multi-block concession lists the
// blocks whose Held lists to wait for (HeldIn). The winner allocates
// nothing in the block until that concession is visible, then avoids the
// listed addresses; it lists those it holds too, so every node reports
// the same conflicts. Addresses held by both stay unavailable until both
// release them.
//
// # Removal
//
// rmpeer writes gossip.KindRemoval; the removed node's records up to the
// removal vanish. A block whose last holder vanished is orphaned — only on
// that evidence: a block of which a node merely heard nothing (restarted
// alone, say) is unknown, and nobody takes it. The heir (the node that ran
// rmpeer, else the smallest-named member using the pool) claims orphans at
// Gen+1. A removed node that comes back finds its old records gone: it
// concedes what it still holds, and starts over as a new member.
//
// # Waiting for the cluster
//
// A node that has heard from nobody sees every subnet free: a pool it
// created would own the whole subnet and hand out, from the bottom, what
// other hosts hold (a host booting before its seeds answer, gossip
// blocked, a state folder wiped). So until MarkJoined, RequestPool of a
// subnet it has no lineage of fails with ErrNotJoined, and RequestAddress
// fails with it at once when the node owns no free address (instead of
// waiting HandoffWait for a block nobody can send). Joining a lineage it
// already knows, and allocating in blocks its own records say it owns,
// are allowed: that is the persisted view a restarted node trusts during
// a partition.
//
// The daemon calls MarkJoined after the first full state exchange with a
// peer (gossip.Cluster.Heard: the store then holds what that peer knew),
// or at once when the node is the first of a new cluster by the
// operator's word: its --join names no node but itself and it knows no
// peers from an earlier run. The mark is kept in the cluster cache
// (ipam-cluster.json) and counts only while the node's own records exist
// too: losing either means the view it vouched for is gone, and the node
// waits to hear again. A restart with the state intact keeps it, so a
// node restarted alone during a partition goes on as before.
//
// # Restarts
//
// A node's own records (persisted by the store) bound what it owns; its
// table (ipam.json) says what it handed out; the cluster cache
// (ipam-cluster.json, written when others' block records change, before
// the node acts on them) says what others own and hold — Weave persists
// its ring for the same reason. A node that restarts alone thus behaves
// as before; one whose cache is gone sees others' blocks as unknown and
// keeps to its own.
//
// # Block ownership
//
//	            RequestPool on a subnet nobody has
//	                          │ claim, gen 1
//	                          ▼
//	┌───────────────────► OWNED by A ◄──────────────────────┐
//	│                (A allocates inside)                   │
//	│                         │ A grants to B, gen g+1      │
//	│                         │ (only if nothing held in it)│
//	│                         ▼                             │ heir H claims,
//	│                  GRANTED to B                         │ gen g+1
//	│              (nobody allocates)                       │
//	│                         │ B claims, gen g+1           │
//	│   B grants on           ▼            B removed        │
//	└──────────────────── OWNED by B ─────────────────► ORPHANED
//	                          │                   (B's records vanish)
//	   rival claim (same gen, │ ▲ rival concedes, listing
//	   or losing lineage)     ▼ │ what it still holds
//	                   OWNED by B, FROZEN
//	                 (B allocates nothing here)
//
// # Two loops, one lock
//
// RequestAddress (Docker's allocation path) does as little as it can under
// the IPAM's lock: take a free address in a block this node owns, else
// claim the blocks handed to it, else ask a donor and wait for the store
// to change. Everything else this node owes the cluster — retiring a
// lineage that lost, conceding lost blocks, inheriting orphans, answering
// other nodes' requests, publishing its pool record and conflicts — is
// Run's reconcile pass, made on every store change and every
// ResyncInterval. So a handoff needs both: the donor's Run grants, the
// requester's RequestAddress claims. Every wait reads Config.Clock, which
// tests replace with a clock.Fake they advance.
//
// # Where things are
//
//	config.go     Config and its defaults
//	ipam.go       the IPAM type, New, Run, the cached view of the store
//	pool.go       RequestPool, ReleasePool, creating a lineage
//	alloc.go      RequestAddress, finding a free address
//	release.go    ReleaseAddress, ReleaseStale
//	reconcile.go  Run's pass: retire, join, concede, publish
//	handoff.go    requests, grants and claims
//	inherit.go    the heir's claims
//	conflicts.go  doubly held addresses
//	own.go        this node's own records
//	view.go       a pool as the records say (pure: same records, same view)
//	cluster.go    the input of views; the cluster cache file
//	joined.go     waiting for the cluster (MarkJoined)
//	records.go    the record types (their wire form and decoding are
//	              gossip's, ipamvalues.go and decode.go); state.go the
//	              allocation table
//	addr.go       address arithmetic and block geometry; status.go Status
//	              (for meshctl; no JSON here, control's types own it)
//	owners.go     Owners: each node's blocks merged into the fewest
//	              prefixes, what the dataplane routes to each host
//
// # What the daemon must do
//
// Wire the store's Persist hook and Load the node's own state before New
// (ownership lives in those records); run Run for as long as the IPAM is
// used (without it no handoff completes); call MarkJoined once the node has
// heard from its cluster, as above (until then creations fail with
// ErrNotJoined, which the plugin turns into an error naming the seeds);
// write EndpointInfo.Subnet as the pool ID and Addr as the bare address
// "a.b.c.d" (the one form the record layer takes, gossip/decode.go); before writing a removal, ask CanRemove, and ask the
// cluster whether any member still sees the node alive (the daemon's
// rmpeer does both).
package ipam
