package ipam

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/clock"
)

var longSim = flag.Bool("ipam.long", false, "run the long randomized IPAM simulation (or MESHNET_IPAM_LONG=1)")

// TestSimulation runs many nodes, each with its own store and IPAM, over
// the fake gossip, with partitions, crashes, restarts from disk, joins,
// removals, handoffs and concurrent allocations, and checks continuously
// that no address is ever held by two nodes — except the ones a pool
// created on both sides of a partition doubled before the sides met,
// which must all be reported and never handed out again.
func TestSimulation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rounds := 30
		if *longSim || os.Getenv("MESHNET_IPAM_LONG") == "1" {
			rounds = 400
		}
		seed := int64(20261126)
		if s := os.Getenv("MESHNET_IPAM_SEED"); s != "" {
			seed, _ = strconv.ParseInt(s, 10, 64)
		}
		t.Logf("seed %d, %d rounds", seed, rounds)
		newSim(t, seed).run(rounds)
	})
}

type sim struct {
	t    *testing.T
	rng  *rand.Rand
	net  *fakeNet
	cfg  Config
	dirs map[string]string

	poolP, poolQ string
	// allowedQ: addresses of Q held twice when its two lineages met, and
	// by whom. Nobody else may ever get them.
	allowedQ map[netip.Addr][]string
	merged   bool // Q's sides have met
	failed   atomic.Bool
	mu       sync.Mutex
	eps      map[string]map[netip.Addr]string // node -> address -> endpoint record ID

	epSeq atomic.Int64
	stats struct {
		allocs, allocFail, releases, preferred, checks atomic.Int64
	}
	failReasons sync.Map // error prefix -> *atomic.Int64
}

func newSim(t *testing.T, seed int64) *sim {
	cfg := testConfig()
	cfg.RequestTimeout = 150 * time.Millisecond
	cfg.HandoffWait = 2 * time.Second
	s := &sim{
		t:    t,
		rng:  rand.New(rand.NewSource(seed)),
		net:  newFakeNet(seed, false),
		cfg:  cfg,
		dirs: map[string]string{},
	}
	// The bubble's own clock: it moves whenever every node, worker and the
	// gossip pump wait, so timeouts fire as they would on real hosts, in
	// no real time.
	s.net.clk = clock.Real{}
	return s
}

func (s *sim) addNode(name string) *node {
	if s.dirs[name] == "" {
		s.dirs[name] = s.t.TempDir()
	}
	return s.net.addNode(s.t, name, s.dirs[name], s.cfg)
}

// live returns nodes that are not removed; up ones first if upOnly.
func (s *sim) nodes(upOnly bool) []*node {
	var out []*node
	for _, nd := range s.net.list() {
		if nd.removed || (upOnly && !nd.isUp()) {
			continue
		}
		out = append(out, nd)
	}
	return out
}

// pumper delivers gossip and does push/pull between random pairs until
// stop is closed.
func (s *sim) pumper(stop <-chan struct{}, seed int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewSource(seed))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.net.pump(20 + rng.Intn(40))
			if i%15 == 0 {
				ns := s.nodes(true)
				if len(ns) > 1 {
					s.net.syncPair(ns[rng.Intn(len(ns))], ns[rng.Intn(len(ns))])
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return &wg
}

// check stops the world (every node's IPAM lock, in name order) and
// verifies that no address is held by two nodes.
func (s *sim) check(where string) {
	s.stats.checks.Add(1)
	ns := s.nodes(false)
	var locked []*IPAM
	for _, nd := range ns {
		a := nd.ipamOf()
		a.mu.Lock()
		locked = append(locked, a)
	}
	held := map[string]map[netip.Addr][]string{}
	for i, a := range locked {
		for key, lp := range a.pools {
			if held[key] == nil {
				held[key] = map[netip.Addr][]string{}
			}
			for ad := range lp.addrs {
				held[key][ad] = append(held[key][ad], ns[i].name)
			}
		}
	}
	for _, a := range locked {
		a.mu.Unlock()
	}
	for key, m := range held {
		for ad, hs := range m {
			if len(hs) < 2 {
				continue
			}
			if key == s.poolQ && !s.merged {
				continue
			}
			if orig := s.allowedQ[ad]; key == s.poolQ && len(orig) > 0 {
				if !slices.ContainsFunc(hs, func(h string) bool { return !slices.Contains(orig, h) }) {
					continue
				}
			}
			s.fail(fmt.Sprintf("%s: %s of pool %s is held by %v", where, ad, key, hs), key, ad)
		}
	}
}

// endpoint remembers (set != ""), forgets (set == "-") or returns the
// endpoint record a node published for an address, across workers.
func (s *sim) endpoint(node string, ad netip.Addr, set string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.eps == nil {
		s.eps = map[string]map[netip.Addr]string{}
	}
	if s.eps[node] == nil {
		s.eps[node] = map[netip.Addr]string{}
	}
	switch set {
	case "":
		return s.eps[node][ad]
	case "-":
		delete(s.eps[node], ad)
	default:
		s.eps[node][ad] = set
	}
	return set
}

func (s *sim) conflictHolders(pool string, ad netip.Addr) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pool != s.poolQ {
		return nil
	}
	return s.allowedQ[ad]
}

// fail reports a broken invariant with what every node thinks of the
// block, and stops the simulation.
func (s *sim) fail(msg, key string, ad netip.Addr) {
	var b strings.Builder
	b.WriteString(msg + "\n")
	for _, nd := range s.nodes(false) {
		a := nd.ipamOf()
		a.mu.Lock()
		v := a.viewLocked(key)
		if v == nil {
			a.mu.Unlock()
			continue
		}
		i, _ := v.geo.blockOf(ad)
		bi := v.blocks[i]
		fmt.Fprintf(&b, "  %s (up %v) sees origin %s block %s: owner %q %s gen %d max %d frozen %v contested %v\n",
			nd.name, nd.isUp(), v.origin, v.geo.blockPrefix(i), bi.owner, bi.state, bi.gen, bi.maxGen, bi.frozen, bi.contested)
		for _, r := range v.recs {
			if r.prefix.Overlaps(v.geo.blockPrefix(i)) {
				fmt.Fprintf(&b, "      rec %s %s origin %s gen %d to %q from %q conceded %v held %v heldIn %v v%d\n",
					r.owner, r.prefix, r.v.Origin, r.v.Gen, r.v.To, r.v.From, r.v.Conceded, r.v.Held, r.v.HeldIn, r.version)
			}
		}
		a.mu.Unlock()
	}
	s.failed.Store(true)
	s.t.Error(b.String())
}

func (s *sim) dupsQ() map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for ad, hs := range holders(s.nodes(false), s.poolQ) {
		if len(hs) > 1 {
			out[ad] = hs
		}
	}
	return out
}

func (s *sim) countFail(err error) {
	reason := err.Error()
	if i := strings.IndexAny(reason, ":("); i > 0 {
		reason = reason[:i]
	}
	var e *Error
	if errors.As(err, &e) {
		reason = e.Kind.Error()
		switch {
		case strings.Contains(e.Msg, "are down"):
			reason += " (donors down)"
		case strings.Contains(e.Msg, "inherit"):
			reason += " (waiting for heir)"
		}
	}
	c, _ := s.failReasons.LoadOrStore(reason, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	s.stats.allocFail.Add(1)
}

// worker does random allocations and releases on one node (worker w of
// nw releases only addresses it allocated, or whose last byte is w modulo
// nw), publishing an endpoint record for each address as the daemon does.
// It releases more often the more the node holds, so that pools hover
// around a fill level instead of filling up.
func (s *sim) worker(nd *node, rng *rand.Rand, ops, w, nw int) {
	a := nd.ipamOf()
	st := nd.store()
	type held struct {
		pool, ep string
		addr     netip.Addr
	}
	var mine []held
	for _, pool := range []string{s.poolP, s.poolQ} {
		for _, ad := range a.Allocations(pool) {
			if int(ad.As4()[3])%nw == w {
				mine = append(mine, held{pool: pool, addr: ad, ep: s.endpoint(nd.name, ad, "")})
			}
		}
	}
	for k := 0; k < ops; k++ {
		if len(mine) > 0 && rng.Intn(120) < min(100, len(mine)) {
			i := rng.Intn(len(mine))
			h := mine[i]
			if len(s.conflictHolders(h.pool, h.addr)) > 0 {
				continue // keep the conflicts to the end, to check they stay reported
			}
			mine = slices.Delete(mine, i, i+1)
			if h.ep != "" {
				if err := st.Delete(gossip.KindEndpoint, h.ep); err != nil {
					s.t.Errorf("%s: delete endpoint: %v", nd.name, err)
				}
				s.endpoint(nd.name, h.addr, "-")
			}
			if err := a.ReleaseAddress(h.pool, h.addr); err != nil {
				s.t.Errorf("%s: release %s: %v", nd.name, h.addr, err)
			}
			s.stats.releases.Add(1)
			continue
		}
		pool := s.poolP
		if rng.Intn(3) == 0 {
			pool = s.poolQ
		}
		var pref netip.Addr
		if rng.Intn(10) == 0 {
			p := netip.MustParsePrefix(pool)
			pref = numAddr(addrNum(p.Addr()).add(u64(uint64(2+rng.Intn(1<<(32-p.Bits())-3)))), true)
			s.stats.preferred.Add(1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		pr, err := a.RequestAddress(ctx, pool, pref, false)
		cancel()
		if err != nil {
			s.countFail(err)
			continue
		}
		s.stats.allocs.Add(1)
		h := held{pool: pool, addr: pr.Addr()}
		if rng.Intn(2) == 0 {
			h.ep = fmt.Sprintf("%s-ep%d", nd.name, s.epSeq.Add(1))
			if _, err := st.Put(gossip.KindEndpoint, h.ep, gossip.EndpointInfo{Subnet: pool, Addr: pr.Addr().String(), Healthy: true}); err != nil {
				s.t.Errorf("%s: put endpoint: %v", nd.name, err)
			}
			s.endpoint(nd.name, h.addr, h.ep)
		}
		mine = append(mine, h)
	}
}

// work runs workers on every up node while a checker stops the world
// again and again.
func (s *sim) work(round int) {
	var wg sync.WaitGroup
	for _, nd := range s.nodes(true) {
		for w := 0; w < 2; w++ {
			wg.Add(1)
			rng := rand.New(rand.NewSource(s.rng.Int63()))
			go func() {
				defer wg.Done()
				s.worker(nd, rng, 4+rng.Intn(6), w, 2)
			}()
		}
	}
	done := make(chan struct{})
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		for {
			select {
			case <-done:
				return
			case <-time.After(3 * time.Millisecond):
				s.check(fmt.Sprintf("round %d (during work)", round))
			}
		}
	}()
	wg.Wait()
	close(done)
	<-checked
}

func (s *sim) partitioned() bool {
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	for _, g := range s.net.group {
		if g != 0 {
			return true
		}
	}
	return false
}

func (s *sim) heal() {
	s.net.setGroups(map[string]int{})
	s.net.syncAll()
}

func (s *sim) run(rounds int) {
	t := s.t
	stop := make(chan struct{})
	pw := s.pumper(stop, s.rng.Int63())
	defer func() {
		close(stop)
		pw.Wait()
		for _, nd := range s.net.list() {
			nd.stop()
		}
	}()

	names := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	for _, n := range names {
		s.addNode(n)
	}
	// Pool P: created once, joined everywhere.
	p := netip.MustParsePrefix("10.80.0.0/22") // 64 blocks of /28
	var err error
	if s.poolP, err = s.net.nodes["n1"].ipamOf().RequestPool(p, map[string]string{"block-prefix": "28"}); err != nil {
		t.Fatal(err)
	}
	s.net.syncAll()
	for _, n := range names[1:] {
		if _, err := s.net.nodes[n].ipamOf().RequestPool(p, nil); err != nil {
			t.Fatalf("%s: join P: %v", n, err)
		}
	}

	// Pool Q: created on both sides of a partition at once.
	q := netip.MustParsePrefix("10.90.0.0/23") // 32 blocks of /28
	s.poolQ = q.String()
	s.net.setGroups(map[string]int{"n4": 1, "n5": 1, "n6": 1})
	var wg sync.WaitGroup
	for _, n := range []string{"n1", "n4"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.net.nodes[n].ipamOf().RequestPool(q, map[string]string{"block-prefix": "28"}); err != nil {
				t.Errorf("%s: create Q: %v", n, err)
			}
		}()
	}
	wg.Wait()
	s.net.step(50 * time.Millisecond)
	s.net.syncAll()
	for _, n := range []string{"n2", "n3", "n5", "n6"} {
		if _, err := s.net.nodes[n].ipamOf().RequestPool(q, nil); err != nil {
			t.Fatalf("%s: join Q: %v", n, err)
		}
	}
	for i := 0; i < 3; i++ {
		s.work(0)
	}
	s.heal()
	dq := s.dupsQ()
	for _, hs := range dq {
		slices.Sort(hs)
	}
	s.mu.Lock()
	s.allowedQ = dq
	s.merged = true
	s.mu.Unlock()
	t.Logf("pool Q created on both sides: %d addresses held twice when they met", len(dq))
	if len(dq) == 0 {
		t.Fatal("the concurrent creation doubled no address: the scenario proves nothing")
	}
	s.check("after Q merge")

	var down []string // crashed, not removed
	joined := 6
	// The first rounds play every kind of fault once, in an order that
	// makes each possible; the rest are drawn at random.
	script := []int{0, 40, 20, 50, 75, 50, 60, 0, 50, 20, 70, 75, 40}
	for r := 1; r <= rounds; r++ {
		up := s.nodes(true)
		x := s.rng.Intn(100)
		if r <= len(script) {
			x = script[r-1]
		}
		switch {
		case x < 15 && !s.partitioned() && len(up) > 3:
			g := map[string]int{}
			for _, nd := range up {
				g[nd.name] = s.rng.Intn(2)
			}
			s.net.setGroups(g)
			t.Logf("round %d: partition %v", r, g)
		case x < 30 && s.partitioned():
			s.heal()
			t.Logf("round %d: healed", r)
		case x < 45 && len(up) > 3:
			nd := up[s.rng.Intn(len(up))]
			nd.stop()
			s.check(fmt.Sprintf("round %d (%s stopped)", r, nd.name))
			s.addNode(nd.name) // restart from disk
			t.Logf("round %d: restarted %s", r, nd.name)
		case x < 55 && len(up) > 4:
			nd := up[s.rng.Intn(len(up))]
			nd.stop()
			down = append(down, nd.name)
			t.Logf("round %d: %s crashed", r, nd.name)
		case x < 65 && len(down) > 0:
			n := down[0]
			down = down[1:]
			s.addNode(n)
			t.Logf("round %d: %s came back", r, n)
		case x < 72 && len(down) > 0 && !s.partitioned():
			// An operator removes a dead node, from a node that has heard
			// everything the live nodes know.
			victim := down[0]
			down = down[1:]
			by := up[s.rng.Intn(len(up))]
			s.net.syncAll()
			s.net.removeNode(t, by, victim)
			t.Logf("round %d: %s removed %s", r, by.name, victim)
		case x < 80 && joined < 8:
			joined++
			n := "n" + strconv.Itoa(joined)
			nd := s.addNode(n)
			for _, pool := range []netip.Prefix{p, q} {
				if _, err := nd.ipamOf().RequestPool(pool, nil); err != nil {
					t.Fatalf("%s: join %s: %v", n, pool, err)
				}
			}
			t.Logf("round %d: %s joined", r, n)
		}
		s.check(fmt.Sprintf("round %d (after fault)", r))
		s.work(r)
		s.check(fmt.Sprintf("round %d (after work)", r))
		if s.failed.Load() {
			t.FailNow()
		}
	}

	// Heal everything, bring every crashed node back, let it converge.
	for _, n := range down {
		s.addNode(n)
	}
	s.heal()
	ns := s.nodes(true)
	s.net.eventually(t, "nodes agree on every block's owner", func() bool {
		s.net.syncAll()
		var ref []string
		for i, nd := range ns {
			a := nd.ipamOf()
			a.mu.Lock()
			var owners []string
			for _, key := range []string{s.poolP, s.poolQ} {
				v := a.viewLocked(key)
				for _, b := range v.blocks {
					owners = append(owners, b.owner+"/"+string(b.state))
				}
			}
			a.mu.Unlock()
			if i == 0 {
				ref = owners
			} else if !slices.Equal(ref, owners) {
				return false
			}
		}
		return true
	})
	s.check("end")
	// Every address Q still holds twice is reported by every node; P has
	// no conflict anywhere.
	dq = s.dupsQ()
	s.net.eventually(t, "every node reports Q's remaining conflicts and none in P", func() bool {
		s.net.syncAll()
		for _, nd := range ns {
			got := map[string]bool{}
			for _, c := range nd.ipamOf().Status().Conflicts {
				if c.Subnet == s.poolP {
					return false
				}
				got[c.Addr] = true
			}
			for ad := range dq {
				if !got[ad.String()] {
					return false
				}
			}
		}
		return true
	})
	// Every node can still get an address in P (it is not full).
	for _, nd := range ns {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := requestAddress(ctx, nd.ipamOf(), s.poolP, netip.Addr{}, false)
		cancel()
		if err != nil && !errors.Is(err, ErrExhausted) {
			t.Errorf("%s: after healing, allocation in P: %v", nd.name, err)
		}
	}
	s.check("final")

	var reasons []string
	s.failReasons.Range(func(k, v any) bool {
		reasons = append(reasons, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(reasons)
	for _, pool := range []string{s.poolP, s.poolQ} {
		t.Logf("pool %s: %d addresses held on %d nodes at the end", pool, len(holders(ns, pool)), len(ns))
	}
	t.Logf("allocations %d (preferred asked %d), failed %d [%s], releases %d, world stops %d, Q conflicts left %d",
		s.stats.allocs.Load(), s.stats.preferred.Load(), s.stats.allocFail.Load(), strings.Join(reasons, "; "),
		s.stats.releases.Load(), s.stats.checks.Load(), len(dq))
	if s.stats.allocs.Load() < int64(rounds)*5 {
		t.Errorf("only %d allocations succeeded: the simulation hardly exercised anything", s.stats.allocs.Load())
	}
}
