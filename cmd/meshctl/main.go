// Command meshctl is the operator's window into one meshnetd: who is in
// the mesh, which networks, endpoints and services it knows, what its DNS
// would answer.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/internal/version"
)

const usage = `Usage: meshctl [--socket PATH] [-o table|json] COMMAND [ARGS]

Commands:
  peers          nodes in the mesh: address, state (alive|suspect|dead|left), for how long
  status         this daemon: membership, dataplane, DNS, address usage, conflicts;
                 exits 1 when it lists problems (so scripts and checks can act on it)
  networks       meshnet networks, their hosts and address blocks
  endpoints      container endpoints: container, host, address
  services       service names and their replicas
  lookup NAME    what the DNS server answers for NAME (from the daemon's table)
  rmpeer [--force] NODE
                 remove a dead node: release its address blocks (refused while
                 any live node still sees it alive, unless --force)
  keygen         print a new gossip key (base64, 32 bytes)
  keys list|install KEY|use KEY|remove KEY
                 rotate the gossip key on every node: install, use, remove
  version        meshctl's and the daemon's versions

Flags (before or after the command):
  --socket PATH  control socket (default /run/meshnet/meshnet.sock, or MESHNET_CONTROL_SOCKET)
  -o FORMAT      table (default) or json
  --version      print meshctl's version and exit (the daemon's: meshctl version)

Exit status: 0 on success, 1 on an error or when status lists problems,
2 on a usage error.
`

type options struct {
	socket  string
	output  string
	version bool // --version: print meshctl's own version, ask no daemon
	force   bool // rmpeer: remove even while a live node still sees the node alive
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opts := options{socket: control.DefaultSocket, output: "table"}
	if s := os.Getenv("MESHNET_CONTROL_SOCKET"); s != "" {
		opts.socket = s
	}
	rest, err := parseOptions(args, &opts)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshctl: %v\n\n%s", err, usage)
		return 2
	}
	if opts.version {
		fmt.Fprintf(stdout, "meshctl %s (%s)\n", version.String(), runtime.Version())
		return 0
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if opts.output != "table" && opts.output != "json" {
		fmt.Fprintf(stderr, "meshctl: -o %q: choose table or json\n", opts.output)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := dispatch(ctx, rest[0], rest[1:], opts, stdout); err != nil {
		var pe problemsError
		if errors.As(err, &pe) {
			// The status printed says what is wrong; nothing is added on
			// stderr, so `-o json status 2>&1` stays one JSON document.
			return 1
		}
		fmt.Fprintf(stderr, "meshctl: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// problemsError is meshctl status's exit 1: the status was printed and
// lists problems.
type problemsError int

func (e problemsError) Error() string {
	if e == 1 {
		return "status lists 1 problem"
	}
	return fmt.Sprintf("status lists %d problems", int(e))
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// parseOptions takes --socket and -o from anywhere in args and returns the
// rest (the command and its arguments).
func parseOptions(args []string, o *options) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		switch name {
		case "h", "help":
			return nil, flag.ErrHelp
		case "force":
			o.force = true
		case "version":
			o.version = true
		case "socket", "o", "output":
			if !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("flag %s needs a value", a)
				}
				i++
				val = args[i]
			}
			if name == "socket" {
				o.socket = val
			} else {
				o.output = val
			}
		default:
			return nil, fmt.Errorf("unknown flag %s", a)
		}
	}
	return rest, nil
}

func dispatch(ctx context.Context, cmd string, args []string, o options, w io.Writer) error {
	c := control.NewClient(o.socket)
	want := func(n int, what string) error {
		if len(args) != n {
			return usageError{fmt.Sprintf("%s takes %s", cmd, what)}
		}
		return nil
	}
	switch cmd {
	case "keygen":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("read random bytes: %w", err)
		}
		fmt.Fprintln(w, base64.StdEncoding.EncodeToString(key))
		return nil
	case "version":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		local := control.Version{Version: version.String(), Go: runtime.Version()}
		remote, err := c.Version(ctx)
		if o.output == "json" {
			v := map[string]any{"meshctl": local}
			if err == nil {
				v["meshnetd"] = remote
			} else {
				v["meshnetd_error"] = err.Error()
			}
			return printJSON(w, v)
		}
		fmt.Fprintf(w, "meshctl   %s (%s)\n", local.Version, local.Go)
		if err != nil {
			fmt.Fprintf(w, "meshnetd  unreachable: %v\n", err)
			return nil
		}
		fmt.Fprintf(w, "meshnetd  %s (%s)\n", remote.Version, remote.Go)
		return nil
	case "peers":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		peers, err := c.Peers(ctx)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return printJSON(w, peers)
		}
		return printPeers(w, peers, time.Now())
	case "status":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if o.output == "json" {
			err = printJSON(w, st)
		} else {
			err = printStatus(w, st, time.Now())
		}
		if err == nil && len(st.Problems) > 0 {
			err = problemsError(len(st.Problems))
		}
		return err
	case "networks":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		nets, err := c.Networks(ctx)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return printJSON(w, nets)
		}
		return printNetworks(w, nets)
	case "endpoints":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		eps, err := c.Endpoints(ctx)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return printJSON(w, eps)
		}
		return printEndpoints(w, eps)
	case "services":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		svcs, err := c.Services(ctx)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return printJSON(w, svcs)
		}
		return printServices(w, svcs)
	case "lookup":
		if len(args) < 1 || len(args) > 2 {
			return usageError{"lookup takes a name and optionally a type: meshctl lookup api.meshnet [A|AAAA|SRV|PTR]"}
		}
		qtype := ""
		if len(args) == 2 {
			qtype = args[1]
		}
		res, err := c.Lookup(ctx, args[0], qtype)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return printJSON(w, res)
		}
		fmt.Fprintf(w, "%s %s: %s\n", res.Name, res.Type, res.Rcode)
		for _, a := range res.Answers {
			fmt.Fprintf(w, "  %s\n", a)
		}
		return nil
	case "keys":
		return runKeys(ctx, c, args, o, w)
	case "rmpeer":
		if err := want(1, "one node name: meshctl rmpeer [--force] NODE"); err != nil {
			return err
		}
		if err := c.RemovePeer(ctx, args[0], o.force); err != nil {
			return err
		}
		if o.output == "json" {
			return printJSON(w, map[string]string{"removed": args[0]})
		}
		fmt.Fprintf(w, "removed %s: its address blocks are free to reclaim\n", args[0])
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q (see meshctl --help)", cmd)}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// dataPath is the data-path column of meshctl peers: what the probes
// through the tunnels see, with the round trip while up. A peer probed
// through VXLAN alone reads as before ("up 312µs"); one probed through
// WireGuard names each tunnel ("vxlan up 312µs, wireguard down 12s").
func dataPath(p control.Peer, now time.Time) string {
	one := func(state string, since time.Time, rtt float64) string {
		if state == "up" {
			return fmt.Sprintf("up %s", time.Duration(rtt*float64(time.Second)).Round(time.Microsecond))
		}
		return state + " " + age(now, since)
	}
	switch {
	case p.Self:
		return "self"
	case p.DataPath == "":
		return "-"
	case len(p.Tunnels) == 0 || (len(p.Tunnels) == 1 && p.Tunnels[0].Tunnel == "vxlan"):
		return one(p.DataPath, p.DataPathSince, p.RTTSeconds)
	}
	parts := make([]string, 0, len(p.Tunnels))
	for _, t := range p.Tunnels {
		parts = append(parts, t.Tunnel+" "+one(t.State, t.Since, t.RTTSeconds))
	}
	return strings.Join(parts, ", ")
}

func printPeers(w io.Writer, peers []control.Peer, now time.Time) error {
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	tw := table(w)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tSINCE\tDATA PATH\t")
	for _, p := range peers {
		name := p.Name
		if p.Self {
			name += " (self)"
		}
		state := p.State
		if p.Removed {
			state += ",removed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", name, p.Address, state, age(now, p.Since), dataPath(p, now))
	}
	return tw.Flush()
}

func printStatus(w io.Writer, st control.Status, now time.Time) error {
	tw := table(w)
	enc := "yes"
	if !st.Encrypted {
		enc = "NO (--insecure)"
	}
	fmt.Fprintf(tw, "Node:\t%s\n", st.Node)
	fmt.Fprintf(tw, "Version:\t%s\n", st.Version)
	fmt.Fprintf(tw, "Address:\t%s:%d\n", st.Address, st.GossipPort)
	fmt.Fprintf(tw, "Gossip encrypted:\t%s\n", enc)
	fmt.Fprintf(tw, "Up:\t%s\n", age(now, st.Started))
	fmt.Fprintf(tw, "Peers:\t%d alive, %d suspect, %d dead, %d left\n", st.Members.Alive, st.Members.Suspect, st.Members.Dead, st.Members.Left)
	fmt.Fprintf(tw, "Networks:\t%d (%d local endpoints)\n", st.Networks, st.LocalEndpoints)
	if j := st.JoinedCluster; j != nil {
		fmt.Fprintf(tw, "Allocating:\tsince %s ago (%s)\n", age(now, j.At), j.How)
	} else {
		fmt.Fprintf(tw, "Allocating:\tNO: waiting to hear from the cluster\n")
	}
	dp := st.Dataplane.Default
	if st.Dataplane.Description != "" {
		dp += " — " + st.Dataplane.Description
	}
	fmt.Fprintf(tw, "Dataplane:\t%s\n", dp)
	last := "never"
	if !st.Dataplane.LastApply.IsZero() {
		last = age(now, st.Dataplane.LastApply) + " ago"
	}
	fmt.Fprintf(tw, "Last apply:\t%s (%d applies)\n", last, st.Dataplane.Applies)
	if st.Dataplane.BridgeBypass != "" {
		fmt.Fprintf(tw, "Bridge bypass:\t%s\n", st.Dataplane.BridgeBypass)
		if f := st.Dataplane.BridgeBypassFrames; f != nil {
			fmt.Fprintf(tw, "Bypassed frames:\t%d to other hosts, %d into containers here (since meshnetd started)\n", f.ToOtherHosts, f.ToContainers)
		}
	}
	if st.Dataplane.LastError != "" {
		fmt.Fprintf(tw, "Apply error:\t%s\n", st.Dataplane.LastError)
	}
	dns := st.DNS.Addr + " zone " + st.DNS.Domain
	if st.DNS.Error != "" {
		dns += " — " + st.DNS.Error
	}
	fmt.Fprintf(tw, "DNS:\t%s\n", dns)
	if c := st.DNS.Containers; c != nil {
		fmt.Fprintf(tw, "Container DNS:\t%d containers served in their own namespace, %d waiting, %d on Docker's resolver alone\n", c.Serving, c.Waiting, len(c.Failed))
		fmt.Fprintf(tw, "Container VIPs:\t%d containers balance service VIPs in their own namespace, %d through the host's table only\n", c.VIPClients, len(c.VIPFailed))
	}
	fmt.Fprintf(tw, "Docker engine:\t%s\n", engineLine(st.Engine, now))
	printWireGuard(tw, st.Dataplane.WireGuard, now)
	fmt.Fprintf(tw, "Refused records:\t%d\n", st.Refused.Total)
	for _, reason := range slices.Sorted(maps.Keys(st.Refused.ByReason)) {
		fmt.Fprintf(tw, "  %s:\t%d\n", reason, st.Refused.ByReason[reason])
	}
	if st.Refused.UnsignedAccepted > 0 {
		fmt.Fprintf(tw, "Unsigned records taken:\t%d (from nodes not upgraded yet)\n", st.Refused.UnsignedAccepted)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.IPAM) > 0 {
		fmt.Fprintln(w, "\nAddress usage:")
		tw = table(w)
		fmt.Fprintln(tw, "  SUBNET\tNODE\tBLOCKS\tOWNED\tALLOCATED\t")
		for _, p := range st.IPAM {
			for _, n := range p.Nodes {
				fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t\n", p.Subnet, n.Node, n.Blocks, n.Owned, n.Allocated)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Conflicts) > 0 {
		fmt.Fprintln(w, "\nADDRESS CONFLICTS (held by more than one node; never handed out again):")
		for _, c := range st.Conflicts {
			fmt.Fprintf(w, "  %s in %s: %s\n", c.Addr, c.Subnet, strings.Join(c.Nodes, ", "))
		}
	}
	if len(st.Problems) > 0 {
		fmt.Fprintln(w, "\nProblems:")
		for _, p := range st.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	return nil
}

// engineLine says how the daemon follows the engine: the API version in use
// (and the engine's, when newer) and for how long it has (not) been connected.
func engineLine(e control.EngineInfo, now time.Time) string {
	api := "API version not negotiated yet"
	if e.APIVersion != "" {
		api = "API " + e.APIVersion
		if e.EngineAPIVersion != "" && e.EngineAPIVersion != e.APIVersion {
			api += " (the engine's: " + e.EngineAPIVersion + ")"
		}
	}
	if e.Connected {
		return api + ", following events for " + age(now, e.Since)
	}
	line := api + ", NOT following events"
	if !e.Since.IsZero() {
		line += " for " + age(now, e.Since)
	}
	if e.LastError != "" {
		line += " — " + e.LastError
	}
	return line
}

func printNetworks(w io.Writer, nets []control.Network) error {
	tw := table(w)
	fmt.Fprintln(tw, "SUBNET\tNAMES\tDATAPLANE\tVNI\tMTU\tGATEWAY\tHOSTS\tENDPOINTS\t")
	for _, n := range nets {
		dp := n.Dataplane
		if n.Internal {
			dp += " (internal)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t\n", both(n.Subnet, n.Subnet6), dash(strings.Join(n.Names, ",")), dp, n.VNI, n.MTU,
			both(n.Gateway, n.Gateway6), dash(strings.Join(n.Nodes, ",")), n.Endpoints)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range nets {
		if len(n.Blocks) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nBlocks of %s:\n", n.Subnet)
		tw = table(w)
		fmt.Fprintln(tw, "  BLOCK\tOWNER\tSTATE\t")
		for _, b := range n.Blocks {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t\n", b.Prefix, b.Owner, dash(b.State))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// both shows a dual-stack pair as "IPv4,IPv6", a single family alone.
func both(v4, v6 string) string {
	if v6 == "" {
		return v4
	}
	return v4 + "," + v6
}

func printEndpoints(w io.Writer, eps []control.Endpoint) error {
	tw := table(w)
	fmt.Fprintln(tw, "CONTAINER\tNETWORK\tADDRESS\tMAC\tHOST\tSERVICES\tPUBLISHED\tSTATE\t")
	for _, e := range eps {
		state := "up"
		switch {
		case !e.Up:
			state = "host down"
		case !e.Healthy:
			state = "unhealthy"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", dash(e.Container), dash(e.Network), both(e.Addr, e.Addr6), e.MAC, e.Node,
			dash(strings.Join(e.Services, ",")), dash(publishedText(e.Published)), state)
	}
	return tw.Flush()
}

// publishedText renders "0.0.0.0:8081:8080/tcp" as docker port does:
// 0.0.0.0:8081->8080/tcp.
func publishedText(ps []string) string {
	var out []string
	for _, p := range ps {
		rest, proto, _ := strings.Cut(p, "/")
		if i := strings.LastIndex(rest, ":"); i > 0 {
			p = rest[:i] + "->" + rest[i+1:] + "/" + proto
		}
		out = append(out, p)
	}
	return strings.Join(out, ",")
}

func printServices(w io.Writer, svcs []control.Service) error {
	tw := table(w)
	fmt.Fprintln(tw, "SERVICE\tMODE\tVIP\tPUBLISHED\tCONTAINER\tADDRESS\tHOST\tSTATE\t")
	for _, s := range svcs {
		var vips, pub []string
		for _, v := range s.VIPs {
			vips = append(vips, v.Addr)
		}
		for _, p := range s.Published {
			s := fmt.Sprintf("%d->%d/%s", p.HostPort, p.TargetPort, p.Proto)
			if p.PreferLocal {
				s += " (local first)"
			}
			pub = append(pub, s)
		}
		name, mode, vip, ports := s.Name, s.Mode, dash(strings.Join(vips, ",")), dash(strings.Join(pub, ","))
		row := func(r control.Endpoint, state string) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, mode, vip, ports, dash(r.Container), both(r.Addr, r.Addr6), r.Node, state)
			name, mode, vip, ports = "", "", "", ""
		}
		for _, r := range s.Replicas {
			row(r, "healthy")
		}
		for _, r := range s.Unavailable {
			state := "stopped"
			if !r.Up {
				state = "node down"
			}
			row(r, state)
		}
		if name != "" { // a VIP or port whose replicas are all gone
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t\n", name, mode, vip, ports)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age renders how long ago t was, to the second.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String()
}
