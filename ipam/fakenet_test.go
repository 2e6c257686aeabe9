package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/atomicfile"
	"github.com/meshnet/meshnet/internal/clock"
)

// fakeNet is an in-memory gossip: every record a store broadcasts is queued
// for every other node in the same partition group and delivered in random
// order (memberlist reorders broadcasts too); sync models a push/pull
// full-state exchange. Messages to another group, or to a stopped node,
// are dropped: only a later push/pull repairs that.
type fakeNet struct {
	mu    sync.Mutex
	rng   *rand.Rand
	nodes map[string]*node
	group map[string]int
	queue []delivery
	// instant delivers inside Broadcast (unit tests); otherwise pump does.
	instant bool
	// drop, when set, loses the broadcasts it returns true for, as a lost
	// gossip packet would (push/pull still carries the record).
	drop func(from, to string, r gossip.Record) bool
	// clk is every node's clock unless its Config names one: a clock.Fake
	// that the tests move on (step), or the bubble's own time (sim_test.go).
	clk clock.Clock
}

type delivery struct {
	to  string
	rec gossip.Record
}

func newFakeNet(seed int64, instant bool) *fakeNet {
	return &fakeNet{rng: rand.New(rand.NewSource(seed)), nodes: map[string]*node{}, group: map[string]int{}, instant: instant,
		clk: clock.NewFake(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC))}
}

func (n *fakeNet) broadcast(from string, r gossip.Record) {
	n.mu.Lock()
	var targets []*node
	for name, nd := range n.nodes {
		if name == from || !nd.isUp() || n.group[name] != n.group[from] {
			continue
		}
		if n.drop != nil && n.drop(from, name, r) {
			continue
		}
		if n.instant {
			targets = append(targets, nd)
		} else {
			n.queue = append(n.queue, delivery{to: name, rec: r})
		}
	}
	n.mu.Unlock()
	for _, t := range targets {
		t.merge([]gossip.Record{r})
	}
}

// pump delivers up to max queued messages in random order; it returns how
// many it delivered.
func (n *fakeNet) pump(max int) int {
	done := 0
	for done < max {
		n.mu.Lock()
		if len(n.queue) == 0 {
			n.mu.Unlock()
			break
		}
		i := n.rng.Intn(len(n.queue))
		d := n.queue[i]
		n.queue[i] = n.queue[len(n.queue)-1]
		n.queue = n.queue[:len(n.queue)-1]
		nd := n.nodes[d.to]
		n.mu.Unlock()
		if nd != nil && nd.isUp() {
			nd.merge([]gossip.Record{d.rec})
		}
		done++
	}
	return done
}

// syncPair is one push/pull between a and b, if they can reach each other.
func (n *fakeNet) syncPair(a, b *node) {
	n.mu.Lock()
	ok := a != b && a.isUp() && b.isUp() && n.group[a.name] == n.group[b.name]
	n.mu.Unlock()
	if !ok {
		return
	}
	ra, rb := a.store().All(), b.store().All()
	b.merge(ra)
	a.merge(rb)
}

// syncAll does push/pull between every pair that can reach each other.
func (n *fakeNet) syncAll() {
	nodes := n.list()
	for _, a := range nodes {
		for _, b := range nodes {
			if a.name < b.name {
				n.syncPair(a, b)
			}
		}
	}
}

func (n *fakeNet) list() []*node {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*node, 0, len(n.nodes))
	for _, nd := range n.nodes {
		out = append(out, nd)
	}
	sortNodes(out)
	return out
}

// setGroups partitions the nodes (same number = same side) and tells every
// store who it can see, as memberlist would after its timeouts.
func (n *fakeNet) setGroups(g map[string]int) {
	n.mu.Lock()
	for name := range n.nodes {
		n.group[name] = g[name]
	}
	n.mu.Unlock()
	n.updateMembers()
}

func (n *fakeNet) updateMembers() {
	nodes := n.list()
	n.mu.Lock()
	groups := make(map[string]int, len(n.group))
	for k, v := range n.group {
		groups[k] = v
	}
	n.mu.Unlock()
	for _, a := range nodes {
		if !a.isUp() {
			continue
		}
		for _, b := range nodes {
			if a == b || b.removed {
				continue
			}
			st := gossip.StateDead
			if b.isUp() && groups[a.name] == groups[b.name] {
				st = gossip.StateAlive
			}
			a.store().SetMember(gossip.Member{Name: b.name, Addr: b.name, State: st})
		}
	}
}

// node is one simulated host: a store persisted under dir, an IPAM, and
// its Run loop.
type node struct {
	t    testing.TB
	net  *fakeNet
	name string
	dir  string
	cfg  Config

	// unjoined: start does not mark the node joined (joined.go); it
	// keeps only a mark its state on disk already holds.
	unjoined bool

	mu      sync.Mutex
	st      *gossip.Store
	ipam    *IPAM
	up      bool
	removed bool
	cancel  context.CancelFunc
	done    chan struct{}
}

func (nd *node) isUp() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.up
}

func (nd *node) store() *gossip.Store {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.st
}

func (nd *node) ipamOf() *IPAM {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.ipam
}

func (nd *node) merge(recs []gossip.Record) {
	if s := nd.store(); s != nil {
		if _, err := s.Merge(recs); err != nil {
			nd.t.Errorf("%s: merge: %v", nd.name, err)
		}
	}
}

func testLogger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("MESHNET_IPAM_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

func testConfig() Config {
	c := DefaultConfig()
	c.RequestTimeout = 300 * time.Millisecond
	c.HandoffWait = 5 * time.Second
	c.ResyncInterval = 50 * time.Millisecond
	c.PublishInterval = 200 * time.Millisecond
	c.Clock = nil // the network's: fakeNet.clk
	return c
}

// addNode creates a node (or restarts one from its directory) and starts it.
func (n *fakeNet) addNode(t testing.TB, name, dir string, cfg Config) *node {
	nd := &node{t: t, net: n, name: name, dir: dir, cfg: cfg}
	n.mu.Lock()
	if old, ok := n.nodes[name]; ok {
		nd = old
	} else {
		n.nodes[name] = nd
		t.Cleanup(nd.stop) // before its directory goes
	}
	n.mu.Unlock()
	nd.start()
	return nd
}

func (nd *node) start() {
	t := nd.t
	own := filepath.Join(nd.dir, "own.json")
	st := gossip.NewStore(gossip.StoreConfig{
		Self: nd.name,
		Persist: func(s gossip.OwnState) error {
			b, err := json.Marshal(s)
			if err != nil {
				return err
			}
			return atomicfile.Write(own, b, 0o600)
		},
		Broadcast: func(r gossip.Record) { nd.net.broadcast(nd.name, r) },
		// The network's clock: record versions, the removal rule (a
		// removal of a node written while it runs is refused) and
		// ipam's timers all read one time.
		Now: nd.net.clk.Now,
		Log: testLogger(t, nd.name),
	})
	if b, err := os.ReadFile(own); err == nil {
		var s gossip.OwnState
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: own state: %v", nd.name, err)
		}
		if err := st.Load(s); err != nil {
			t.Fatalf("%s: load own state: %v", nd.name, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	cfg := nd.cfg
	cfg.Store, cfg.Dir, cfg.Log = st, nd.dir, testLogger(t, nd.name)
	if cfg.Clock == nil {
		cfg.Clock = nd.net.clk
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("%s: new ipam: %v", nd.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	nd.mu.Lock()
	nd.st, nd.ipam, nd.up, nd.cancel, nd.done = st, a, true, cancel, done
	nd.mu.Unlock()
	nd.net.updateMembers()
	// Joining memberlist does a push/pull with the node joined.
	for _, other := range nd.net.list() {
		nd.net.syncPair(nd, other)
	}
	// As the daemon does after that exchange, or as a new cluster's
	// first node (joined.go).
	if nd.unjoined {
		// As the daemon: nothing heard yet.
	} else if err := a.MarkJoined("fake network"); err != nil {
		t.Fatalf("%s: mark joined: %v", nd.name, err)
	}
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("%s: run: %v", nd.name, err)
		}
	}()
}

// stop halts the node as a crash would: no goodbye, state left on disk.
func (nd *node) stop() {
	nd.mu.Lock()
	if !nd.up {
		nd.mu.Unlock()
		return
	}
	nd.up = false
	cancel, done := nd.cancel, nd.done
	nd.mu.Unlock()
	cancel()
	<-done
	nd.net.updateMembers()
}

// removeNode is meshctl rmpeer run on by: a removal record up to the
// highest version of the victim's records that by knows.
func (n *fakeNet) removeNode(t testing.TB, by *node, victim string) {
	if err := by.ipamOf().CanRemove(victim); err != nil {
		t.Fatalf("CanRemove(%s): %v", victim, err)
	}
	var upTo uint64
	for _, r := range by.store().All() {
		if r.Owner == victim && r.Version > upTo {
			upTo = r.Version
		}
	}
	if _, err := by.store().Put(gossip.KindRemoval, victim, gossip.Removal{UpTo: upTo, At: time.Now(), By: by.name}); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	if v := n.nodes[victim]; v != nil {
		v.removed = true
	}
	n.mu.Unlock()
	for _, nd := range n.list() {
		if nd.isUp() {
			nd.store().ForgetMember(victim)
		}
	}
}

// The tests that run nodes run inside a synctest bubble (synctest.Test):
// the nodes' goroutines are the bubble's, so synctest.Wait tells when every
// one of them has done what it can and blocks. Time moves only when a test
// says so: the network's clock.Fake by step, the bubble's own clock (the
// contexts' deadlines) only once everything in the bubble is blocked. No
// test sleeps in real time.

// stepSize is how far step moves the clock when a test waits for
// something: a fraction of testConfig's ResyncInterval, so that Run's
// resync and RequestAddress's request timeouts come due as they would.
const stepSize = 10 * time.Millisecond

// step moves the network's clock on by d and lets every goroutine run
// until it blocks again. On the bubble's own clock (the simulation's) it
// sleeps, which in a bubble returns once everything else is blocked and d
// has passed in the bubble's time, at once in real time.
func (n *fakeNet) step(d time.Duration) {
	if f, ok := n.clk.(*clock.Fake); ok {
		f.Advance(d)
		synctest.Wait()
		return
	}
	time.Sleep(d)
}

// eventually lets the nodes run, moving the clock on a step at a time,
// until cond holds; it fails after 20 s of the network's time, saying
// what state reports then.
func (n *fakeNet) eventually(t testing.TB, what string, cond func() bool, state ...func() string) {
	t.Helper()
	synctest.Wait()
	for i := 0; !cond(); i++ {
		if i >= int(20*time.Second/stepSize) {
			for _, s := range state {
				what += "\n" + s()
			}
			t.Fatalf("not true after 20 s of the nodes' time: %s", what)
		}
		n.step(stepSize)
	}
}

// requestAddress calls a.RequestAddress as Docker does, and while the
// call waits (for a block, for FullAfter) moves a's fake clock on a step
// at a time once everything has blocked: as much time passes for the
// IPAM as it waits for, and none is spent. On any other clock it just
// calls. Only the test's goroutine may use it (synctest.Wait).
func requestAddress(ctx context.Context, a *IPAM, pool string, preferred netip.Addr, gateway bool) (netip.Prefix, error) {
	f, ok := a.cfg.Clock.(*clock.Fake)
	if !ok {
		return a.RequestAddress(ctx, pool, preferred, gateway)
	}
	type result struct {
		p   netip.Prefix
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := a.RequestAddress(ctx, pool, preferred, gateway)
		done <- result{p, err}
	}()
	for {
		synctest.Wait()
		select {
		case r := <-done:
			return r.p, r.err
		default:
		}
		// Blocked: HandoffWait, on this clock, bounds the loop.
		f.Advance(stepSize)
	}
}

func sortNodes(ns []*node) {
	for i := 1; i < len(ns); i++ {
		for j := i; j > 0 && ns[j].name < ns[j-1].name; j-- {
			ns[j], ns[j-1] = ns[j-1], ns[j]
		}
	}
}
