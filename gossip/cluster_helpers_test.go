package gossip

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// testKeyA is the test clusters' gossip key; testKeyB is another one.
var (
	testKeyA = []byte("meshnet-test-key-A-0123456789abc")
	testKeyB = []byte("meshnet-test-key-B-0123456789abc")
)

// nextTestIP hands every node of the test binary its own loopback address
// (127.0.0.0/8 is all on lo on Linux), so nodes of different tests never
// reach each other even if one outlived its test.
var nextTestIP atomic.Uint32

func testIP() string {
	n := nextTestIP.Add(1)
	return fmt.Sprintf("127.0.%d.%d", 10+n/250, 1+n%250)
}

// testMemberlistConfig shortens memberlist's local-network timers so that
// failure detection and anti-entropy happen within seconds. They stay loose
// enough that 25 nodes under -race, on two cores that other tests share,
// do not declare each other dead for being slow: tighter probes made such
// clusters flap for tens of seconds.
func testMemberlistConfig() *memberlist.Config {
	mc := memberlist.DefaultLocalConfig()
	mc.ProbeInterval = 400 * time.Millisecond
	mc.ProbeTimeout = 300 * time.Millisecond
	mc.IndirectChecks = 3
	mc.SuspicionMult = 4
	// A node cut off from everyone gets no confirmations of its
	// suspicions and would wait the longest timeout (6 times the shortest).
	mc.SuspicionMaxTimeoutMult = 2
	mc.GossipInterval = 50 * time.Millisecond
	// The LAN value (the local config's 2 lets a broadcast die out in a
	// small cluster before it reaches everyone).
	mc.RetransmitMult = 4
	mc.PushPullInterval = time.Second
	mc.GossipToTheDeadTime = time.Second
	mc.TCPTimeout = time.Second
	return mc
}

// testConfig is node i's configuration: port 0 on a fresh loopback address,
// short timers, the test key.
func testConfig(t testing.TB, i int) Config {
	t.Helper()
	return Config{
		NodeName:       fmt.Sprintf("n%02d", i),
		BindAddr:       testIP(),
		BindPort:       0,
		Key:            testKeyA,
		Label:          "meshnet-test",
		RejoinInterval: 500 * time.Millisecond,
		RetryInterval:  50 * time.Millisecond,
		Memberlist:     testMemberlistConfig(),
	}
}

// logBuffer collects a node's log; tests read it, and it is printed when a
// test fails. (t.Log from memberlist's goroutines would race the test's end.)
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testNode is one running node.
type testNode struct {
	t      testing.TB
	name   string
	cfg    Config
	store  *Store
	c      *Cluster
	tr     *blockTransport // nil unless started with one
	log    *logBuffer
	cancel context.CancelFunc
	done   chan error
	stop   sync.Once
}

// startNode creates the node, runs it, and stops it (gracefully) when the
// test ends. A blockable node gets a transport the test can cut.
func startNode(t testing.TB, cfg Config, blockable bool) *testNode {
	t.Helper()
	return startNodeWith(t, cfg, blockable, nil)
}

// startSignedNode starts a node whose store signs with key and which,
// like the daemon, publishes its node record (naming the key) before it
// joins.
func startSignedNode(t testing.TB, cfg Config, key ed25519.PrivateKey) *testNode {
	t.Helper()
	return startNodeWith(t, cfg, false, key)
}

// before, if given, writes to the node's store before it runs (what a
// restarted daemon loads from disk).
func startNodeWith(t testing.TB, cfg Config, blockable bool, key ed25519.PrivateKey, before ...func(*Store)) *testNode {
	t.Helper()
	var tr *blockTransport
	if blockable {
		tr = newBlockTransport(t, cfg.BindAddr, cfg.BindPort)
		cfg.Transport = tr
		cfg.BindPort = tr.port
	}
	n := &testNode{t: t, name: cfg.NodeName, log: &logBuffer{}, done: make(chan error, 1), tr: tr}
	cfg.Log = slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n.cfg = cfg
	n.store = NewStore(StoreConfig{Self: cfg.NodeName, Log: cfg.Log, Key: key})
	c, err := New(cfg, n.store)
	if err != nil {
		if tr != nil {
			tr.Shutdown()
		}
		t.Fatalf("start %s: %v", cfg.NodeName, err)
	}
	n.c = c
	if key != nil {
		host, port := c.LocalAddr()
		info := NodeInfo{Addr: host, GossipPort: port, NodeKey: EncodeNodeKey(key.Public().(ed25519.PublicKey)), Started: time.Now()}
		if _, err := n.store.Put(KindNode, "", info); err != nil {
			c.Close()
			t.Fatalf("publish the node record of %s: %v", cfg.NodeName, err)
		}
	}
	for _, f := range before {
		f(n.store)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		n.leave()
		if t.Failed() {
			log := n.log.String()
			if len(log) > 6000 {
				log = "…" + log[len(log)-6000:]
			}
			t.Logf("log of %s:\n%s", n.name, log)
		}
	})
	return n
}

// addr is the node's gossip address, for others to join.
func (n *testNode) addr() string {
	h, p := n.c.LocalAddr()
	return net.JoinHostPort(h, fmt.Sprint(p))
}

// leave stops Run with a graceful leave and waits for it.
func (n *testNode) leave() error {
	var err error
	n.stop.Do(func() {
		n.cancel()
		select {
		case err = <-n.done:
		case <-time.After(15 * time.Second):
			err = errors.New("Run did not return 15s after its context was cancelled")
			n.t.Errorf("%s: %v", n.name, err)
		}
		n.c.Close()
	})
	return err
}

// kill stops the node without leaving: the others must detect it.
func (n *testNode) kill() {
	n.stop.Do(func() {
		if err := n.c.Close(); err != nil {
			n.t.Errorf("close %s: %v", n.name, err)
		}
		select {
		case err := <-n.done:
			if err != nil {
				n.t.Errorf("%s: Run after Close: %v", n.name, err)
			}
		case <-time.After(15 * time.Second):
			n.t.Errorf("%s: Run did not return 15s after Close", n.name)
		}
		n.cancel()
	})
}

func startCluster(t testing.TB, size int, blockable bool) []*testNode {
	t.Helper()
	return startClusterWith(t, size, blockable, func(*Config) {})
}

// startClusterWith is startCluster with each node's configuration changed
// by adjust before it starts.
func startClusterWith(t testing.TB, size int, blockable bool, adjust func(*Config)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, size)
	for i := range nodes {
		cfg := testConfig(t, i)
		adjust(&cfg)
		if i > 0 {
			cfg.Join = []string{nodes[0].addr()}
		}
		nodes[i] = startNode(t, cfg, blockable)
	}
	stopTogether(t, nodes)
	return nodes
}

// meetAll has every pair of nodes exchange full state once (memberlist's
// Join of a node is a push/pull). Tests that turn push/pull off need it:
// nodes started together join their seed at about the same time, and one
// whose join came before another's may never hear of it, as memberlist's
// alive messages are sent a few times to whoever is known then, and only
// push/pull repairs what they missed. An exchange that fails (a timeout
// under load) is logged: the pairs are many, and the test's own membership
// check says whether they met.
func meetAll(t testing.TB, nodes []*testNode) {
	t.Helper()
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				if _, err := a.c.ml.Join([]string{b.addr()}); err != nil {
					t.Logf("%s joins %s: %v", a.name, b.name, err)
				}
			}
		}
	}
}

// stopTogether makes the nodes leave all at once when the test ends: one
// by one, each graceful leave waits for its broadcast to be sent.
func stopTogether(t testing.TB, nodes []*testNode) {
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.leave() }()
		}
		wg.Wait()
	})
}

// eventually polls cond until it returns nil or the deadline passes. The
// deadlines are generous: they bound a hang, they do not measure speed.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memberStates says which state n's store has for each of names.
func memberStates(n *testNode, names ...string) map[string]MemberState {
	snap := n.store.Snapshot()
	out := make(map[string]MemberState, len(names))
	for _, name := range names {
		out[name] = snap.Members[name].State
	}
	return out
}

func expectMembers(nodes []*testNode, want map[string]MemberState) error {
	for _, n := range nodes {
		snap := n.store.Snapshot()
		for name, st := range want {
			if got := snap.Members[name].State; got != st {
				return fmt.Errorf("%s sees %s as %q, want %q", n.name, name, got, st)
			}
		}
	}
	return nil
}

// expectAllUp checks that every node sees every node up: alive, or suspect
// (a member under test load may miss a probe; it is still a member).
func expectAllUp(nodes []*testNode) error {
	for _, n := range nodes {
		snap := n.store.Snapshot()
		for _, m := range nodes {
			if st := snap.Members[m.name].State; !st.Up() {
				return fmt.Errorf("%s sees %s as %q, want alive or suspect", n.name, m.name, st)
			}
		}
	}
	return nil
}

func allAlive(nodes []*testNode) map[string]MemberState {
	want := make(map[string]MemberState, len(nodes))
	for _, n := range nodes {
		want[n.name] = StateAlive
	}
	return want
}

func expectRecord(nodes []*testNode, kind Kind, owner, id string, present bool) error {
	var wrong []string
	for _, n := range nodes {
		if _, ok := n.store.Snapshot().Get(kind, owner, id); ok != present {
			wrong = append(wrong, n.name)
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("%s: record %s/%s/%s present=%v, want %v", strings.Join(wrong, ", "), kind, owner, id, !present, present)
	}
	return nil
}

func expectSameState(nodes []*testNode) error {
	want := nodes[0].store.All()
	for _, n := range nodes[1:] {
		if got := n.store.All(); !sameRecords(got, want) {
			return fmt.Errorf("%s holds\n%s%s holds\n%s", n.name, formatRecords(got), nodes[0].name, formatRecords(want))
		}
	}
	return nil
}

// blockTransport wraps memberlist's network transport with a switch that
// drops everything in both directions: outgoing packets vanish, dials
// fail, incoming packets are dropped and incoming streams closed.
type blockTransport struct {
	*memberlist.NetTransport
	port    int
	blocked atomic.Bool

	packets  chan *memberlist.Packet
	streams  chan net.Conn
	closing  chan struct{} // Shutdown began: deliver nothing more
	innerOff chan struct{} // the wrapped transport is shut down
	once     sync.Once
	wg       sync.WaitGroup
	err      error
}

var _ memberlist.NodeAwareTransport = (*blockTransport)(nil)

var errPartitioned = errors.New("test partition: transport blocked")

func newBlockTransport(t testing.TB, addr string, port int) *blockTransport {
	t.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port})
	if err != nil {
		t.Fatalf("transport on %s:%d: %v", addr, port, err)
	}
	b := &blockTransport{
		NetTransport: nt,
		port:         nt.GetAutoBindPort(),
		packets:      make(chan *memberlist.Packet),
		streams:      make(chan net.Conn),
		closing:      make(chan struct{}),
		innerOff:     make(chan struct{}),
	}
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		// Keep draining the inner channel until the inner transport is
		// down: its listeners block on it, and its Shutdown waits for them.
		for {
			select {
			case p := <-nt.PacketCh():
				if b.blocked.Load() {
					continue
				}
				select {
				case b.packets <- p:
				case <-b.closing:
				}
			case <-b.innerOff:
				return
			}
		}
	}()
	go func() {
		defer b.wg.Done()
		for {
			select {
			case c := <-nt.StreamCh():
				if b.blocked.Load() {
					c.Close()
					continue
				}
				select {
				case b.streams <- c:
				case <-b.closing:
					c.Close()
				}
			case <-b.innerOff:
				return
			}
		}
	}()
	return b
}

func (b *blockTransport) setBlocked(v bool) { b.blocked.Store(v) }

func (b *blockTransport) PacketCh() <-chan *memberlist.Packet { return b.packets }
func (b *blockTransport) StreamCh() <-chan net.Conn           { return b.streams }

func (b *blockTransport) WriteTo(p []byte, addr string) (time.Time, error) {
	if b.blocked.Load() {
		return time.Now(), nil // lost on the wire
	}
	return b.NetTransport.WriteTo(p, addr)
}

func (b *blockTransport) WriteToAddress(p []byte, a memberlist.Address) (time.Time, error) {
	if b.blocked.Load() {
		return time.Now(), nil
	}
	return b.NetTransport.WriteToAddress(p, a)
}

func (b *blockTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if b.blocked.Load() {
		return nil, errPartitioned
	}
	return b.NetTransport.DialTimeout(addr, timeout)
}

func (b *blockTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if b.blocked.Load() {
		return nil, errPartitioned
	}
	return b.NetTransport.DialAddressTimeout(a, timeout)
}

func (b *blockTransport) Shutdown() error {
	b.once.Do(func() {
		close(b.closing)
		b.err = b.NetTransport.Shutdown()
		close(b.innerOff)
		b.wg.Wait()
	})
	return b.err
}

// checkGoroutineLeaks fails the test if goroutines of memberlist or of this
// package outlive it. Register it first: cleanups run last-in first-out, so
// it runs after the nodes are stopped.
func checkGoroutineLeaks(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		var leaked []string
		deadline := time.Now().Add(10 * time.Second)
		for {
			leaked = leaked[:0]
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			for _, g := range strings.Split(string(buf), "\n\n") {
				if (strings.Contains(g, "hashicorp/memberlist") || strings.Contains(g, "meshnet/gossip.(*")) &&
					!strings.Contains(g, "checkGoroutineLeaks") {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines outlived the test; first:\n%s", len(leaked), leaked[0])
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// kindTest is a record kind whose values the store does not check
// (checkValue): the tests of replication rules write arbitrary values.
const kindTest Kind = "test"
