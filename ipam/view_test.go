package ipam

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/meshnet/meshnet/gossip"
)

// recs builds records as their owners would have written them.
type recs []gossip.Record

func (rs *recs) add(kind gossip.Kind, owner, id string, version uint64, v any) {
	raw, _ := json.Marshal(v)
	*rs = append(*rs, gossip.Record{Key: gossip.Key{Kind: kind, Owner: owner, ID: id}, Version: version, Value: raw})
}

// viewOf merges the records into self's store and computes the view.
func viewOf(t *testing.T, self string, up []string, rs recs, subnet netip.Prefix) *poolView {
	t.Helper()
	st := gossip.NewStore(gossip.StoreConfig{Self: self})
	// The store takes removals only from writers that are alive: those
	// the test does not have up are alive for the merge only.
	isUp := map[string]bool{}
	for _, n := range up {
		isUp[n] = true
	}
	for _, r := range rs {
		if r.Kind == gossip.KindRemoval && !isUp[r.Owner] {
			st.SetMember(gossip.Member{Name: r.Owner, State: gossip.StateAlive})
		}
	}
	if _, err := st.Merge(rs); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Kind == gossip.KindRemoval && !isUp[r.Owner] {
			st.ForgetMember(r.Owner)
		}
	}
	for _, n := range up {
		st.SetMember(gossip.Member{Name: n, State: gossip.StateAlive})
	}
	c := newCluster(st.Snapshot(), st.All())
	return buildView(c, subnet, nil, newDecoder())
}

func TestViewJudgesBlocks(t *testing.T) {
	p := netip.MustParsePrefix("10.9.0.0/26") // 4 blocks of /28
	key := p.String()
	o := Origin{Epoch: 1, Version: 10, Node: "a"}
	blk := func(i int) string {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(16 * i)}), 28).String()
	}
	base := func() recs {
		var rs recs
		for _, n := range []string{"a", "b", "c"} {
			rs.add(KindPool, n, key, 5, PoolRecord{Subnet: key, Gateway: "10.9.0.1", BlockBits: 4, Origin: o})
		}
		rs.add(gossip.KindBlock, "a", blockID(key, key, o), 11, BlockRecord{Pool: key, Prefix: key, Origin: o, Gen: 1})
		return rs
	}
	owners := func(v *poolView) []string {
		var out []string
		for _, b := range v.blocks {
			s := b.owner + ":" + string(b.state)
			if b.frozen {
				s += ":frozen"
			}
			out = append(out, s)
		}
		return out
	}
	check := func(name string, v *poolView, want ...string) {
		t.Helper()
		got := owners(v)
		if len(got) != len(want) {
			t.Fatalf("%s: %v", name, got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: block %d is %s, want %s (all %v)", name, i, got[i], want[i], got)
			}
		}
	}

	// A handoff in its two steps: granted, then owned.
	rs := base()
	rs.add(gossip.KindBlock, "a", blockID(key, blk(3), o), 20, BlockRecord{Pool: key, Prefix: blk(3), Origin: o, Gen: 2, To: "b", ForSeq: 1})
	check("granted", viewOf(t, "c", nil, rs, p), "a:owned", "a:owned", "a:owned", "b:granted")
	rs.add(gossip.KindBlock, "b", blockID(key, blk(3), o), 21, BlockRecord{Pool: key, Prefix: blk(3), Origin: o, Gen: 2, From: "a"})
	check("claimed", viewOf(t, "c", nil, rs, p), "a:owned", "a:owned", "a:owned", "b:owned")

	// A rival claim at the same generation: the smaller name wins and
	// waits until the rival concedes.
	rival := append(recs{}, rs...)
	rival.add(gossip.KindBlock, "c", blockID(key, blk(3), o), 22, BlockRecord{Pool: key, Prefix: blk(3), Origin: o, Gen: 2, From: "heir"})
	check("contest", viewOf(t, "a", nil, rival, p), "a:owned", "a:owned", "a:owned", "b:owned:frozen")
	rival.add(gossip.KindBlock, "c", blockID(key, blk(3), o), 23, BlockRecord{Pool: key, Prefix: blk(3), Origin: o, Gen: 2, Conceded: true, Held: []string{"10.9.0.50"}})
	v := viewOf(t, "a", nil, rival, p)
	check("conceded", v, "a:owned", "a:owned", "a:owned", "b:owned")
	if h := v.heldBy[netip.MustParseAddr("10.9.0.50")]; len(h) != 1 || h[0] != "c" {
		t.Errorf("conceded address held by %v", h)
	}

	// b is removed: its claim vanishes, a's grant to it is orphaned
	// evidence, and the remover a is the heir.
	rm := append(recs{}, rs...)
	rm.add(gossip.KindRemoval, "a", "b", 30, gossip.Removal{UpTo: 21})
	v = viewOf(t, "c", nil, rm, p)
	check("removed", v, "a:owned", "a:owned", "a:owned", ":orphaned")
	if v.heir != "a" {
		t.Errorf("heir %q", v.heir)
	}
	// A grant to b made after b's removal (b came back) is not orphaned.
	back := append(recs{}, rm...)
	back.add(gossip.KindBlock, "a", blockID(key, blk(2), o), 40, BlockRecord{Pool: key, Prefix: blk(2), Origin: o, Gen: 2, To: "b", ForSeq: 7})
	check("came back", viewOf(t, "c", nil, back, p), "a:owned", "a:owned", "b:granted", ":orphaned")

	// A node that knows only its own records knows nothing of the rest:
	// unknown, not orphaned.
	var alone recs
	alone.add(KindPool, "b", key, 5, PoolRecord{Subnet: key, Gateway: "10.9.0.1", BlockBits: 4, Origin: o})
	alone.add(gossip.KindBlock, "b", blockID(key, blk(3), o), 21, BlockRecord{Pool: key, Prefix: blk(3), Origin: o, Gen: 2, From: "a"})
	check("alone", viewOf(t, "b", nil, alone, p), ":unknown", ":unknown", ":unknown", "b:owned")

	// The same pool created by c later on another side: a's lineage wins;
	// c's unconceded claim freezes every block until c concedes.
	o2 := Origin{Epoch: 1, Version: 12, Node: "c"}
	var two recs
	two.add(KindPool, "a", key, 5, PoolRecord{Subnet: key, Gateway: "10.9.0.1", BlockBits: 4, Origin: o})
	two.add(gossip.KindBlock, "a", blockID(key, key, o), 11, BlockRecord{Pool: key, Prefix: key, Origin: o, Gen: 1})
	two.add(KindPool, "c", key, 6, PoolRecord{Subnet: key, Gateway: "10.9.0.1", BlockBits: 4, Origin: o2})
	two.add(gossip.KindBlock, "c", blockID(key, key, o2), 12, BlockRecord{Pool: key, Prefix: key, Origin: o2, Gen: 1})
	v = viewOf(t, "a", nil, two, p)
	if v.origin != o {
		t.Fatalf("winner %v, want %v", v.origin, o)
	}
	check("two lineages", v, "a:owned:frozen", "a:owned:frozen", "a:owned:frozen", "a:owned:frozen")
	// c concedes: it holds 10.9.0.5 in block 0.
	two.add(gossip.KindBlock, "c", blockID(key, blk(0), o2), 13, BlockRecord{Pool: key, Prefix: blk(0), Origin: o2, Gen: 1, Conceded: true, Held: []string{"10.9.0.5"}})
	two.add(gossip.KindBlock, "c", blockID(key, key, o2), 14, BlockRecord{Pool: key, Prefix: key, Origin: o2, Gen: 1, Conceded: true, HeldIn: []string{blk(0)}})
	v = viewOf(t, "a", nil, two, p)
	check("two lineages, conceded", v, "a:owned", "a:owned", "a:owned", "a:owned")
	if h := v.heldByOthers(netip.MustParseAddr("10.9.0.5")); len(h) != 1 {
		t.Errorf("c's address not avoided: %v", h)
	}
	// The concession naming a block whose list has not arrived: frozen.
	partial := append(recs{}, two[:len(two)-2]...)
	partial.add(gossip.KindBlock, "c", blockID(key, key, o2), 14, BlockRecord{Pool: key, Prefix: key, Origin: o2, Gen: 1, Conceded: true, HeldIn: []string{blk(0)}})
	check("concession before its list", viewOf(t, "a", nil, partial, p), "a:owned:frozen", "a:owned", "a:owned", "a:owned")
}
