// Package dns is meshnet's DNS server: it answers the meshnet zone
// (default "meshnet.") from a table of container endpoints and forwards
// other names to the host's resolvers, for the containers of its host only.
// The same server, given a Scope, is also each container's own resolver
// (see package sandbox): then it answers the names Docker users write
// without a domain, and hands the rest to Docker's resolver.
//
// # What it owns
//
//   - Table: an immutable index built once from []Entry by NewTable. It
//     publishes <service>.<domain>, tasks.<service>.<domain>,
//     <service>.<network>.<domain>, <container>.<domain>,
//     <container>.<network>.<domain>, PTR for every known address, SRV
//     _<port|name>._<proto>.<service>.<domain>, and SOA/NS at the apex.
//     Docker names become labels through Label (lower case, '_' and '.'
//     and anything else illegal become '-').
//   - Bare names per network: every entry's container name, services and
//     aliases, indexed by the entry's Subnet (the network's identity on
//     every host; Docker network names may differ between hosts). A
//     server with a Scope (the client's networks) answers a single-label
//     name ("api.", "shop_api_1.") with every address of that name on
//     those networks, rotated as zone names are; a name on none of them
//     goes to Config.Forward. Without a Scope (the shared server on the
//     DNS address, which hears every container of the host and cannot
//     tell which networks a source is on) bare names are not answered.
//   - Server: a dns.Handler (ServeDNS, CoreDNS style) plus the sockets
//     (Listen/Run/Close): several UDP sockets bound with SO_REUSEPORT, read
//     and written in batches, each with a cache of packed replies, and one
//     TCP listener, a forwarder with fail-over, and a per-source rate
//     limiter.
//
// It does not know where entries come from: the daemon builds a Table from
// the gossip store on every change and calls SetTable. meshctl's lookup
// uses Table.Lookup, which answers exactly as the server would. Nor does it
// know where its sockets are: a container's server gets sockets opened in
// the container's namespace (UseConns) and a Config.Forward that reaches
// Docker's resolver there.
//
// # Why bare names are answered by a server per container
//
// Docker's embedded resolver (127.0.0.11, inside each container) answers a
// name it knows, a local container, a compose service, an alias, with the
// endpoints on its own host only, and never forwards it; compose files and
// Swarm stacks say "api", not "api.meshnet". The answer must therefore be
// given before Docker's resolver sees the query, and by something that
// knows which networks the asker is on: a server in the container's own
// namespace, scoped to it. Docker's resolver stays behind it for all the
// names meshnet does not own (the container's other networks, the world),
// so nothing a container could resolve before is lost.
//
// # What it promises
//
//   - Replicas: every address of a name, deduplicated, rotated per query
//     (each record set has its own atomic counter; the answer starts at
//     counter mod n), so over n queries each replica comes first once.
//   - Negative answers are exact: an unknown name is NXDOMAIN, a known
//     name without the asked type (AAAA of an IPv4-only service, or an
//     empty non-terminal such as "<network>.<domain>") is NODATA; both
//     carry the zone's SOA so resolvers cache them for TTL seconds only.
//   - Answers are authoritative (AA), TTL Config.TTL (5 s), owner names
//     spelled as asked (0x20-randomising resolvers check that).
//   - EDNS0: the client's UDP size is honoured (512..MaxUDPSize), an OPT
//     is echoed with the DO bit; an answer that does not fit over UDP is
//     cut with TC set and served whole over TCP. EDNS versions other than
//     0 get BADVERS.
//   - Never an open resolver: names outside the zone (and PTR of unknown
//     addresses) are forwarded only for sources AllowRecursion accepts
//     and, when RecursionInterface is set, for UDP queries that arrived on
//     an interface it accepts; others get REFUSED (and answers from the
//     zone carry no RA). With no upstream, SERVFAIL.
//   - Malformed input never panics: an unparseable header gets no reply
//     (any reply could be aimed at a spoofed source), a bad message with a
//     parseable header gets FORMERR (NOTIMP for opcodes other than QUERY),
//     and responses are ignored. A reply is never larger than its query
//     unless the query parsed.
//   - Memory stays bounded under floods: the rate limiter tracks at most
//     RateLimit.MaxSources sources; forwards in flight are capped.
//
// # Why it is shaped so
//
// The query path takes no lock: the table is swapped with an
// atomic.Pointer and read-only afterwards, except for the rotation
// counters, which are atomics. Building a whole table per change costs
// far less than the queries it serves, and no query ever sees half an
// update.
//
// UDP does not go through miekg's dns.Server: its one-goroutine-per-packet
// model would spend more on the goroutine than on an in-memory answer, and
// it parses before any hook sees the source. Each SO_REUSEPORT socket has
// one goroutine that rate-limits on the source address first, parses the
// header, then the message, and answers in place; only forwards (which
// wait on the network) go to a goroutine. The fuzz test drives this exact
// path (handlePacket) with raw bytes. TCP, which carries only the retries
// of truncated answers, uses miekg's dns.Server with the same header
// checks (acceptHeader) and ServeDNS.
//
// A table answer costs far less than the system calls around it (profiled:
// 3/4 of the server's CPU was one recvfrom and one sendto per query), so
// a listener reads up to 64 queries per wakeup (recvmmsg, through
// x/net/ipv4 ReadBatch), answers each into a buffer of its own, and sends
// the answers with one sendmmsg. Under load a wakeup finds many queries
// waiting; when idle a batch is one query and nothing waits for a batch
// to fill. A forward takes a writer of its own and answers on its own
// time. Read buffers are 4 KiB per query: a longer UDP query (there is
// none in practice: one question and at most an OPT and a TSIG; miekg's
// server reads 512 bytes) arrives cut and gets FORMERR.
//
// What remains of the user-space cost (unpack, records, pack: about as
// much as the syscalls once those are batched) goes to a reply cache per
// listener (replyCache, no lock): the key is the query's bytes after the
// ID plus the RA bit, which is everything the reply depends on besides the
// table and the rotation, so a hit is the slow path's reply with the
// query's ID. A/AAAA entries remember where each address sits and write
// them in the next rotation order of the record set's counter, the same
// counter as uncached answers, so rotation per query is unchanged. The
// cache belongs to one table (the first query after SetTable empties it),
// holds at most 1024 entries and 1 MiB (a flood of distinct names empties
// it rather than grows it), and keeps neither answers that rotate several
// sets (SRV, ANY) nor cut ones. Rate limiting still comes first.
//
// Recursion is decided by where a query came in, not only by its source
// address: a UDP source is whatever the sender wrote, so a host on the
// underlay could send a query to the service address "from" a
// container's address and have it forwarded. Every UDP socket asks the
// kernel for each datagram's arrival interface (IP_PKTINFO /
// IPV6_RECVPKTINFO, set before bind so no datagram comes without it); the
// batch read returns it with the datagram, the writer of the query
// carries it, and mayRecurse hands it to RecursionInterface, which the
// daemon answers from an immutable set of this host's container bridges
// swapped atomically when links change: the query path still takes no
// lock. A datagram whose interface is unknown is not forwarded. TCP
// sources answered the handshake, so AllowRecursion alone judges them.
//
// Over the rate limit a UDP query is answered truncated: its header and
// question with TC set, nothing else (truncatedReply). A dropped query
// costs a glibc client its whole timeout (5 s) before it tries again; TC
// moves it to TCP at once, so a busy but legitimate client is slowed,
// never stalled. Truncated answers have a budget of their own, the rate
// again; past twice the rate a source is flooding, not resolving, and its
// queries are dropped unanswered: a truncated answer costs the server
// about what an answer does (the write is most of either), so only
// silence makes a flood cheaper than the clients beside it. The reply is never larger than the query, so it
// amplifies nothing, and the server is reachable only from the host and
// its containers, whose sources the dataplane's anti-spoofing pins. TCP
// queries (the retries) have a bucket per source of their own; over that
// too a source is flooding and gets REFUSED. glibc, Go and musl from 1.2.4
// retry over TCP; an older musl takes the empty truncated answer as the
// answer, so a container of an old Alpine that legitimately sends more
// than the limit needs --dns-rate-limit raised.
//
// Forwarding goes over the transport the client used, so a truncated
// upstream answer reaches the client with TC and its TCP retry is
// forwarded over TCP. Upstreams are tried in turn with a short timeout
// (ForwardTimeout, 1 s), starting with the one that answered last, so a
// dead resolver costs one timeout once rather than on every query.
//
// Default upstreams come from /etc/resolv.conf minus resolvers that lead
// back here: this server's own address, Docker's embedded resolver
// 127.0.0.11 (it forwards to the engine's "dns", which DESIGN points at
// this server), and systemd-resolved's stub 127.0.0.53, replaced by
// resolved's real upstreams as Docker does.
package dns
