package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshnet/meshnet/gossip"
)

// ScaleOptions bound the in-process control-plane measurement.
type ScaleOptions struct {
	Sizes []int
	// Records is how many records are timed to convergence per cluster size.
	Records int
	// IdleWindow is how long sent bytes are counted in steady state.
	IdleWindow time.Duration
	Log        *slog.Logger
}

// ScaleFigures are one cluster size's measurements.
type ScaleFigures struct {
	Nodes       int     `json:"nodes"`
	JoinSeconds float64 `json:"join_seconds"`
	// ConvergeSeconds are the times from Put on one node to the record being in every
	// node's store, one per record.
	ConvergeSeconds []float64 `json:"converge_seconds"`
	GossipInterval  float64   `json:"gossip_interval_seconds"`
	GossipFanout    int       `json:"gossip_fanout"`
	// EpidemicRounds is the ideal push-gossip bound log_{k+1}(N) + ln(N)/k for fanout k
	// (Pittel 1987 for k = 1; the usual generalisation): what O(log N) means concretely.
	EpidemicRounds float64 `json:"epidemic_rounds"`
	// FailureFirstSeconds and FailureAllSeconds: from a node's crash (memberlist shut down,
	// no leave) to the first and to the last other node marking it down.
	FailureFirstSeconds float64 `json:"failure_first_seconds"`
	FailureAllSeconds   float64 `json:"failure_all_seconds"`
	// BytesPerNodePerSecond is what a node sends in steady state (probes, gossip, push/pull).
	BytesPerNodePerSecond float64 `json:"bytes_per_node_per_second"`
	// Unconverged counts records that did not reach every node within 30 s.
	Unconverged int    `json:"unconverged_records,omitempty"`
	FailureErr  string `json:"failure_detection_error,omitempty"`
	// SettleSeconds is how long after membership agreed the traffic took to become steady
	// (the join storm's alive messages and push/pulls drained).
	SettleSeconds float64 `json:"settle_seconds"`
	Err           string  `json:"error,omitempty"`
}

type scaleNode struct {
	name   string
	store  *gossip.Store
	c      *gossip.Cluster
	cancel context.CancelFunc
	done   chan struct{}
}

// MeasureScale runs, for every size, a cluster of that many gossip nodes in this process on
// loopback addresses with memberlist's production LAN timers and encryption on, and measures
// record convergence, failure detection and steady-state bytes. Sizes that cannot be brought
// up (too slow on this machine) are reported with their error.
func MeasureScale(ctx context.Context, o ScaleOptions) []ScaleFigures {
	var out []ScaleFigures
	for _, n := range o.Sizes {
		start := time.Now()
		f := measureSize(ctx, n, o)
		o.Log.Info("gossip scale measured", "nodes", n, "took", time.Since(start).Round(time.Second), "err", f.Err)
		out = append(out, f)
	}
	return out
}

// startRamp spaces the nodes' starts (see measureSize).
const startRamp = 20 * time.Millisecond

func measureSize(ctx context.Context, n int, o ScaleOptions) ScaleFigures {
	mc := memberlist.DefaultLANConfig()
	f := ScaleFigures{Nodes: n, GossipInterval: mc.GossipInterval.Seconds(), GossipFanout: mc.GossipNodes}
	k := float64(mc.GossipNodes)
	f.EpidemicRounds = math.Log(float64(n))/math.Log(k+1) + math.Log(float64(n))/k
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	var sent atomic.Int64
	nodes := make([]*scaleNode, 0, n)
	defer func() { stopNodes(nodes) }()
	start := time.Now()
	var seeds []string
	for i := 0; i < n; i++ {
		// 127.1.0.0/16 on lo: every node its own address, as on a LAN; ports are chosen freely.
		addr := fmt.Sprintf("127.1.%d.%d", i/250, 1+i%250)
		tr, err := newCountingTransport(addr, &sent)
		if err != nil {
			f.Err = fmt.Sprintf("node %d transport: %v", i, err)
			return f
		}
		name := fmt.Sprintf("node%03d", i)
		store := gossip.NewStore(gossip.StoreConfig{Self: name})
		cfg := gossip.Config{
			NodeName: name, BindAddr: addr, BindPort: tr.port, Key: key, Label: "meshnet-bench",
			Memberlist: memberlist.DefaultLANConfig(), Transport: tr,
		}
		// Two seeds, the first node and one in the middle of those before: n joins against a
		// single seed at once make its TCP backlog the bottleneck on a loaded machine.
		if len(seeds) > 0 {
			cfg.Join = []string{seeds[0], seeds[len(seeds)/2]}
		}
		c, err := gossip.New(cfg, store)
		if err != nil {
			tr.Shutdown()
			f.Err = fmt.Sprintf("node %d: %v", i, err)
			return f
		}
		seeds = append(seeds, fmt.Sprintf("%s:%d", addr, tr.port))
		nctx, cancel := context.WithCancel(ctx)
		sn := &scaleNode{name: name, store: store, c: c, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(sn.done)
			_ = c.Run(nctx)
		}()
		nodes = append(nodes, sn)
		// A ramp of 20 ms per node (5 s for 250): started all at once, 250 memberlist
		// nodes on two cores sometimes never formed one membership within 2 minutes (a join
		// storm probes time out, nodes are declared dead as they join); real hosts do not
		// boot within the same second.
		time.Sleep(startRamp)
	}
	// Membership first: a record cannot reach a node nobody knows yet.
	if err := waitUntil(ctx, 2*time.Minute, func() bool {
		for _, sn := range nodes {
			if sn.c.NumMembers() != n {
				return false
			}
		}
		return true
	}); err != nil {
		f.Err = fmt.Sprintf("membership of %d nodes did not converge: %v", n, err)
		return f
	}
	f.JoinSeconds = time.Since(start).Seconds()
	f.SettleSeconds = settle(ctx, &sent, n)

	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(n)))
	for r := 0; r < o.Records; r++ {
		w := nodes[rng.IntN(n)]
		id := fmt.Sprintf("bench-%d-%d", n, r)
		d, err := timeToAll(ctx, nodes, 30*time.Second, func(s *gossip.Snapshot) bool {
			_, ok := s.Get(gossip.KindEndpoint, w.name, id)
			return ok
		}, func() error {
			_, err := w.store.Put(gossip.KindEndpoint, id, gossip.EndpointInfo{Subnet: "10.42.0.0/16", Addr: "10.42.0.9", MAC: "02:00:00:00:00:09", Healthy: true})
			return err
		})
		if err != nil {
			// On an overloaded machine a cluster this size can flap; one lost record is a
			// figure too, and the next may still converge.
			f.Unconverged++
			if f.Unconverged > o.Records/2 {
				f.Err = fmt.Sprintf("%d of %d records did not reach every node within 30 s (machine overloaded? load %s): %v",
					f.Unconverged, r+1, LoadAvg(), firstLine(err.Error()))
				return f
			}
			continue
		}
		f.ConvergeSeconds = append(f.ConvergeSeconds, d[len(d)-1].Seconds())
	}

	before := sent.Load()
	t0 := time.Now()
	time.Sleep(o.IdleWindow)
	f.BytesPerNodePerSecond = float64(sent.Load()-before) / float64(n) / time.Since(t0).Seconds()

	victim := nodes[n-1]
	d, err := timeToAll(ctx, nodes[:n-1], time.Minute, func(s *gossip.Snapshot) bool { return !s.Up(victim.name) }, func() error {
		return victim.c.Close() // a crash: no leave message, the others must detect it
	})
	if err != nil {
		f.FailureErr = fmt.Sprintf("not every node marked the crashed node down within a minute (load %s): %v", LoadAvg(), firstLine(err.Error()))
		return f
	}
	f.FailureFirstSeconds, f.FailureAllSeconds = d[0].Seconds(), d[len(d)-1].Seconds()
	return f
}

// settle waits until the cluster's sent bytes per second are steady: two consecutive
// 2-second windows within 25% of each other, or a minute at most. Membership agreeing is not
// enough: at 250 nodes the join storm's alive messages and push/pulls go on for tens of
// seconds and crowd the gossip packets that records travel in, which would be measured as a
// slow convergence that no steady cluster has.
func settle(ctx context.Context, sent *atomic.Int64, n int) float64 {
	start := time.Now()
	const window = 2 * time.Second
	prev := -1.0
	for time.Since(start) < time.Minute && ctx.Err() == nil {
		b := sent.Load()
		time.Sleep(window)
		rate := float64(sent.Load()-b) / float64(n) / window.Seconds()
		if prev > 0 && math.Abs(rate-prev) <= 0.25*prev {
			break
		}
		prev = rate
	}
	return time.Since(start).Seconds()
}

// timeToAll subscribes to every node's store, runs act, and returns, sorted, the times from
// act until cond held on each node.
func timeToAll(ctx context.Context, nodes []*scaleNode, timeout time.Duration, cond func(*gossip.Snapshot) bool, act func() error) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type sub struct {
		ch     <-chan struct{}
		cancel func()
	}
	subs := make([]sub, len(nodes))
	for i, sn := range nodes {
		ch, c := sn.store.Subscribe()
		subs[i] = sub{ch, c}
	}
	defer func() {
		for _, s := range subs {
			s.cancel()
		}
	}()
	times := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	start := time.Now()
	if err := act(); err != nil {
		return nil, err
	}
	for i, sn := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if cond(sn.store.Snapshot()) {
					times[i] = time.Since(start)
					return
				}
				select {
				case <-subs[i].ch:
				case <-ctx.Done():
					errs[i] = fmt.Errorf("%s: not within %s", sn.name, timeout)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(times)
	return times, nil
}

func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// stopNodes closes every node at once, without a leave (a leave of hundreds of nodes is
// itself a storm of gossip that only slows the teardown).
func stopNodes(nodes []*scaleNode) {
	var wg sync.WaitGroup
	for _, sn := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = sn.c.Close()
			sn.cancel()
			<-sn.done
		}()
	}
	wg.Wait()
}

// ScaleRows reports, per size: convergence in rounds against O(log N), in seconds (median,
// worst), failure detection, bytes per node.
func ScaleRows(figs []ScaleFigures) []Row {
	var rows []Row
	for _, f := range figs {
		g := "control plane"
		n := fmt.Sprintf("%d nodes", f.Nodes)
		if f.Err != "" {
			rows = append(rows, Alone(g, "record convergence, "+n, "rounds", Lower, Unavailable(errors.New(f.Err)), nil, nil))
			continue
		}
		med, worst := Median(f.ConvergeSeconds), Max(f.ConvergeSeconds)
		rounds := med / f.GossipInterval
		ratio := rounds / f.EpidemicRounds
		r := Alone(g, "record convergence, median, "+n, "rounds", Lower, Val(rounds), &ratio,
			AtMost(2, "≤ 2× log₄N+lnN/3"))
		r.Note = fmt.Sprintf("%.2f s median, %.2f s worst of %d records (%d more did not converge within 30 s); %.1f rounds of %.0f ms, ideal push gossip with fanout %d: %.1f rounds; membership of %d nodes took %.1f s, traffic steady %.0f s later",
			med, worst, len(f.ConvergeSeconds), f.Unconverged, rounds, f.GossipInterval*1000, f.GossipFanout, f.EpidemicRounds, f.Nodes, f.JoinSeconds, f.SettleSeconds)
		fdAll, fdFirst := Val(f.FailureAllSeconds), Val(f.FailureFirstSeconds)
		if f.FailureErr != "" {
			fdAll, fdFirst = Unavailable(errors.New(f.FailureErr)), Unavailable(errors.New(f.FailureErr))
		}
		rows = append(rows, r,
			Alone(g, "record convergence, worst, "+n, "s", Lower, Val(worst), nil, nil),
			Alone(g, "failure detection, last node to know, "+n, "s", Lower, fdAll, nil, nil),
			Alone(g, "failure detection, first node to know, "+n, "s", Lower, fdFirst, nil, nil),
			Alone(g, "bytes sent per node per second, steady, "+n, "B/s", Lower, Val(f.BytesPerNodePerSecond), nil, nil))
	}
	return rows
}
