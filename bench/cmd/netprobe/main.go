// Command netprobe is the benchmark's measuring tool inside a container's network namespace
// (run there with nsenter, from the host's file system, so no image needs it):
//
//	netprobe serve -addr :7100                       TCP echo server for rr
//	netprobe rr -addr 10.42.0.5:7100 -duration 5s    request/response round trips, JSON out
//	netprobe conn -addr 10.42.0.5:7100 -duration 5s  a new connection per round trip, JSON out
//	netprobe whoserve -name r1 -addr :7101           answers each connection with its name
//	netprobe spread -addr 10.42.0.9:7101 -duration 5s  connections to whoserves behind a VIP:
//	                                                 who answered how often, and last when (JSON)
//	netprobe reach -target 10.42.0.9 -timeout 30s    ICMP echo every 10 ms until the first reply,
//	                                                 prints the reply's wall-clock time (JSON)
//
// Why a tool of its own: netperf's TCP_RR (the usual request/response test) is not in Debian
// main, iperf3 has no request/response mode, and `ping -W1` in a loop measures reachability in
// whole seconds. A static Go binary runs in any namespace and reports percentiles.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netprobe serve|rr|conn|whoserve|spread|reach [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "rr":
		err = rr(os.Args[2:])
	case "conn":
		err = conn(os.Args[2:])
	case "whoserve":
		err = whoserve(os.Args[2:])
	case "spread":
		err = spread(os.Args[2:])
	case "reach":
		err = reach(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q: want serve, rr, conn, whoserve, spread or reach", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netprobe:", err)
		os.Exit(1)
	}
}
