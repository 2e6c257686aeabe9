package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

var testKeyC = []byte("meshnet-test-key-C-0123456789abc")

// persisted records the last keyring each node persisted.
type persisted struct {
	mu   sync.Mutex
	last map[string]KeyringState
	fail bool
}

func (p *persisted) hook(node string) func(KeyringState) error {
	return func(k KeyringState) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.fail {
			return errors.New("disk full")
		}
		p.last[node] = k
		return nil
	}
}

func (p *persisted) get(node string) KeyringState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last[node]
}

// keyCluster starts size nodes on key A that persist their keyrings into p.
func keyCluster(t *testing.T, size int, p *persisted) []*testNode {
	t.Helper()
	nodes := make([]*testNode, size)
	for i := range nodes {
		cfg := testConfig(t, i)
		cfg.PersistKeys = p.hook(cfg.NodeName)
		cfg.KeyTimeout = 10 * time.Second
		if i > 0 {
			cfg.Join = []string{nodes[0].addr()}
		}
		nodes[i] = startNode(t, cfg, false)
	}
	stopTogether(t, nodes)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	return nodes
}

// expectAnswers checks that every node answered without error and holds
// primary and exactly keys afterwards.
func expectAnswers(t *testing.T, op KeyOp, got []NodeKeys, err error, nodes []*testNode, primary []byte, keys ...[]byte) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	if len(got) != len(nodes) {
		t.Fatalf("%s: %d answers for %d nodes: %+v", op, len(got), len(nodes), got)
	}
	for i, a := range got {
		if a.Node != nodes[i].name || a.Err != "" {
			t.Fatalf("%s: answer %d: %+v", op, i, a)
		}
		if !bytes.Equal(a.Primary, primary) || len(a.Keys) != len(keys) {
			t.Fatalf("%s: %s has primary %s and %d keys, want %s and %d", op, a.Node, KeyID(a.Primary), len(a.Keys), KeyID(primary), len(keys))
		}
		for _, k := range keys {
			if !containsKey(a.Keys, k) {
				t.Fatalf("%s: %s lacks key %s", op, a.Node, KeyID(k))
			}
		}
	}
}

// expectUp fails if a node sees another as dead, left or unknown: suspect
// is a slow probe, not a lost member.
func expectUp(nodes []*testNode) error {
	for _, n := range nodes {
		snap := n.store.Snapshot()
		for _, o := range nodes {
			if st := snap.Members[o.name].State; !st.Up() {
				return fmt.Errorf("%s sees %s as %q", n.name, o.name, st)
			}
		}
	}
	return nil
}

// A 3-node cluster rotates from key A to key B and drops A without a node
// ever losing another; afterwards a node with only A is refused, and every
// node persisted the new keyring.
func TestKeyRotationWithoutDowntime(t *testing.T) {
	checkGoroutineLeaks(t)
	p := &persisted{last: map[string]KeyringState{}}
	nodes := keyCluster(t, 3, p)
	ctx := context.Background()

	// Nobody may be declared dead at any moment of the rotation.
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	var flapped error
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if err := expectUp(nodes); err != nil && flapped == nil {
				flapped = err
			}
		}
	}()

	got, err := nodes[1].c.Keyring(ctx, KeyInstall, testKeyB)
	expectAnswers(t, KeyInstall, got, err, nodes, testKeyA, testKeyA, testKeyB)
	got, err = nodes[2].c.Keyring(ctx, KeyUse, testKeyB)
	expectAnswers(t, KeyUse, got, err, nodes, testKeyB, testKeyA, testKeyB)
	if _, err := nodes[0].c.Keyring(ctx, KeyRemove, testKeyB); !errors.Is(err, ErrPrimaryKey) {
		t.Fatalf("removing the primary key: %v, want ErrPrimaryKey", err)
	}
	got, err = nodes[0].c.Keyring(ctx, KeyRemove, testKeyA)
	expectAnswers(t, KeyRemove, got, err, nodes, testKeyB, testKeyB)

	// Gossip keeps flowing on B alone.
	if _, err := nodes[2].store.Put(kindTest, "after-rotation", EndpointInfo{Addr: "10.42.0.7"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "a record after the rotation", func() error {
		return expectRecord(nodes, kindTest, nodes[2].name, "after-rotation", true)
	})
	// Long enough for a node that could not decrypt its peers to be
	// declared dead (probe 400 ms, suspicion about 4 rounds).
	time.Sleep(4 * time.Second)
	close(stopWatch)
	watch.Wait()
	if flapped != nil {
		t.Fatalf("membership broke during the rotation: %v", flapped)
	}
	// Suspicion under load is not an outage; a slow probe clears it.
	eventually(t, converge, "all alive after the rotation", func() error { return expectMembers(nodes, allAlive(nodes)) })
	for _, n := range nodes {
		k := p.get(n.name)
		if !bytes.Equal(k.Primary, testKeyB) || len(k.Keys) != 1 {
			t.Errorf("%s persisted primary %s with %d keys, want B alone", n.name, KeyID(k.Primary), len(k.Keys))
		}
		if got := n.c.Keys(); !bytes.Equal(got.Primary, testKeyB) || len(got.Keys) != 1 {
			t.Errorf("%s: Keys() = primary %s, %d keys", n.name, KeyID(got.Primary), len(got.Keys))
		}
	}

	// A node that only knows the old key is refused.
	cfg := testConfig(t, 3)
	cfg.Join = []string{nodes[0].addr()}
	stale := startNode(t, cfg, false)
	time.Sleep(2 * time.Second)
	for _, n := range nodes {
		if st := memberStates(n, stale.name)[stale.name]; st != "" {
			t.Errorf("%s lists the node with the old key as %q", n.name, st)
		}
	}
	if n := stale.c.NumMembers(); n != 1 {
		t.Errorf("the node with the old key has %d members", n)
	}
	stale.leave()

	// A node with the new key joins.
	cfg = testConfig(t, 4)
	cfg.Key = testKeyB
	cfg.Join = []string{nodes[1].addr()}
	fresh := startNode(t, cfg, false)
	all := append(append([]*testNode{}, nodes...), fresh)
	eventually(t, converge, "a node with the new key joins", func() error { return expectMembers(all, allAlive(all)) })
}

// A node that is down misses the step and is reported; the step stays
// refused for a key some node still encrypts with.
func TestKeyRotationReportsNodesDownAndRefusesKeysInUse(t *testing.T) {
	checkGoroutineLeaks(t)
	p := &persisted{last: map[string]KeyringState{}}
	nodes := keyCluster(t, 3, p)
	ctx := context.Background()

	got, err := nodes[0].c.Keyring(ctx, KeyInstall, testKeyB)
	expectAnswers(t, KeyInstall, got, err, nodes, testKeyA, testKeyA, testKeyB)
	// n02 goes down before "use": it keeps encrypting with A.
	nodes[2].kill()
	up := nodes[:2]
	eventually(t, converge, "n02 dead", func() error {
		return expectMembers(up, map[string]MemberState{nodes[2].name: StateDead})
	})
	got, err = nodes[0].c.Keyring(ctx, KeyUse, testKeyB)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[2].Node != nodes[2].name || !strings.Contains(got[2].Err, "dead") || got[0].Err != "" || got[1].Err != "" {
		t.Fatalf("use with n02 down: %+v", got)
	}
	// Removing A is refused while a node answers that it encrypts with A.
	// n02 is dead, so simulate that with a live node: n01 goes back to A.
	if _, err := nodes[1].c.applyKeyOp(KeyUse, testKeyA); err != nil {
		t.Fatal(err)
	}
	got, err = nodes[0].c.Keyring(ctx, KeyRemove, testKeyA)
	if err == nil || !strings.Contains(err.Error(), nodes[1].name) {
		t.Fatalf("removing a key n01 encrypts with: %v (%+v)", err, got)
	}
	if k := nodes[0].c.Keys(); len(k.Keys) != 2 {
		t.Fatalf("a refused remove changed the keyring: %d keys", len(k.Keys))
	}
	// Using a key a live node lacks is refused, naming the node.
	if _, err := nodes[0].c.applyKeyOp(KeyInstall, testKeyC); err != nil {
		t.Fatal(err)
	}
	got, err = nodes[0].c.Keyring(ctx, KeyUse, testKeyC)
	if err == nil || !strings.Contains(err.Error(), nodes[1].name) || !strings.Contains(err.Error(), "install") {
		t.Fatalf("using a key n01 lacks: %v (%+v)", err, got)
	}
	if k := nodes[0].c.Keys(); bytes.Equal(k.Primary, testKeyC) {
		t.Fatal("a refused use changed the primary key")
	}
	// Unknown operations and short keys are refused before anything is sent.
	if _, err := nodes[0].c.Keyring(ctx, KeyInstall, testKeyB[:16]); err == nil {
		t.Error("a 16-byte key was accepted")
	}
	if _, err := nodes[0].c.Keyring(ctx, "rotate", testKeyB); err == nil {
		t.Error("an unknown operation was accepted")
	}
}

func TestKeyringRefusedWithoutEncryption(t *testing.T) {
	cfg := testConfig(t, 0)
	cfg.Key, cfg.Insecure = nil, true
	n := startNode(t, cfg, false)
	if _, err := n.c.Keyring(context.Background(), KeyList, nil); !errors.Is(err, ErrNoKeyring) {
		t.Fatalf("list without encryption: %v", err)
	}
	if _, err := n.c.applyKeyOp(KeyInstall, testKeyB); !errors.Is(err, ErrNoKeyring) {
		t.Fatalf("install without encryption: %v", err)
	}
}

// A change the node cannot persist is not made; the keyring a node starts
// with holds Key as primary and Keys as installed.
func TestKeyringPersistFailureChangesNothing(t *testing.T) {
	p := &persisted{last: map[string]KeyringState{}, fail: true}
	cfg := testConfig(t, 0)
	cfg.Keys = [][]byte{testKeyB, testKeyA}
	cfg.PersistKeys = p.hook(cfg.NodeName)
	n := startNode(t, cfg, false)
	if k := n.c.Keys(); !bytes.Equal(k.Primary, testKeyA) || len(k.Keys) != 2 {
		t.Fatalf("start: primary %s, %d keys", KeyID(k.Primary), len(k.Keys))
	}
	if _, err := n.c.applyKeyOp(KeyInstall, testKeyC); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("install with a failing disk: %v", err)
	}
	if k := n.c.Keys(); len(k.Keys) != 2 || len(n.c.kr.ring.GetKeys()) != 2 {
		t.Fatalf("a change that was not persisted took effect")
	}
}

func TestKeyringRefusesBadStartKeys(t *testing.T) {
	for name, keys := range map[string][][]byte{
		"short extra key": {testKeyB[:10]},
		"too many":        manyKeys(MaxKeys),
	} {
		cfg := testConfig(t, 0)
		cfg.Keys = keys
		if c, err := New(cfg, NewStore(StoreConfig{Self: cfg.NodeName})); err == nil {
			c.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

func manyKeys(n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, []byte(fmt.Sprintf("meshnet-test-key-%02d-0123456789ab", i)))
	}
	return out
}

// removeKey keeps the order of the other keys and never writes to a slice
// memberlist handed out (the copy taken before must stay intact).
func TestRemoveKeyKeepsOrderAndSharedSlice(t *testing.T) {
	ring, err := memberlist.NewKeyring([][]byte{testKeyB, testKeyC}, testKeyA)
	if err != nil {
		t.Fatal(err)
	}
	before := ring.GetKeys()
	snapshot := append([][]byte(nil), before...)
	if err := removeKey(ring, testKeyB); err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if !bytes.Equal(before[i], snapshot[i]) {
			t.Fatalf("removeKey wrote into the slice readers hold: index %d", i)
		}
	}
	got := ring.GetKeys()
	if len(got) != 2 || !bytes.Equal(got[0], testKeyA) || !bytes.Equal(got[1], testKeyC) {
		t.Fatalf("after removing B: %q", got)
	}
	if err := removeKey(ring, testKeyB); err != nil || len(ring.GetKeys()) != 2 {
		t.Fatalf("removing a missing key: %v", err)
	}
}

func TestDecodeKeyring(t *testing.T) {
	good := `{"primary":"bWVzaG5ldC10ZXN0LWtleS1BLTAxMjM0NTY3ODlhYmM=","keys":["bWVzaG5ldC10ZXN0LWtleS1BLTAxMjM0NTY3ODlhYmM="]}`
	k, err := DecodeKeyring([]byte(good))
	if err != nil || !bytes.Equal(k.Primary, testKeyA) {
		t.Fatalf("good keyring: %v", err)
	}
	for name, bad := range map[string]string{
		"not json":         `{`,
		"no primary":       `{"keys":[]}`,
		"primary not kept": `{"primary":"bWVzaG5ldC10ZXN0LWtleS1BLTAxMjM0NTY3ODlhYmM=","keys":[]}`,
		"short key":        `{"primary":"bWVzaG5ldA==","keys":["bWVzaG5ldA=="]}`,
		"not base64":       `{"primary":"!!","keys":["!!"]}`,
		"huge":             `{"keys":["` + strings.Repeat("A", maxKeyMsg) + `"]}`,
	} {
		if _, err := DecodeKeyring([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A node restarted from its persisted keyring mid-rotation (primary B, A
// still installed) rejoins peers that have not switched yet (primary A, B
// installed): each decrypts what the other encrypts.
func TestKeyringRestartMidRotationRejoins(t *testing.T) {
	checkGoroutineLeaks(t)
	cfg := testConfig(t, 0)
	cfg.Keys = [][]byte{testKeyB}
	seed := startNode(t, cfg, false)
	cfg = testConfig(t, 1)
	cfg.Key, cfg.Keys = testKeyB, [][]byte{testKeyA}
	cfg.Join = []string{seed.addr()}
	restarted := startNode(t, cfg, false)
	both := []*testNode{seed, restarted}
	stopTogether(t, both)
	eventually(t, converge, "rejoined", func() error { return expectMembers(both, allAlive(both)) })
	got, err := seed.c.Keyring(context.Background(), KeyList, nil)
	if err != nil || len(got) != 2 || got[0].Err != "" || got[1].Err != "" {
		t.Fatalf("list: %+v %v", got, err)
	}
	if !bytes.Equal(got[0].Primary, testKeyA) || !bytes.Equal(got[1].Primary, testKeyB) {
		t.Fatalf("primaries %s and %s, want A on n00 and B on n01", KeyID(got[0].Primary), KeyID(got[1].Primary))
	}
}
