// Package bench measures meshnet beside its peers in one run and reports ratios: the
// numbers an operator chooses a network by (issue 8, `make bench`).
//
// What it measures, each figure beside its peer, on the same machine in the same minutes:
//
//   - Dataplane, on two simulated hosts with real Docker engines (e2e/harness): iperf3 TCP
//     throughput with 1 and 4 streams and TCP request/response round trips, container to
//     container, over the underlay (host to host), Docker Swarm's overlay, meshnet vxlan,
//     meshnet wireguard, and a standalone wireguard-go built from the module version go.mod
//     names (host to host over its tunnel); new TCP connections per second (connect, a 1-byte
//     round trip, close) over each; and a service VIP (one replica on host B, vip mode)
//     against the same replica addressed directly, so the kernel balancing's cost is the
//     ratio.
//   - Time to reachability: a container started on host B, first ICMP echo reply seen from a
//     container on host A, meshnet against Swarm's overlay, runs interleaved.
//   - DNS: dnsperf at 127.0.0.11 from a meshnet container for `<service>.meshnet` (meshnet's
//     server in the container's namespace) and from a container on a Docker bridge for a
//     container name (Docker's embedded resolver alone); and meshnet's server alone in
//     process, with and without its per-source rate limit, with a CPU profile.
//   - Control plane, in process: gossip convergence of a record and failure detection at
//     50, 100 and 250 nodes on loopback, bytes sent per node per second, memory per 1,000
//     endpoints, and dataplane Apply of 1,000 and 10,000 remote endpoints in a fresh
//     network namespace.
//
// Where a figure has a target, the run also says where the time goes: perf samples of the
// processes carrying an iperf3 stream over each overlay path (grouped into netfilter, bridge,
// tunnel, copies, crypto) and a pprof of the DNS server.
//
// What it promises: every number in the report is measured in the run that prints it, with
// the conditions it was measured under (cores, kernel, load, versions); a path that cannot be
// measured (a dataplane not built yet, a tool missing) is reported "unavailable: reason"
// rather than failing the run; everything it starts it stops (processes by PID, namespaces,
// links, engines, swarm state through the harness's teardown).
//
// Why it is shaped so: ratios measured side by side survive a noisy or shared machine far
// better than absolute figures compared across runs, so each peer runs on the same hosts,
// against the same engines, interleaved where the figure is short. Benchmarks are not tests:
// nothing here asserts a timing; a missed target is a line in the report, with what it missed
// by. Tools run in a container's network namespace with nsenter from the host's file system,
// so the only image is the harness's busybox (no registry is reachable).
package bench
