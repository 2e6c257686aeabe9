package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/e2e/harness"
)

// WireGuardVMFigures are the kernel WireGuard module and meshnet's embedded wireguard-go
// carrying the same iperf3 stream between the same two VM guests (-parts wgvm): simulated
// hosts share this machine's kernel, which has no WireGuard module, so only guests with
// kernels of their own can put the two side by side.
type WireGuardVMFigures struct {
	Suite string `json:"suite"`
	// Guest describes the guests: suite, kernel, engine, accelerator (kvm or tcg).
	Guest    string       `json:"guest"`
	Kernel   []Throughput `json:"kernel_module,omitempty"`
	Embedded []Throughput `json:"embedded,omitempty"`
	Errors   []string     `json:"errors,omitempty"`
	Err      string       `json:"unavailable,omitempty"`
}

// WireGuardVMOptions configure MeasureWireGuardVM.
type WireGuardVMOptions struct {
	Suite    string // Debian suite of the guests (bookworm, trixie, sid)
	Rounds   int    // each mode measured this often, the two in turn
	Duration time.Duration
	Bin      harness.Binaries
	Log      *slog.Logger
}

// wgvmSubnet is the benchmark's wireguard network inside the guests.
const wgvmSubnet = "10.77.0.0/24"

// MeasureWireGuardVM boots two guests (e2e/harness's VM backend), runs meshnetd on both with
// --wireguard-mode kernel, then with --wireguard-mode userspace, in turn for o.Rounds rounds,
// and runs one iperf3 stream from a container on the first guest to one on the second over
// a wireguard network each time. The containers and the network stay; only meshnetd and its
// WireGuard device change between modes (a stopped daemon leaves the kernel device behind,
// which is deleted before the embedded one takes its name). CPU seconds per GB are the two
// guests' busy time from their /proc/stat.
func MeasureWireGuardVM(ctx context.Context, o WireGuardVMOptions) (f WireGuardVMFigures) {
	f.Suite = o.Suite
	c, err := harness.NewVMCluster(ctx, harness.VMOptions{Suite: o.Suite, Hosts: 2, Logger: o.Log})
	if err != nil {
		f.Err = fmt.Sprintf("booting the guests: %v", err)
		return f
	}
	defer func() {
		if err := c.Close(); err != nil {
			o.Log.Warn("tearing the guests down", "err", err)
		}
	}()
	c.Bin = o.Bin
	if c.VM != nil {
		f.Guest = fmt.Sprintf("%s guests, kernel %s, engine %s, %s", o.Suite, c.VM.Kernel, c.VM.Engine, c.VM.Accel)
	}
	a, b := c.Hosts[0], c.Hosts[1]
	m := &wgvm{c: c, a: a, b: b}
	for _, h := range c.Hosts {
		if out, err := h.Exec(ctx, "modprobe", "wireguard"); err != nil {
			f.Err = fmt.Sprintf("%s has no WireGuard module: %v %s", h.Name(), err, out)
			return f
		}
	}
	if err := c.EnsureImage(ctx); err != nil {
		f.Err = err.Error()
		return f
	}
	for round := 1; round <= max(o.Rounds, 1); round++ {
		for _, mode := range []string{dataplane.ModeKernel, dataplane.ModeUserspace} {
			t, err := m.measure(ctx, mode, o.Duration)
			if err != nil {
				f.Errors = append(f.Errors, fmt.Sprintf("round %d, %s: %v", round, mode, err))
				o.Log.Warn("wireguard on VMs", "round", round, "mode", mode, "err", err)
				continue
			}
			t.Round = round
			o.Log.Info("wireguard on VMs", "round", round, "mode", mode, "gbit_per_s", t.Gbps, "cpu_s_per_gb", t.CPUSecondsPerGB)
			if mode == dataplane.ModeKernel {
				f.Kernel = append(f.Kernel, t)
			} else {
				f.Embedded = append(f.Embedded, t)
			}
		}
	}
	if len(f.Kernel) == 0 && len(f.Embedded) == 0 && len(f.Errors) > 0 {
		f.Err = f.Errors[0]
	}
	return f
}

// wgvm is the two guests of MeasureWireGuardVM and what runs on them.
type wgvm struct {
	c        *harness.Cluster
	a, b     harness.Host
	mode     string // meshnetd's current --wireguard-mode; "" before the first start
	serverIP netip.Addr
	pidA     string
	pidB     string
}

// measure runs meshnetd in mode on both guests (restarting it if it ran in the other) and
// one iperf3 stream from the container on a to the one on b.
func (m *wgvm) measure(ctx context.Context, mode string, d time.Duration) (Throughput, error) {
	if err := m.switchMode(ctx, mode); err != nil {
		return Throughput{}, err
	}
	if err := m.containers(ctx); err != nil {
		return Throughput{}, err
	}
	// The first packets after a (re)start wait for a handshake.
	pingCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := harness.Poll(pingCtx, func() error {
		_, err := m.a.Exec(pingCtx, "nsenter", "-t", m.pidA, "-n", "ping", "-c1", "-W1", m.serverIP.String())
		return err
	}); err != nil {
		return Throughput{}, fmt.Errorf("the containers never reached each other over %s WireGuard: %w", mode, err)
	}
	srv, err := m.b.Start(ctx, "bench-iperf3", "nsenter", "-t", m.pidB, "-n", "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	if err != nil {
		return Throughput{}, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(stopCtx, 2*time.Second)
	}()
	time.Sleep(time.Second)
	before, err := m.busy(ctx)
	if err != nil {
		return Throughput{}, err
	}
	var out string
	for try := 0; try < 5; try++ {
		out, err = m.a.Exec(ctx, "nsenter", "-t", m.pidA, "-n", "iperf3", "-c", m.serverIP.String(), "-p", strconv.Itoa(iperfPort),
			"-t", strconv.Itoa(int(d.Seconds())), "-O", "1", "-J")
		if err == nil {
			break
		}
		time.Sleep(time.Second) // the server may still be binding
	}
	after, berr := m.busy(ctx)
	if berr != nil {
		return Throughput{}, berr
	}
	var r iperfResult
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || r.Error != "" {
		return Throughput{}, fmt.Errorf("iperf3 over %s WireGuard: %v %s %s", mode, err, r.Error, lastLineOf(out))
	}
	return r.throughput(after - before), nil
}

// switchMode leaves meshnetd running in mode on both guests, with every peer alive.
func (m *wgvm) switchMode(ctx context.Context, mode string) error {
	if m.mode == mode {
		return nil
	}
	for _, h := range []harness.Host{m.a, m.b} {
		if d := m.c.Daemon(h); d != nil && d.Running() {
			if err := d.Stop(ctx); err != nil {
				return fmt.Errorf("stopping meshnetd on %s: %w", h.Name(), err)
			}
		}
		// A stopped daemon leaves the kernel's device; the embedded one must make its own.
		_, _ = h.Exec(ctx, "ip", "link", "del", "mnwg0")
	}
	for _, h := range []harness.Host{m.a, m.b} {
		if _, err := m.c.StartMeshnet(ctx, h, "--wireguard-mode", mode); err != nil {
			return fmt.Errorf("starting meshnetd (%s WireGuard) on %s: %w", mode, h.Name(), err)
		}
	}
	m.mode = mode
	waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return harness.Poll(waitCtx, func() error {
		for _, h := range []harness.Host{m.a, m.b} {
			ps, err := m.c.Peers(waitCtx, h)
			if err != nil {
				return err
			}
			alive := 0
			for _, p := range ps {
				if p.State == "alive" {
					alive++
				}
			}
			if alive < 2 {
				return fmt.Errorf("%s sees %d of 2 members alive", h.Name(), alive)
			}
		}
		return nil
	})
}

// containers makes the wireguard network and a container on each guest, once.
func (m *wgvm) containers(ctx context.Context) error {
	if m.pidA != "" {
		return nil
	}
	for i, h := range []harness.Host{m.a, m.b} {
		if err := harness.CreateNetwork(ctx, h, "wgbench", wgvmSubnet, "-o", "dataplane=wireguard"); err != nil {
			return fmt.Errorf("creating the wireguard network on %s: %w", h.Name(), err)
		}
		name := fmt.Sprintf("wgbench%d", i+1)
		if err := harness.RunContainer(ctx, h, name, "wgbench"); err != nil {
			return fmt.Errorf("starting %s on %s: %w", name, h.Name(), err)
		}
		pid, err := harness.Docker(ctx, h, "inspect", "-f", "{{.State.Pid}}", name)
		if err != nil {
			return err
		}
		if i == 0 {
			m.pidA = strings.TrimSpace(pid)
		} else {
			m.pidB = strings.TrimSpace(pid)
			if m.serverIP, err = harness.ContainerIP(ctx, h, name, "wgbench"); err != nil {
				return err
			}
		}
	}
	return nil
}

// busy is both guests' busy CPU seconds since their boot.
func (m *wgvm) busy(ctx context.Context) (float64, error) {
	var sum float64
	for _, h := range []harness.Host{m.a, m.b} {
		out, err := h.Exec(ctx, "cat", "/proc/stat")
		if err != nil {
			return 0, fmt.Errorf("reading CPU time on %s: %w", h.Name(), err)
		}
		v, err := parseBusyCPU(out)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", h.Name(), err)
		}
		sum += v
	}
	return sum, nil
}

// WireGuardVMRows put the embedded WireGuard beside the kernel module: throughput and CPU per
// GB, the median of the rounds' ratios. No target: the figure says what the embedded
// fallback costs where the module is missing, and how far from the module it is.
func WireGuardVMRows(f WireGuardVMFigures) []Row {
	side := func(ts []Throughput, val func(Throughput) float64) (map[int]float64, error) {
		if f.Err != "" {
			return nil, fmt.Errorf("%s", f.Err)
		}
		out := perRound(ts, val)
		if len(out) == 0 {
			return nil, fmt.Errorf("no successful run: %s", strings.Join(f.Errors, "; "))
		}
		return out, nil
	}
	row := func(metric, unit string, better Better, val func(Throughput) float64) Row {
		e, eerr := side(f.Embedded, val)
		k, kerr := side(f.Kernel, val)
		r := CompareRounds("wireguard on VMs", metric, unit, better, e, eerr, "kernel WireGuard", k, kerr, nil)
		r.Note = f.Guest
		return r
	}
	return []Row{
		row("TCP 1 stream, meshnet's embedded WireGuard vs the kernel module, two VM guests", "Gbit/s", Higher, func(t Throughput) float64 { return t.Gbps }),
		row("CPU seconds per GB (both guests), embedded vs kernel WireGuard", "s/GB", Lower, func(t Throughput) float64 { return t.CPUSecondsPerGB }),
	}
}
