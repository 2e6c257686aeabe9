package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/meshnet/meshnet/dataplane"
)

// ApplyFigures are the dataplane Apply timings for one number of remote endpoints: each the
// median of its rounds, every round in a fresh namespace.
type ApplyFigures struct {
	Remotes int `json:"remote_endpoints"`
	// ColdSeconds: the first Apply, which writes every FDB and neighbour entry.
	ColdSeconds float64 `json:"cold_seconds"`
	// SteadySeconds: Apply of the same state again (reads the kernel, writes nothing): the
	// price of the periodic re-sync.
	SteadySeconds float64 `json:"steady_seconds"`
	// ChurnSeconds: Apply after 1% of the remotes were replaced by new ones.
	ChurnSeconds float64 `json:"churn_seconds"`
	// Rounds are the single runs the medians come from.
	Rounds []ApplyRun `json:"rounds,omitempty"`
	Err    string     `json:"error,omitempty"`
}

// ApplyRun is one round: the three Applies in one fresh namespace.
type ApplyRun struct {
	ColdSeconds   float64 `json:"cold_seconds"`
	SteadySeconds float64 `json:"steady_seconds"`
	ChurnSeconds  float64 `json:"churn_seconds"`
}

// MeasureApply programs a fresh network namespace (root only) with one network holding n
// remote endpoints spread over 20 hosts, three times: cold, unchanged, and with 1% churn; and
// does it rounds times, each in a new namespace, since a single re-sync of 0.15 s moves by a
// fifth from one run to the next on two shared cores.
func MeasureApply(ctx context.Context, n, rounds int, log *slog.Logger) ApplyFigures {
	f := ApplyFigures{Remotes: n}
	for i := 0; i < max(rounds, 1); i++ {
		run, err := applyOnce(ctx, n, log)
		if err != nil {
			f.Err = err.Error()
			return f
		}
		f.Rounds = append(f.Rounds, run)
	}
	f.ColdSeconds = Median(mapf(f.Rounds, func(r ApplyRun) float64 { return r.ColdSeconds }))
	f.SteadySeconds = Median(mapf(f.Rounds, func(r ApplyRun) float64 { return r.SteadySeconds }))
	f.ChurnSeconds = Median(mapf(f.Rounds, func(r ApplyRun) float64 { return r.ChurnSeconds }))
	return f
}

// applyOnce is one round of MeasureApply.
func applyOnce(ctx context.Context, n int, log *slog.Logger) (ApplyRun, error) {
	var run ApplyRun
	ns, err := freshNetNS()
	if err != nil {
		return run, err
	}
	defer ns.Close()
	underlay := netip.MustParseAddr("198.18.250.1")
	if err := underlayIn(ns, underlay); err != nil {
		return run, err
	}
	dp, err := dataplane.New(log, dataplane.Options{NetNS: ns})
	if err != nil {
		return run, fmt.Errorf("opening the dataplane: %w", err)
	}
	defer dp.Close()
	st := applyState(underlay, n, 0)
	timed := func(st dataplane.State) (float64, error) {
		t0 := time.Now()
		err := dp.Apply(ctx, st)
		return time.Since(t0).Seconds(), err
	}
	if run.ColdSeconds, err = timed(st); err != nil {
		return run, fmt.Errorf("cold Apply of %d remotes: %w", n, err)
	}
	if run.SteadySeconds, err = timed(st); err != nil {
		return run, fmt.Errorf("unchanged Apply of %d remotes: %w", n, err)
	}
	if run.ChurnSeconds, err = timed(applyState(underlay, n, max(n/100, 1))); err != nil {
		return run, fmt.Errorf("Apply with 1%% churn of %d remotes: %w", n, err)
	}
	return run, nil
}

// applyState is one /16 network with n remotes; shift moves the first `shift` remotes to new
// addresses and MACs (containers replaced elsewhere).
func applyState(underlay netip.Addr, n, shift int) dataplane.State {
	nw := dataplane.Network{
		VNI:     4242,
		Subnet:  netip.MustParsePrefix("10.200.0.0/16"),
		Gateway: netip.MustParseAddr("10.200.0.1"),
	}
	for i := 0; i < n; i++ {
		k := i + 2
		if i < shift {
			k = i + n + 2
		}
		nw.Remotes = append(nw.Remotes, dataplane.RemoteEndpoint{
			Addr: netip.AddrFrom4([4]byte{10, 200, byte(k >> 8), byte(k)}),
			MAC:  net.HardwareAddr{0x02, 0x42, 0x0a, 0xc8, byte(k >> 8), byte(k)},
			VTEP: netip.AddrFrom4([4]byte{198, 18, 251, byte(1 + i%20)}),
		})
	}
	return dataplane.State{Underlay: dataplane.UnderlayInfo{Addr: underlay}, VXLANPort: 4790, Networks: []dataplane.Network{nw}}
}

// freshNetNS makes a new network namespace on a throwaway thread, which is never unlocked and
// so dies with its goroutine rather than returning to Go's pool inside the namespace.
func freshNetNS() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("new network namespace (needs root): %w", err)}
			return
		}
		ns, err := netns.Get()
		ch <- result{ns, err}
	}()
	r := <-ch
	return r.ns, r.err
}

// underlayIn gives the namespace lo and a veth pair holding the underlay address, so the
// vxlan device has a local address to send from.
func underlayIn(ns netns.NsHandle, addr netip.Addr) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in the new namespace: %w", err)
	}
	defer h.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ul0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "ul1"}); err != nil {
		return fmt.Errorf("underlay veth: %w", err)
	}
	for _, name := range []string{"lo", "ul0", "ul1"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	l, _ := h.LinkByName("ul0")
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(16, 32)}}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("underlay address: %w", err)
	}
	return nil
}

// ApplyRows reports cold, unchanged and churn Apply per size.
func ApplyRows(figs []ApplyFigures) []Row {
	var rows []Row
	for _, f := range figs {
		m := fmt.Sprintf("%d remote endpoints", f.Remotes)
		if f.Err != "" {
			rows = append(rows, Alone("control plane", "dataplane Apply, "+m, "s", Lower, Unavailable(fmt.Errorf("%s", f.Err)), nil, nil))
			continue
		}
		for _, k := range []struct {
			what string
			med  float64
			of   func(ApplyRun) float64
		}{
			{"cold", f.ColdSeconds, func(r ApplyRun) float64 { return r.ColdSeconds }},
			{"unchanged (re-sync)", f.SteadySeconds, func(r ApplyRun) float64 { return r.SteadySeconds }},
			{"1% churn", f.ChurnSeconds, func(r ApplyRun) float64 { return r.ChurnSeconds }},
		} {
			r := Alone("control plane", "dataplane Apply "+k.what+", "+m, "s", Lower, Val(k.med), nil, nil)
			if len(f.Rounds) > 1 {
				runs := mapf(f.Rounds, k.of)
				r.Note = fmt.Sprintf("median of %d rounds, each in a fresh namespace: %.3g–%.3g s", len(runs), slices.Min(runs), slices.Max(runs))
			}
			rows = append(rows, r)
		}
	}
	return rows
}
