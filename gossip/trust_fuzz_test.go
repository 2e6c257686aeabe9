package gossip

import (
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"
)

// fuzzSigner is b's node key in FuzzMergeSigned: fixed, so that the seeds
// in testdata mean the same on every run.
var fuzzSigner = ed25519.NewKeyFromSeed([]byte("meshnet-fuzz-node-key-b-01234567"))

// FuzzMergeSigned merges records that b, whose key the receiver has
// pinned, signed over fuzzed fields, as a gossip message and as a
// push/pull state, optionally tampered with after signing. Nothing may
// panic; what the store keeps must be valid, correctly signed by b's key,
// within the clock bound, with values the consumers can use (checkValue,
// and their own parsing); and the clock must stay within the bound.
// Run it for real with: go test ./gossip/ -run XXX -fuzz FuzzMergeSigned
func FuzzMergeSigned(f *testing.F) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := uint64(now.UnixNano())
	node, _ := json.Marshal(NodeInfo{Addr: "198.18.0.2", GossipPort: 7946, NodeKey: EncodeNodeKey(fuzzSigner.Public().(ed25519.PublicKey)), WireGuardKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", WireGuardPort: 51820})
	ep, _ := json.Marshal(endpoint("10.42.0.5"))
	nw, _ := json.Marshal(NetworkInfo{Subnet: "10.42.0.0/24", Gateway: "10.42.0.1", VNI: 42, Dataplane: "vxlan"})
	f.Add("node", "", v, false, node, byte(0))
	f.Add("endpoint", "ep1", v, false, ep, byte(0))
	f.Add("endpoint", "ep1", v, false, ep, byte(7))
	f.Add("network", "10.42.0.0/24", v, false, nw, byte(0))
	f.Add("endpoint", "ep1", uint64(1<<64-1), false, ep, byte(0))
	f.Add("endpoint", "ep1", v, true, []byte(nil), byte(0))
	f.Add("removal", "c", v, false, []byte(`{"up_to":1}`), byte(0))
	f.Fuzz(func(t *testing.T, kind, id string, version uint64, deleted bool, value []byte, tamper byte) {
		for _, asState := range []bool{false, true} {
			recv := NewStore(StoreConfig{Self: "a", Key: ed25519.NewKeyFromSeed(make([]byte, 32)), Now: func() time.Time { return now }, Log: slog.New(slog.DiscardHandler)})
			recv.SetMember(Member{Name: "b", State: StateAlive})
			seed := sign(Record{Key: Key{Kind: KindNode, Owner: "b"}, Version: v - 1, Value: node}, fuzzSigner)
			if _, err := recv.Merge([]Record{seed}); err != nil {
				t.Fatalf("b's node record: %v", err)
			}
			r := sign(Record{Key: Key{Kind: Kind(kind), Owner: "b", ID: id}, Version: version, Deleted: deleted, Value: value}, fuzzSigner)
			switch tamper % 8 {
			case 1:
				r.Version++
			case 2:
				r.Deleted = !r.Deleted
			case 3:
				r.Owner = "c"
			case 4:
				r.Sig[0] ^= 1
			}
			d := delegateOf(t, recv)
			if asState {
				buf, err := EncodeState([]Record{r})
				if err != nil {
					return // a value json cannot carry
				}
				d.MergeRemoteState(buf, false)
			} else {
				buf, err := json.Marshal(r)
				if err != nil {
					return
				}
				d.NotifyMsg(append([]byte{msgRecord}, buf...))
			}
			d.c.mergeQueued() // what mergeLoop does
			limit := uint64(now.Add(DefaultMaxClockAhead).UnixNano())
			if recv.Clock() > limit {
				t.Fatalf("clock %d past the bound %d", recv.Clock(), limit)
			}
			for _, got := range recv.All() {
				if got.Owner != "b" {
					continue
				}
				if err := got.validate(); err != nil {
					t.Fatalf("stored an invalid record: %v", err)
				}
				if err := checkValue(got); err != nil {
					t.Fatalf("stored a value consumers cannot use: %v", err)
				}
				if !verifySig(got) || !ed25519.PublicKey(got.Signer).Equal(fuzzSigner.Public()) {
					t.Fatalf("stored %s without b's signature", got.Key)
				}
				if got.Version > limit {
					t.Fatalf("stored version %d past the bound", got.Version)
				}
				consume(t, got)
			}
		}
	})
}

// consume parses a stored value the way the daemon does, so that a value
// checkValue let through but a consumer chokes on shows up here.
func consume(t *testing.T, r Record) {
	if r.Deleted {
		return
	}
	switch r.Kind {
	case KindNode:
		n, err := DecodeNode(r)
		if err != nil {
			t.Fatal("node value does not decode")
		}
		if _, err := netip.ParseAddr(n.Addr); err != nil {
			t.Fatal(err)
		}
	case KindEndpoint:
		e, err := DecodeEndpoint(r)
		if err != nil {
			t.Fatal("endpoint value does not decode")
		}
		if _, err := netip.ParsePrefix(e.Subnet); err != nil {
			t.Fatal(err)
		}
		if e.MAC != "" {
			if m, err := net.ParseMAC(e.MAC); err != nil || len(m) != 6 {
				t.Fatalf("MAC %q", e.MAC)
			}
		}
	case KindNetwork:
		n, err := DecodeNetwork(r)
		if err != nil || n.VNI > maxVNI {
			t.Fatal("network value")
		}
	}
}
