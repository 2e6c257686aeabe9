package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/clock"
)

var subnet16 = netip.MustParsePrefix("10.42.0.0/16")

func mustPool(t *testing.T, a *IPAM, p netip.Prefix, opts map[string]string) string {
	t.Helper()
	id, err := a.RequestPool(p, opts)
	if err != nil {
		t.Fatalf("RequestPool(%s): %v", p, err)
	}
	return id
}

func alloc(t *testing.T, a *IPAM, pool string) netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := requestAddress(ctx, a, pool, netip.Addr{}, false)
	if err != nil {
		t.Fatalf("%s: RequestAddress(%s): %v", a.self, pool, err)
	}
	return p.Addr()
}

func blockIndex(a *IPAM, pool string, ad netip.Addr) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	i, _ := a.viewLocked(pool).geo.blockOf(ad)
	return i
}

func wantKind(t *testing.T, err, kind error, mustContain ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error %v: want kind %v", err, kind)
	}
	for _, s := range mustContain {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestChooseBlockBits(t *testing.T) {
	for _, tc := range []struct {
		subnet  string
		members int
		want    int // host bits; -1: error
	}{
		{"10.42.0.0/16", 1, 6},     // 1024 blocks of /26
		{"10.42.0.0/16", 2000, 5},  // one block each needs 2048 blocks
		{"10.0.0.0/8", 3, 10},      // capped at 16384 blocks of /22
		{"10.42.0.0/24", 3, 4},     // 16 blocks of /28
		{"10.42.0.0/26", 4, 4},     // 4 blocks of /28
		{"10.42.0.0/26", 5, -1},    // needs /25
		{"10.42.0.0/28", 1, 4},     // one block
		{"10.42.0.0/29", 1, -1},    // smaller than a block
		{"fd00:42::/64", 3, 50},    // 16384 blocks
		{"fd00:42::/120", 3, 4},    // 16 blocks of /124
		{"fd00:42::/122", 8, -1},   // needs /121
		{"192.168.0.0/20", 100, 5}, // 128 blocks of /27
	} {
		got, err := chooseBlockBits(netip.MustParsePrefix(tc.subnet), tc.members, minBlockBits)
		if tc.want < 0 {
			if !errors.Is(err, ErrTooSmall) {
				t.Errorf("%s with %d members: got %d, %v; want ErrTooSmall", tc.subnet, tc.members, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s with %d members: got %d, %v; want %d", tc.subnet, tc.members, got, err, tc.want)
		}
	}
	_, err := chooseBlockBits(netip.MustParsePrefix("10.42.0.0/26"), 5, minBlockBits)
	wantKind(t, err, ErrTooSmall, "/25", "5 node")
}

func TestGeometry(t *testing.T) {
	g, err := newGeometry(netip.MustParsePrefix("10.42.0.0/16"), 6)
	if err != nil {
		t.Fatal(err)
	}
	if g.nblocks != 1024 || g.blockLen != 26 {
		t.Fatalf("nblocks %d blockLen %d", g.nblocks, g.blockLen)
	}
	if p := g.blockPrefix(5); p.String() != "10.42.1.64/26" {
		t.Errorf("block 5 = %s", p)
	}
	if i, ok := g.blockOf(netip.MustParseAddr("10.42.1.100")); !ok || i != 5 {
		t.Errorf("blockOf = %d, %v", i, ok)
	}
	if f, l, _ := g.blocksIn(netip.MustParsePrefix("10.42.1.0/24")); f != 4 || l != 7 {
		t.Errorf("blocksIn /24 = %d..%d", f, l)
	}
	gw := firstHost(g.subnet)
	for addr, want := range map[string]bool{"10.42.0.0": true, "10.42.0.1": true, "10.42.255.255": true, "10.42.0.2": false, "10.42.1.0": false} {
		if got := g.reserved(netip.MustParseAddr(addr), gw); got != want {
			t.Errorf("reserved(%s) = %v", addr, got)
		}
	}

	g6, err := newGeometry(netip.MustParsePrefix("fd00:42::/64"), 50)
	if err != nil {
		t.Fatal(err)
	}
	if g6.nblocks != 16384 {
		t.Fatalf("v6 nblocks %d", g6.nblocks)
	}
	if p := g6.blockPrefix(16383); p.String() != "fd00:42:0:0:fffc::/78" {
		t.Errorf("last v6 block = %s", p)
	}
	a := netip.MustParseAddr("fd00:42::fffc:0:0:5")
	if i, _ := g6.blockOf(a); i != 16383 {
		t.Errorf("v6 blockOf = %d", i)
	}
	if g6.addrAt(16383, u64(5)) != a {
		t.Errorf("v6 addrAt = %s", g6.addrAt(16383, u64(5)))
	}
	if g6.reserved(netip.MustParseAddr("fd00:42::ffff:ffff:ffff:ffff"), netip.Addr{}) {
		t.Error("IPv6 has no broadcast address")
	}
}

func TestEncodeAddrs(t *testing.T) {
	in := []netip.Addr{
		netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4"),
		netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.7"),
	}
	enc := encodeAddrs(in)
	if strings.Join(enc, ",") != "10.0.0.3-10.0.0.5,10.0.0.7,10.0.0.9" {
		t.Fatalf("encoded %v", enc)
	}
	out, err := decodeAddrs(enc)
	if err != nil || !sameAddrs(in, out) {
		t.Fatalf("round trip %v, %v", out, err)
	}
	if _, err := decodeAddrs([]string{"10.0.0.9-10.0.0.1"}); err == nil {
		t.Error("descending range accepted")
	}
}

func TestSingleNodeAllocatesAndPersists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		dir := t.TempDir()
		n1 := net.addNode(t, "n1", dir, testConfig())
		a := n1.ipamOf()
		pool := mustPool(t, a, subnet16, nil)
		if pool != "10.42.0.0/16" {
			t.Fatalf("pool ID %q", pool)
		}
		if again := mustPool(t, a, subnet16, nil); again != pool {
			t.Fatalf("second RequestPool gave %q", again)
		}
		gw, ok := a.Gateway(subnet16)
		if !ok || gw.String() != "10.42.0.1" {
			t.Fatalf("gateway %s %v", gw, ok)
		}
		g, err := requestAddress(context.Background(), a, pool, netip.Addr{}, true)
		if err != nil || g.String() != "10.42.0.1/16" {
			t.Fatalf("gateway request: %s %v", g, err)
		}
		seen := map[netip.Addr]bool{}
		for i := 0; i < 300; i++ {
			ad := alloc(t, a, pool)
			if seen[ad] || ad == gw || ad == subnet16.Addr() {
				t.Fatalf("address %s handed out twice or reserved", ad)
			}
			seen[ad] = true
		}
		st := a.Status()
		if len(st.Pools) != 1 || st.Pools[0].Usage[0].Node != "n1" || st.Pools[0].Usage[0].Blocks != 1024 || st.Pools[0].Local.Allocated != 300 {
			t.Fatalf("status: %+v", st.Pools)
		}
		released := netip.MustParseAddr("10.42.0.7")
		if !seen[released] {
			t.Fatalf("10.42.0.7 was not allocated: allocation does not fill from the bottom")
		}
		if err := a.ReleaseAddress(pool, released); err != nil {
			t.Fatal(err)
		}
		delete(seen, released)

		// Restart from disk: the same allocations, never handed out again.
		n1.stop()
		n1 = net.addNode(t, "n1", dir, testConfig())
		a = n1.ipamOf()
		got := a.Allocations(pool)
		if len(got) != len(seen) {
			t.Fatalf("after restart %d allocations, want %d", len(got), len(seen))
		}
		for _, ad := range got {
			if !seen[ad] {
				t.Fatalf("after restart unknown allocation %s", ad)
			}
		}
		for i := 0; i < 50; i++ {
			ad := alloc(t, a, pool)
			if seen[ad] {
				t.Fatalf("after restart %s handed out again", ad)
			}
			seen[ad] = true
		}
		// Refcount: two requests, two releases.
		if err := a.ReleasePool(pool); err != nil {
			t.Fatal(err)
		}
		if _, err := requestAddress(context.Background(), a, pool, netip.Addr{}, false); err != nil {
			t.Fatalf("pool released after one of two references: %v", err)
		}
		if err := a.ReleasePool(pool); err != nil {
			t.Fatal(err)
		}
		_, err = requestAddress(context.Background(), a, pool, netip.Addr{}, false)
		wantKind(t, err, ErrUnknownPool)
	})
}

func TestIPv6Pool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		p6 := netip.MustParsePrefix("fd00:42::/64")
		pool := mustPool(t, n1.ipamOf(), p6, nil)
		mustPool(t, n2.ipamOf(), p6, nil)
		seen := map[netip.Addr]string{}
		for i := 0; i < 20; i++ {
			for _, nd := range []*node{n1, n2} {
				ad := alloc(t, nd.ipamOf(), pool)
				if !p6.Contains(ad) || seen[ad] != "" {
					t.Fatalf("%s: bad or duplicate %s (also on %s)", nd.name, ad, seen[ad])
				}
				seen[ad] = nd.name
			}
		}
		if gw, _ := n2.ipamOf().Gateway(p6); gw.String() != "fd00:42::1" {
			t.Errorf("v6 gateway %s", gw)
		}
	})
}

func TestRequestPoolErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		a, b := n1.ipamOf(), n2.ipamOf()

		_, err := a.RequestPool(netip.Prefix{}, nil)
		wantKind(t, err, ErrNoSubnet, "meshnet needs --subnet: docker network create -d meshnet --ipam-driver meshnet --subnet 10.42.0.0/16 NAME")
		_, err = a.RequestPool(netip.MustParsePrefix("10.42.1.0/16"), nil)
		wantKind(t, err, ErrBadSubnet, "10.42.0.0/16")

		mustPool(t, a, subnet16, nil)
		_, err = b.RequestPool(netip.MustParsePrefix("10.42.3.0/24"), nil)
		wantKind(t, err, ErrOverlap, "10.42.3.0/24", "10.42.0.0/16", "n1")
		_, err = a.RequestPool(netip.MustParsePrefix("10.0.0.0/8"), nil)
		wantKind(t, err, ErrOverlap, "10.0.0.0/8", "10.42.0.0/16")

		_, err = b.RequestPool(subnet16, map[string]string{"block-prefix": "24"})
		wantKind(t, err, ErrOptions, "/26", "n1")
		_, err = b.RequestPool(netip.MustParsePrefix("10.9.0.0/16"), map[string]string{"block-prefix": "8"})
		wantKind(t, err, ErrOptions, "block-prefix=8")

		// Too small for the members that are up (n1, n2 and six more).
		for _, m := range []string{"n3", "n4", "n5", "n6", "n7", "n8"} {
			a.store.SetMember(gossip.Member{Name: m, State: gossip.StateAlive})
		}
		_, err = a.RequestPool(netip.MustParsePrefix("192.168.7.0/26"), nil)
		wantKind(t, err, ErrTooSmall, "192.168.7.0/26", "8 node", "/25")
		_, err = a.RequestPool(netip.MustParsePrefix("192.168.7.0/29"), nil)
		wantKind(t, err, ErrTooSmall, "/25")

		// Options that fit are honoured.
		p := netip.MustParsePrefix("172.30.0.0/16")
		mustPool(t, a, p, map[string]string{"block-prefix": "/24"})
		if st := a.Status(); st.Pools[0].Subnet != "10.42.0.0/16" || st.Pools[1].BlockLen != 24 {
			t.Fatalf("status %+v", st.Pools)
		}
	})
}

func TestHandoffAndPreferredAddress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		a, b := n1.ipamOf(), n2.ipamOf()
		pool := mustPool(t, a, subnet16, nil)
		x := alloc(t, a, pool)
		if x.String() != "10.42.0.2" {
			t.Fatalf("first address %s", x)
		}
		if id := mustPool(t, b, subnet16, nil); id != pool {
			t.Fatalf("joined %q", id)
		}
		y := alloc(t, b, pool) // waits for a block from n1
		i := blockIndex(a, pool, y)
		net.eventually(t, "n1 sees n2 own its block", func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			blk := a.viewLocked(pool).blocks[i]
			return blk.owner == "n2" && blk.state == StateOwned
		})
		if st := b.Status(); st.Pools[0].Usage[1].Node != "n2" || st.Pools[0].Usage[1].Blocks < 1 {
			t.Fatalf("n2 usage %+v", st.Pools[0].Usage)
		}

		// A preferred address n1 holds: refused, naming the host.
		_, err := requestAddress(context.Background(), b, pool, x, false)
		if !errors.Is(err, ErrAddressInUse) {
			// n1 publishes nothing for its own addresses: the block is n1's
			// and not spare, so the handoff is refused.
			t.Fatalf("preferred %s held by n1: %v", x, err)
		}
		if !strings.Contains(err.Error(), "n1") {
			t.Errorf("error does not name n1: %v", err)
		}
		// An address in an endpoint record of n1: refused, naming n1.
		ep := netip.MustParseAddr("10.42.200.9")
		if _, err := a.store.Put(gossip.KindEndpoint, "ep1", gossip.EndpointInfo{Subnet: pool, Addr: ep.String()}); err != nil {
			t.Fatal(err)
		}
		_, err = requestAddress(context.Background(), b, pool, ep, false)
		wantKind(t, err, ErrAddressInUse, "in use on host n1")
		// A preferred address in one of n1's spare blocks: handed over.
		want := netip.MustParseAddr("10.42.100.50")
		got, err := requestAddress(context.Background(), b, pool, want, false)
		if err != nil || got.Addr() != want || got.Bits() != 16 {
			t.Fatalf("preferred %s: %s %v", want, got, err)
		}
		// n1 can no longer allocate there, and never hands out the endpoint's.
		for k := 0; k < 200; k++ {
			ad := alloc(t, a, pool)
			if blockIndex(a, pool, ad) == blockIndex(a, pool, want) || ad == ep {
				t.Fatalf("n1 allocated %s", ad)
			}
		}
		_, err = requestAddress(context.Background(), b, pool, netip.MustParseAddr("10.43.0.1"), false)
		wantKind(t, err, ErrNotInPool)
		_, err = requestAddress(context.Background(), b, pool, netip.MustParseAddr("10.42.0.1"), false)
		wantKind(t, err, ErrAddressInUse, "reserved")
	})
}

// The IPv6 half of a dual-stack endpoint record counts in its IPv6 pool as
// the IPv4 address counts in its own: another host asking for it is told
// where it is in use.
func TestDualStackEndpointHoldsItsIPv6Address(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		a, b := n1.ipamOf(), n2.ipamOf()
		p6 := netip.MustParsePrefix("fd42::/64")
		pool := mustPool(t, a, p6, nil)
		mustPool(t, b, p6, nil)
		// An address far from n1's first allocations, in a block n1 would
		// hand over, held by an endpoint record of n1.
		ep := netip.MustParseAddr("fd42::c000:0:0:9")
		if _, err := a.store.Put(gossip.KindEndpoint, "ep1", gossip.EndpointInfo{Subnet: "10.42.0.0/16", Addr: "10.42.0.9",
			Subnet6: pool, Addr6: ep.String()}); err != nil {
			t.Fatal(err)
		}
		_, err := requestAddress(context.Background(), b, pool, ep, false)
		wantKind(t, err, ErrAddressInUse, "in use on host n1")
		// Its neighbour, held by nobody: handed over.
		free := netip.MustParseAddr("fd42::c000:0:0:10")
		got, err := requestAddress(context.Background(), b, pool, free, false)
		if err != nil || got.Addr() != free || got.Bits() != 64 {
			t.Fatalf("preferred %s: %s %v", free, got, err)
		}
	})
}

func TestGatewayChoice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		a, b := n1.ipamOf(), n2.ipamOf()
		pool := mustPool(t, a, subnet16, nil)
		// Docker asks for --gateway right after creating the pool: allowed.
		gw := netip.MustParseAddr("10.42.255.254")
		got, err := requestAddress(context.Background(), a, pool, gw, true)
		if err != nil || got.Addr() != gw {
			t.Fatalf("gateway %s: %s %v", gw, got, err)
		}
		mustPool(t, b, subnet16, nil)
		if g, _ := b.Gateway(subnet16); g != gw {
			t.Fatalf("n2 sees gateway %s", g)
		}
		got, err = requestAddress(context.Background(), b, pool, netip.Addr{}, true)
		if err != nil || got.Addr() != gw {
			t.Fatalf("n2 gateway: %s %v", got, err)
		}
		_, err = requestAddress(context.Background(), b, pool, netip.MustParseAddr("10.42.0.1"), true)
		wantKind(t, err, ErrGateway, "10.42.255.254", "--gateway 10.42.255.254")
		// The gateway is never handed to a container, on any node.
		for i := 0; i < 100; i++ {
			if ad := alloc(t, b, pool); ad == gw {
				t.Fatal("gateway handed out")
			}
		}
	})
}

func TestStateFileDamage(t *testing.T) {
	dir := t.TempDir()
	st := gossip.NewStore(gossip.StoreConfig{Self: "n1"})
	cfg := testConfig()
	cfg.Store, cfg.Dir = st, dir
	path := filepath.Join(dir, StateFile)

	for name, content := range map[string]string{
		"torn":     `{"format":1,"sha256":"ab`,
		"garbage":  "\x00\x01binary",
		"checksum": `{"format":1,"sha256":"00","state":{"node":"n1","pools":{}}}`,
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(cfg)
		if err == nil {
			t.Fatalf("%s: damaged state file accepted", name)
		}
		for _, s := range []string{path, "backup", "move it aside"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not mention %q", name, err, s)
			}
		}
	}
	os.Remove(path)

	// Another node's file is refused.
	data, _ := encodeState(&fileState{Node: "other", Pools: map[string]*filePool{}})
	os.WriteFile(path, data, 0o600)
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "other") {
		t.Fatalf("foreign state file: %v", err)
	}
	os.Remove(path)
}

func TestCrashDuringWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		dir := t.TempDir()
		n1 := net.addNode(t, "n1", dir, testConfig())
		a := n1.ipamOf()
		pool := mustPool(t, a, subnet16, nil)
		var before []netip.Addr
		for i := 0; i < 5; i++ {
			before = append(before, alloc(t, a, pool))
		}
		// Power fails after the temporary file is written and synced, before
		// the rename: the allocation must not count (the caller got an error).
		crash := errors.New("power lost")
		a.mu.Lock()
		a.writeFile = func(path string, data []byte) error {
			tmp := path + ".tmp-crash"
			if err := os.WriteFile(tmp, data[:len(data)/2], 0o600); err != nil {
				return err
			}
			return crash
		}
		a.mu.Unlock()
		if _, err := requestAddress(context.Background(), a, pool, netip.Addr{}, false); !errors.Is(err, crash) {
			t.Fatalf("allocation during crash: %v", err)
		}
		n1.stop()
		n1 = net.addNode(t, "n1", dir, testConfig())
		a = n1.ipamOf()
		if got := a.Allocations(pool); !sameAddrs(got, before) {
			t.Fatalf("after crash: %v, want %v", got, before)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, StateFile+".tmp-*")); len(left) != 0 {
			t.Errorf("temporary files left: %v", left)
		}
		next := alloc(t, a, pool)
		for _, b := range before {
			if b == next {
				t.Fatalf("%s handed out twice", next)
			}
		}
	})
}

func TestExhaustion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		a, b := n1.ipamOf(), n2.ipamOf()
		small := netip.MustParsePrefix("10.50.0.0/27") // 2 blocks of /28
		pool := mustPool(t, a, small, nil)
		mustPool(t, b, small, nil)
		total := 0
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := requestAddress(ctx, a, pool, netip.Addr{}, false)
			cancel()
			if err != nil {
				wantKind(t, err, ErrExhausted, "exhausted", "larger subnet")
				break
			}
			total++
			if total > 40 {
				t.Fatal("more addresses than the subnet has")
			}
		}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := requestAddress(ctx, b, pool, netip.Addr{}, false)
			cancel()
			if err != nil {
				wantKind(t, err, ErrExhausted)
				break
			}
			total++
		}
		// 32 addresses - subnet, broadcast, gateway.
		if total != 29 {
			t.Fatalf("handed out %d addresses, want 29", total)
		}
	})
}

func TestRemovedNodeBlocksAreInherited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		n3 := net.addNode(t, "n3", t.TempDir(), testConfig())
		p := netip.MustParsePrefix("10.60.0.0/24") // 16 blocks of /28
		pool := mustPool(t, n1.ipamOf(), p, nil)
		mustPool(t, n2.ipamOf(), p, nil)
		mustPool(t, n3.ipamOf(), p, nil)
		var held []netip.Addr
		for i := 0; i < 20; i++ {
			held = append(held, alloc(t, n2.ipamOf(), pool))
		}
		if _, err := n2.store().Put(gossip.KindEndpoint, "c1", gossip.EndpointInfo{Subnet: pool, Addr: held[0].String()}); err != nil {
			t.Fatal(err)
		}
		n2Blocks := func(a *IPAM) int {
			a.mu.Lock()
			defer a.mu.Unlock()
			k := 0
			for _, b := range a.viewLocked(pool).blocks {
				if b.owner == "n2" {
					k++
				}
			}
			return k
		}
		net.eventually(t, "n3 sees n2's blocks", func() bool { return n2Blocks(n3.ipamOf()) >= 2 })
		n2.stop()
		if err := n3.ipamOf().CanRemove("n3"); err == nil {
			t.Error("a node may remove itself")
		}
		if err := n3.ipamOf().CanRemove("n1"); err == nil || !strings.Contains(err.Error(), "alive") {
			t.Errorf("removing a live node: %v", err)
		}
		net.removeNode(t, n3, "n2")
		net.eventually(t, "n2's blocks inherited by n3", func() bool {
			return n2Blocks(n1.ipamOf()) == 0 && n2Blocks(n3.ipamOf()) == 0 && n3.ipamOf().Status().Pools[0].Heir == ""
		})
		// The heir (n3, who removed n2) now owns them and allocates there.
		a3 := n3.ipamOf()
		got := map[netip.Addr]bool{}
		for i := 0; i < 60; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			pr, err := requestAddress(ctx, a3, pool, netip.Addr{}, false)
			cancel()
			if err != nil {
				break
			}
			got[pr.Addr()] = true
		}
		reused := 0
		for _, h := range held {
			if got[h] {
				reused++
			}
		}
		if reused == 0 {
			t.Fatalf("none of removed n2's addresses came back into use (%d allocated)", len(got))
		}
	})
}

// holders maps every address held by the given nodes to who holds it.
func holders(nodes []*node, pool string) map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, nd := range nodes {
		for _, ad := range nd.ipamOf().Allocations(pool) {
			out[ad] = append(out[ad], nd.name)
		}
	}
	return out
}

func TestConcurrentCreationOnTwoSides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		var nodes []*node
		for _, name := range []string{"n1", "n2", "n3", "n4"} {
			nodes = append(nodes, net.addNode(t, name, t.TempDir(), testConfig()))
		}
		net.setGroups(map[string]int{"n1": 0, "n2": 0, "n3": 1, "n4": 1})
		p := netip.MustParsePrefix("10.70.0.0/24")
		// n1 creates first, n3 a moment later on the other side.
		pool := mustPool(t, nodes[0].ipamOf(), p, nil)
		net.step(time.Millisecond)
		mustPool(t, nodes[2].ipamOf(), p, nil)
		mustPool(t, nodes[1].ipamOf(), p, nil)
		mustPool(t, nodes[3].ipamOf(), p, nil)
		for i := 0; i < 10; i++ {
			for _, nd := range nodes {
				alloc(t, nd.ipamOf(), pool)
			}
		}
		before := holders(nodes, pool)
		var doubled []netip.Addr
		for ad, hs := range before {
			if len(hs) > 1 {
				doubled = append(doubled, ad)
			}
		}
		if len(doubled) == 0 {
			t.Fatal("the two sides did not collide; the test proves nothing")
		}

		net.setGroups(map[string]int{})
		net.syncAll()
		// Every node reports every doubly held address, and agrees on the winner.
		for _, nd := range nodes {
			net.eventually(t, nd.name+" reports the conflicts", func() bool {
				st := nd.ipamOf().Status()
				got := map[string]bool{}
				for _, c := range st.Conflicts {
					got[c.Addr] = true
				}
				for _, ad := range doubled {
					if !got[ad.String()] {
						return false
					}
				}
				// (The losing lineage's records are retired once its nodes have
				// conceded, so Lineages shows it only in between.)
				return len(got) == len(doubled) && st.Pools[0].Origin.Node == "n1"
			})
		}
		// The losing side gets blocks of the winning lineage and keeps working;
		// nobody hands out an address held elsewhere, conflicted ones included.
		for i := 0; i < 15; i++ {
			for _, nd := range nodes {
				ad := alloc(t, nd.ipamOf(), pool)
				if hs := before[ad]; len(hs) > 0 {
					t.Fatalf("%s handed out %s, held by %v", nd.name, ad, hs)
				}
				before[ad] = append(before[ad], nd.name)
			}
		}
		after := holders(nodes, pool)
		for ad, hs := range after {
			if len(hs) > 1 && !containsAddr(doubled, ad) {
				t.Fatalf("%s held by %v after the merge", ad, hs)
			}
		}
		// Once one holder releases a conflicted address, the other still holds
		// it: still not handed out.
		c := doubled[0]
		hs := after[c]
		for _, nd := range nodes {
			if nd.name == hs[0] {
				if err := nd.ipamOf().ReleaseAddress(pool, c); err != nil {
					t.Fatal(err)
				}
			}
		}
		for i := 0; i < 5; i++ {
			for _, nd := range nodes {
				if ad := alloc(t, nd.ipamOf(), pool); ad == c {
					t.Fatalf("%s handed out %s while %s holds it", nd.name, c, hs[1])
				}
			}
		}
	})
}

func containsAddr(s []netip.Addr, a netip.Addr) bool {
	for _, x := range s {
		if x == a {
			return true
		}
	}
	return false
}

// A node removed while it still ran containers comes back: its old records
// stop counting, it lists what it holds, the heir never hands those out,
// and an address both ended up with is reported.
func TestRemovedNodeReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		dir2 := t.TempDir()
		n2 := net.addNode(t, "n2", dir2, testConfig())
		p := netip.MustParsePrefix("10.61.0.0/24")
		pool := mustPool(t, n1.ipamOf(), p, nil)
		mustPool(t, n2.ipamOf(), p, nil)
		var held []netip.Addr
		for i := 0; i < 6; i++ {
			held = append(held, alloc(t, n2.ipamOf(), pool))
		}
		n2.stop()
		net.removeNode(t, n1, "n2")
		// n1 inherits n2's block and hands out one of n2's addresses.
		a1 := n1.ipamOf()
		var taken netip.Addr
		net.eventually(t, "n1 inherits and allocates an address n2 still holds", func() bool {
			pr, err := requestAddress(context.Background(), a1, pool, held[2], false)
			taken = pr.Addr()
			return err == nil
		})
		// n2 comes back a while later (the operator was wrong: it was not
		// dead for good). Its new run starts after everything it wrote
		// before, as with a real clock.
		net.step(time.Second)
		n1.net.mu.Lock()
		n2.removed = false
		n1.net.mu.Unlock()
		n2 = net.addNode(t, "n2", dir2, testConfig())
		net.eventually(t, "both report the doubly held address", func() bool {
			for _, nd := range []*node{n1, n2} {
				st := nd.ipamOf().Status()
				if len(st.Conflicts) != 1 || st.Conflicts[0].Addr != taken.String() || strings.Join(st.Conflicts[0].Nodes, ",") != "n1,n2" {
					return false
				}
			}
			return true
		})
		// n1 never hands out the other addresses n2 holds; n2 gets new blocks.
		for i := 0; i < 40; i++ {
			ad := alloc(t, a1, pool)
			if containsAddr(held, ad) {
				t.Fatalf("n1 handed out %s, which returned n2 holds", ad)
			}
		}
		if got := n2.ipamOf().Allocations(pool); !sameAddrs(got, held) {
			t.Fatalf("n2 lost its allocations: %v", got)
		}
		ad := alloc(t, n2.ipamOf(), pool)
		if containsAddr(held, ad) || containsAddr(n1.ipamOf().Allocations(pool), ad) {
			t.Fatalf("n2 handed out %s twice", ad)
		}
	})
}

// A node that restarts while it can reach nobody knows from its cluster
// cache which blocks are others'; without the cache it knows nothing of
// them, and must not take them either.
func TestRestartAlone(t *testing.T) {
	for _, withCache := range []bool{true, false} {
		t.Run(fmt.Sprintf("cache=%v", withCache), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				net := newFakeNet(1, true)
				n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
				dir2 := t.TempDir()
				n2 := net.addNode(t, "n2", dir2, testConfig())
				p := netip.MustParsePrefix("10.62.0.0/24")
				pool := mustPool(t, n1.ipamOf(), p, nil)
				mustPool(t, n2.ipamOf(), p, nil)
				alloc(t, n2.ipamOf(), pool)
				alloc(t, n1.ipamOf(), pool)
				owners := func(nd *node) []string {
					var out []string
					for _, r := range nd.ipamOf().Status().Pools[0].Ranges {
						out = append(out, fmt.Sprintf("%s-%s:%s:%s", r.First, r.Last, r.Owner, r.State))
					}
					return out
				}
				before := owners(n1)
				ownedBefore := blockOwners(n1.ipamOf(), pool)

				net.setGroups(map[string]int{"n2": 1})
				n2.stop()
				if !withCache {
					os.Remove(filepath.Join(dir2, ClusterCacheFile))
				}
				n2 = net.addNode(t, "n2", dir2, testConfig())
				st := n2.ipamOf().Status().Pools[0]
				unknown := 0
				for _, r := range st.Ranges {
					if r.State == StateUnknown {
						unknown += r.Blocks
					}
				}
				switch {
				case withCache && !slices.Equal(owners(n2), before):
					t.Fatalf("restarted with its cache, n2 sees %v, want %v", owners(n2), before)
				case !withCache && unknown == 0:
					t.Fatalf("restarted without cache, n2 claims to know every block: %v", owners(n2))
				}
				// n2 allocates only in its own blocks, whatever it knows.
				var got []netip.Addr
				for i := 0; i < 40; i++ {
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					pr, err := requestAddress(ctx, n2.ipamOf(), pool, netip.Addr{}, false)
					cancel()
					if err != nil {
						break
					}
					got = append(got, pr.Addr())
				}
				net.setGroups(map[string]int{})
				net.syncAll()
				// Once they meet, both agree, and no block changed hands
				// but by a handoff n2 asked for (its Run asks as soon as n1
				// is back, having no free address left).
				net.eventually(t, "owners agreed and unchanged but for handoffs to n2 after the partition heals", func() bool {
					b1, b2 := blockOwners(n1.ipamOf(), pool), blockOwners(n2.ipamOf(), pool)
					if !slices.Equal(b1, b2) {
						return false
					}
					for i, o := range b1 {
						if o != "n1" && o != "n2" || o == "n1" && ownedBefore[i] != "n1" || ownedBefore[i] == "n2" && o != "n2" {
							return false
						}
					}
					return true
				}, func() string { return fmt.Sprintf("before %v, n1 sees %v, n2 %v", before, owners(n1), owners(n2)) })
				for _, ad := range got {
					i := blockIndex(n1.ipamOf(), pool, ad)
					if r := ownerOf(n1.ipamOf(), pool, i); r != "n2" {
						t.Fatalf("n2 allocated %s in a block of %s", ad, r)
					}
				}
				if c := n1.ipamOf().Status().Conflicts; len(c) != 0 {
					t.Fatalf("conflicts: %v", c)
				}
			})
		})
	}
}

// blockOwners lists the owner of every block of the pool, as a sees it.
func blockOwners(a *IPAM, pool string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, b := range a.viewLocked(pool).blocks {
		out = append(out, b.owner)
	}
	return out
}

func ownerOf(a *IPAM, pool string, i int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.viewLocked(pool).blocks[i].owner
}

// A pool every node released can be created again with other settings: a
// new epoch, which wins over the old lineage everywhere.
func TestRecreateReleasedPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		n1 := net.addNode(t, "n1", t.TempDir(), testConfig())
		n2 := net.addNode(t, "n2", t.TempDir(), testConfig())
		a, b := n1.ipamOf(), n2.ipamOf()
		p := netip.MustParsePrefix("10.63.0.0/24")
		pool := mustPool(t, a, p, map[string]string{"block-prefix": "28"})
		mustPool(t, b, p, nil)
		x := alloc(t, b, pool)
		// In use on n2: other settings are refused, naming the creator.
		if err := a.ReleasePool(pool); err != nil {
			t.Fatal(err)
		}
		_, err := a.RequestPool(p, map[string]string{"block-prefix": "26"})
		wantKind(t, err, ErrOptions, "/28", "n1")
		if err := b.ReleaseAddress(pool, x); err != nil {
			t.Fatal(err)
		}
		if err := b.ReleasePool(pool); err != nil {
			t.Fatal(err)
		}
		net.eventually(t, "n1 sees the pool idle", func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.viewLocked(pool).idle()
		})
		// n1 still has the pool locally (released): it rejoins the old lineage
		// when the settings match...
		if _, err := a.RequestPool(p, nil); err != nil {
			t.Fatal(err)
		}
		if err := a.ReleasePool(pool); err != nil {
			t.Fatal(err)
		}
		// ...and a third node, new to the pool, creates it again with /26.
		n3 := net.addNode(t, "n3", t.TempDir(), testConfig())
		if _, err := n3.ipamOf().RequestPool(p, map[string]string{"block-prefix": "26"}); err != nil {
			t.Fatalf("re-create idle pool: %v", err)
		}
		for _, nd := range []*node{n1, n2, n3} {
			net.eventually(t, nd.name+" follows the new epoch", func() bool {
				st := nd.ipamOf().Status()
				return len(st.Pools) == 1 && st.Pools[0].BlockLen == 26 && st.Pools[0].Origin.Epoch == 2 && st.Pools[0].Origin.Node == "n3"
			})
		}
		// n2 joins the new epoch and gets a /26 from n3.
		if _, err := b.RequestPool(p, nil); err != nil {
			t.Fatal(err)
		}
		y := alloc(t, b, pool)
		if owner := ownerOf(n3.ipamOf(), pool, blockIndex(n3.ipamOf(), pool, y)); owner != "n2" {
			t.Fatalf("n2 allocated %s in a block of %q", y, owner)
		}
	})
}

func TestReleaseStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet(1, true)
		dir := t.TempDir()
		clk := clock.NewFake(time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC))
		now, advance := clk.Now, clk.Advance
		cfg := testConfig()
		cfg.Clock = clk
		n1 := net.addNode(t, "n1", dir, cfg)
		a := n1.ipamOf()
		pool := mustPool(t, a, subnet16, nil)
		if got := a.Pools(); !slices.Equal(got, []string{pool}) {
			t.Fatalf("Pools() = %v, want [%s]", got, pool)
		}
		leaked := alloc(t, a, pool)
		advance(time.Minute)
		watchedFrom := now() // the sweep first saw leaked unused here

		// Held since before the sweep saw it unused: freed.
		if ok, err := a.ReleaseStale(pool, leaked, watchedFrom); !ok || err != nil {
			t.Fatalf("ReleaseStale(%s) = %v, %v; want freed", leaked, ok, err)
		}
		if containsAddr(a.Allocations(pool), leaked) {
			t.Fatalf("%s still allocated after ReleaseStale", leaked)
		}
		// Handed out again after the sweep started watching: a new container's; kept.
		advance(time.Second)
		p, err := requestAddress(context.Background(), a, pool, leaked, false)
		if err != nil {
			t.Fatalf("allocating %s again: %v", leaked, err)
		}
		again := p.Addr()
		if ok, err := a.ReleaseStale(pool, again, watchedFrom); ok || err != nil {
			t.Fatalf("ReleaseStale of an address allocated after the sweep saw it unused = %v, %v; want kept", ok, err)
		}
		// Not held, unknown pool: nothing to do, no error.
		if ok, err := a.ReleaseStale(pool, netip.MustParseAddr("10.42.200.1"), now()); ok || err != nil {
			t.Fatalf("ReleaseStale of a free address = %v, %v", ok, err)
		}
		if ok, err := a.ReleaseStale("10.99.0.0/16", again, now()); ok || err != nil {
			t.Fatalf("ReleaseStale in an unknown pool = %v, %v", ok, err)
		}
		// Loaded from disk after a restart: held since before this process, freed.
		n1.stop()
		n1 = net.addNode(t, "n1", dir, cfg)
		a = n1.ipamOf()
		if ok, err := a.ReleaseStale(pool, again, now().Add(-time.Hour)); !ok || err != nil {
			t.Fatalf("ReleaseStale after a restart = %v, %v; want freed", ok, err)
		}
	})
}
