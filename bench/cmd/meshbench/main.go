// Command meshbench is `make bench`: it brings up two simulated Docker hosts with real
// engines, measures meshnet beside Docker Swarm's overlay, the underlay and a standalone
// wireguard-go in the same run, runs the in-process control-plane measurements, and writes a
// table of ratios (build/bench/latest.txt), the raw figures (latest.json), a chart
// (latest.svg) and the table in docs/benchmarks.md. It needs root (namespaces, engines).
//
//	go run ./bench/cmd/meshbench [-parts dataplane,services,reach,dns,dnscap,dnsflood,dnsscale,memory,apply,scale] [-quick]
//
// -parts wgvm (`make bench-vm`; not in the default parts: it boots two qemu guests, about 10
// minutes under emulation) puts the kernel WireGuard module beside meshnet's embedded one
// between the same two guests.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshnet/meshnet/bench"
	"github.com/meshnet/meshnet/e2e/harness"
)

type options struct {
	repo, out, doc       string
	meshnetSrc           string
	parts                map[string]bool
	rounds, reachRuns    int
	duration, rrTime     time.Duration
	dnsTime, idle        time.Duration
	sizes                []int
	records              int
	underlay             netip.Prefix
	applySizes           []int
	memEndpoints, memHst int
	hold, profile        bool
	bridgeBypass         string
	vmImage              string // -parts wgvm
}

func main() {
	o, verbose, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		os.Exit(2)
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("benchmark failed", "err", err)
		os.Exit(1)
	}
}

func parseFlags() (options, bool, error) {
	var o options
	wd, _ := os.Getwd()
	flag.StringVar(&o.repo, "repo", wd, "the meshnet module's root")
	flag.StringVar(&o.meshnetSrc, "meshnet-src", "", "build meshnetd and meshctl from this tree instead of -repo (e.g. an exported commit)")
	flag.StringVar(&o.out, "out", "build/bench", "where latest.{txt,json,svg} go")
	flag.StringVar(&o.doc, "doc", "docs/benchmarks.md", "Markdown file whose bench:begin/end block gets the table (empty: none; a run of chosen -parts writes it only when -doc is given)")
	parts := flag.String("parts", "dataplane,services,reach,dns,dnscap,dnsscale,memory,apply,scale", "what to measure")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds over all paths (iperf3 and round trips), interleaved")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "one iperf3 run (whole seconds)")
	flag.DurationVar(&o.rrTime, "rr", 3*time.Second, "one request/response run")
	flag.IntVar(&o.reachRuns, "reach-runs", 7, "time-to-reachability runs per network")
	flag.DurationVar(&o.dnsTime, "dns", 10*time.Second, "one dnsperf run (whole seconds)")
	sizes := flag.String("sizes", "50,100,250", "gossip cluster sizes")
	flag.IntVar(&o.records, "records", 7, "records timed to convergence per size")
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "window for steady-state gossip bytes")
	applySizes := flag.String("apply", "1000,10000", "remote endpoints for the Apply timing")
	flag.IntVar(&o.memEndpoints, "mem-endpoints", 10000, "endpoints for the memory figure")
	flag.IntVar(&o.memHst, "mem-hosts", 100, "hosts those endpoints are spread over")
	underlay := flag.String("underlay", "198.18.77.0/24", "underlay of the simulated hosts (inside their namespaces)")
	flag.StringVar(&o.vmImage, "vm-image", "bookworm", "Debian suite of the VM guests of -parts wgvm (bookworm, trixie, sid)")
	flag.BoolVar(&o.profile, "profile", true, "perf profiles of the overlay paths and a pprof of the DNS server")
	flag.StringVar(&o.bridgeBypass, "bridge-bypass", "", "run meshnetd with --bridge-bypass=MODE (auto, on, off); default: meshnetd's own (auto)")
	flag.BoolVar(&o.hold, "hold", false, "keep the hosts up after setting them up, until interrupted (debugging)")
	quick := flag.Bool("quick", false, "short runs (1 round, 3 reachability runs, sizes 50,100) to try the tool")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	// A run of some parts must not replace the whole run's table in the docs.
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["parts"] && !set["doc"] {
		o.doc = ""
	}
	o.parts = map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		o.parts[strings.TrimSpace(p)] = true
	}
	var err error
	if o.underlay, err = netip.ParsePrefix(*underlay); err != nil {
		return o, false, fmt.Errorf("-underlay: %w", err)
	}
	if *quick {
		o.rounds, o.reachRuns, o.records, o.duration, o.dnsTime, o.idle = 1, 3, 3, 3*time.Second, 5*time.Second, 5*time.Second
		*sizes = "50,100"
	}
	if o.sizes, err = ints(*sizes); err != nil {
		return o, false, fmt.Errorf("-sizes: %w", err)
	}
	if o.applySizes, err = ints(*applySizes); err != nil {
		return o, false, fmt.Errorf("-apply: %w", err)
	}
	if o.repo, err = filepath.Abs(o.repo); err != nil {
		return o, false, err
	}
	return o, *verbose, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it runs Docker engines in network namespaces")
	}
	start := time.Now()
	rep := &bench.Report{Date: start.UTC(), Command: "make bench", Raw: map[string]any{}, Profiles: map[string]string{}}
	if len(os.Args) > 1 {
		rep.Command = "go run ./bench/cmd/meshbench " + strings.Join(os.Args[1:], " ")
	}
	rep.Machine = bench.DescribeMachine(ctx, o.repo)
	log.Info("machine", "cpus", rep.Machine.CPUs, "kernel", rep.Machine.Kernel, "load", rep.Machine.LoadStart)
	if err := harness.CleanupStale(log); err != nil {
		log.Warn("cleaning up after an earlier run", "err", err)
	}
	work, err := harness.NewWorkDir("meshnet-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tools, err := bench.BuildTools(ctx, o.repo, filepath.Join(work, "tools"))
	if err != nil {
		return err
	}
	if tools.WireGuardGoErr != nil {
		log.Warn("standalone wireguard-go unavailable", "err", tools.WireGuardGoErr)
	}
	var dnsFigs map[string][]bench.DNSFigures
	if o.parts["dataplane"] || o.parts["services"] || o.parts["reach"] || o.parts["dns"] {
		if dnsFigs, err = runHosts(ctx, o, log, rep, tools, work); err != nil {
			return err
		}
	}
	out := o.out
	if !filepath.IsAbs(out) {
		out = filepath.Join(o.repo, out)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if o.parts["wgvm"] {
		f := measureWireGuardVM(ctx, o, log, work)
		rep.Raw["wireguard_vm"] = f
		rep.Rows = append(rep.Rows, bench.WireGuardVMRows(f)...)
	}
	if o.parts["dnscap"] {
		c := bench.MeasureDNSCapacity(ctx, o.dnsTime, out, log)
		rep.Raw["dns_capacity"] = c
		if o.profile && c.Top != "" {
			rep.Profiles["meshnet DNS server without rate limit (pprof -top -cum)"] = c.Top
		}
		rep.Rows = append(rep.Rows, bench.DNSCapacityRows(c, bench.MedianDNS(dnsFigs["docker"]))...)
	}
	if o.parts["dnsflood"] {
		f := bench.MeasureDNSFlood(ctx, o.dnsTime, 5000, []float64{0, 2000, 10000, 20000}, out, log)
		rep.Raw["dns_flood"] = f
		rep.Rows = append(rep.Rows, bench.DNSFloodRows(f)...)
	}
	if o.parts["dnsscale"] {
		figs := bench.MeasureDNSScale(ctx, []int{10, 1000}, max(2*o.rounds-1, 1), min(o.dnsTime, 5*time.Second), log)
		rep.Raw["dns_scale"] = figs
		rep.Rows = append(rep.Rows, bench.DNSScaleRows(figs)...)
	}
	if o.parts["memory"] {
		f, err := bench.MeasureMemory(o.memEndpoints, o.memHst)
		rep.Raw["memory"] = f
		rep.Rows = append(rep.Rows, bench.MemoryRow(f, err))
	}
	if o.parts["apply"] {
		var figs []bench.ApplyFigures
		for _, n := range o.applySizes {
			f := bench.MeasureApply(ctx, n, o.rounds, nil)
			log.Info("apply measured", "remotes", n, "cold", f.ColdSeconds, "steady", f.SteadySeconds, "err", f.Err)
			figs = append(figs, f)
		}
		rep.Raw["apply"] = figs
		rep.Rows = append(rep.Rows, bench.ApplyRows(figs)...)
	}
	if o.parts["scale"] {
		figs := bench.MeasureScale(ctx, bench.ScaleOptions{Sizes: o.sizes, Records: o.records, IdleWindow: o.idle, Log: log})
		rep.Raw["gossip"] = figs
		rep.Rows = append(rep.Rows, bench.ScaleRows(figs)...)
	}
	rep.Machine.LoadEnd = bench.LoadAvg()
	rep.Took = time.Since(start).Round(time.Second).String()
	if err := rep.WriteFiles(out); err != nil {
		return err
	}
	if o.doc != "" {
		doc := o.doc
		if !filepath.IsAbs(doc) {
			doc = filepath.Join(o.repo, doc)
		}
		if err := rep.UpdateDoc(doc); err != nil {
			log.Warn("not updating the doc", "err", err)
		}
	}
	txt, err := os.ReadFile(filepath.Join(out, "latest.txt"))
	if err != nil {
		return err
	}
	fmt.Printf("\n%s\nwritten: %s/latest.{txt,json,svg}\n", txt, out)
	return nil
}

// measureWireGuardVM builds meshnetd for the guests and measures the two WireGuards on them.
func measureWireGuardVM(ctx context.Context, o options, log *slog.Logger, work string) bench.WireGuardVMFigures {
	src := o.repo
	if o.meshnetSrc != "" {
		src = o.meshnetSrc
	}
	bin, err := harness.BuildBinaries(ctx, src, filepath.Join(work, "vm-bin"))
	if err != nil {
		return bench.WireGuardVMFigures{Suite: o.vmImage, Err: err.Error()}
	}
	return bench.MeasureWireGuardVM(ctx, bench.WireGuardVMOptions{Suite: o.vmImage, Rounds: o.rounds, Duration: o.duration, Bin: bin, Log: log})
}

// runHosts measures everything that needs the simulated hosts, then tears them down.
func runHosts(ctx context.Context, o options, log *slog.Logger, rep *bench.Report, tools bench.Tools, work string) (map[string][]bench.DNSFigures, error) {
	env, err := bench.NewEnv(ctx, bench.EnvConfig{Repo: o.repo, MeshnetSrc: o.meshnetSrc, MeshnetFlags: o.meshnetFlags(), WorkDir: filepath.Join(work, "hosts"), Underlay: o.underlay, Tools: tools, Log: log})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := env.Close(); err != nil {
			log.Warn("tearing the hosts down", "err", err)
		}
	}()
	rep.Setup = meshnetSetup(ctx, env, o.meshnetFlags())
	if o.hold {
		log.Info("holding the hosts until interrupted", "host1", env.A.AnchorPID(), "host2", env.B.AnchorPID(), "enter", "nsenter -t PID -n -u -m")
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if o.parts["dataplane"] {
		do := bench.DataplaneOptions{Rounds: o.rounds, Duration: o.duration, RRTime: o.rrTime, Netprobe: tools.Netprobe, Log: log}
		if o.profile {
			do.ProfileDir = work
		}
		figs := bench.MeasurePaths(ctx, env, do)
		rep.Raw["paths"] = figs
		for name, f := range figs {
			if f.Profile != "" {
				rep.Profiles["iperf3 1 stream over "+name+" (perf: samples of iperf3, the tunnel process and softirqs, by symbol)"] = f.Profile
			}
		}
		rep.Rows = append(rep.Rows, bench.DataplaneRows(figs)...)
	}
	if o.parts["reach"] {
		runs := bench.MeasureReach(ctx, env, bench.ReachOptions{Runs: o.reachRuns, Netprobe: tools.Netprobe, Log: log})
		rep.Raw["reachability"] = runs
		rep.Rows = append(rep.Rows, bench.ReachRows(runs)...)
	}
	if o.parts["services"] {
		f := bench.MeasureServices(ctx, env, bench.ServiceOptions{Duration: o.rrTime, Netprobe: tools.Netprobe, Log: log})
		rep.Raw["services"] = f
		rep.Rows = append(rep.Rows, bench.ServiceRows(f)...)
	}
	var dnsFigs map[string][]bench.DNSFigures
	if o.parts["dns"] {
		dnsFigs = bench.MeasureDNS(ctx, env, bench.DNSOptions{Duration: o.dnsTime, Rounds: o.rounds, WorkDir: work, Log: log})
		rep.Raw["dns"] = dnsFigs
		rep.Rows = append(rep.Rows, bench.DNSRows(dnsFigs)...)
	}
	return dnsFigs, nil
}

// meshnetSetup describes meshnetd on the hosts: the flags the options
// added, and the bridge bypass host A's meshctl status reports.
func meshnetSetup(ctx context.Context, env *bench.Env, flags []string) string {
	s := "default flags"
	if len(flags) > 0 {
		s = "with " + strings.Join(flags, " ")
	}
	out, err := env.C.MeshctlStatus(ctx, env.A)
	if err != nil {
		return s + "; bridge bypass unknown (meshctl status: " + err.Error() + ")"
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Bridge bypass:"); ok {
			return s + "; bridge bypass on host A: " + strings.TrimSpace(v)
		}
	}
	return s
}

// meshnetFlags are the meshnetd flags the options ask for.
func (o options) meshnetFlags() []string {
	if o.bridgeBypass != "" {
		return []string{"--bridge-bypass=" + o.bridgeBypass}
	}
	return nil
}
