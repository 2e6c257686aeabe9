// Package metrics exports meshnetd's state to Prometheus and answers the
// health checks, on one HTTP listener (meshnetd --metrics-addr; off by
// default).
//
// What it owns:
//
//   - collector.go: a prometheus.Collector that reads, at scrape time, the
//     same status the control API gives meshctl (peers, endpoints, address
//     usage, WireGuard peers, the last apply) plus the store's record
//     counts and the DNS servers' Counts. Nothing is copied into gauges
//     between scrapes, so a scrape can never disagree with `meshctl` about
//     the state it read, and no code path can forget to update a gauge.
//   - events.go: counters and a histogram for what happens between scrapes
//     and leaves no state behind (each dataplane apply and its duration).
//   - gossip.go: a sink for memberlist's go-metrics, which memberlist feeds
//     through a process-wide global and which no one read before: packet
//     and byte counts per transport and membership messages. Installing
//     it is process-wide (InstallGossipSink), as go-metrics' global is.
//   - server.go: /metrics, /healthz (the process answers) and /readyz (the
//     parts the Docker engine and containers depend on are serving: the
//     daemon says which are not).
//
// Names follow Prometheus's conventions: the meshnet_ prefix, base units
// (seconds, bytes), _total on counters, labels of bounded cardinality
// (states, kinds, query types and rcodes from fixed sets; peers, nodes and
// subnets, which an operator chose). docs/metrics.md lists every metric;
// a test runs `promtool check metrics` on a scrape.
package metrics
