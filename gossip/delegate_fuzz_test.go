package gossip

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/hashicorp/memberlist"
)

// fuzzCluster is a Cluster without memberlist: enough for its delegate,
// which is where every byte a peer sends arrives (NotifyMsg, MergeRemoteState).
func fuzzCluster(t testing.TB) *Cluster {
	c := &Cluster{
		cfg:          Config{NodeName: "self", Key: testKeyA},
		store:        NewStore(StoreConfig{Self: "self"}),
		peers:        map[string]peer{},
		stop:         make(chan struct{}),
		maxPacketMsg: 1400,
		in:           make(chan inbound, inboundQueue),
	}
	c.log = slog.New(slog.DiscardHandler)
	c.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 3 }, RetransmitMult: 4}
	c.store.setBroadcast(c.broadcast)
	mc := &memberlist.Config{}
	if err := c.setupKeyring(mc); err != nil {
		t.Fatal(err)
	}
	return c
}

// FuzzDelegate feeds peer bytes to every entry of the delegate: as a user
// message (records, key requests and replies) and as a push/pull state.
// Nothing may panic, the store must only hold valid records, the keyring
// must stay valid, and LocalState must encode what was merged.
// Run it for real with: go test ./gossip/ -run XXX -fuzz FuzzDelegate
func FuzzDelegate(f *testing.F) {
	for _, r := range sampleRecords(f) {
		f.Add(false, append([]byte{msgRecord}, rawJSON(f, r)...))
	}
	state, _ := EncodeState(sampleRecords(f))
	f.Add(true, state)
	f.Add(true, []byte{stateVersion, 0x1f, 0x8b})
	req, _ := json.Marshal(keyRequest{ID: "1", From: "peer", Op: KeyInstall, Key: testKeyB})
	f.Add(false, append([]byte{msgKeyRequest}, req...))
	f.Add(false, []byte(`k{"id":"1","from":"peer","op":"remove","key":"bWVzaG5ldC10ZXN0LWtleS1BLTAxMjM0NTY3ODlhYmM="}`))
	rep, _ := json.Marshal(keyReply{ID: "1", Node: "peer", Primary: testKeyA, Keys: [][]byte{testKeyA}})
	f.Add(false, append([]byte{msgKeyReply}, rep...))
	f.Add(false, []byte(`K{"id":"1","node":"p","keys":[null,"",1]}`))
	f.Add(false, []byte{})
	f.Fuzz(func(t *testing.T, asState bool, buf []byte) {
		c := fuzzCluster(t)
		d := &delegate{c: c}
		c.kr.pending["1"] = make(chan keyReply, 1)
		if asState {
			d.MergeRemoteState(buf, false)
		} else {
			d.NotifyMsg(buf)
		}
		c.mergeQueued() // what mergeLoop does
		for _, r := range c.store.All() {
			if err := r.validate(); err != nil {
				t.Fatalf("stored an invalid record: %v", err)
			}
		}
		if err := c.Keys().Validate(); err != nil {
			t.Fatalf("keyring broken: %v", err)
		}
		// A request is queued for the worker, never applied on the
		// packet path.
		if k := c.Keys(); len(k.Keys) != 1 {
			t.Fatalf("a key message changed the keyring inside NotifyMsg")
		}
		select {
		case r := <-c.kr.requests:
			if err := checkOp(r.Op, r.Key); err != nil {
				t.Fatalf("queued an invalid key request: %v", err)
			}
		default:
		}
		select {
		case r := <-c.kr.pending["1"]:
			if r.Err == "" {
				if err := (KeyringState{Primary: r.Primary, Keys: r.Keys}).Validate(); err != nil {
					t.Fatalf("delivered an invalid key reply: %v", err)
				}
			}
		default:
		}
		back, err := DecodeState(d.LocalState(false))
		if err != nil {
			t.Fatalf("LocalState does not decode: %v", err)
		}
		if len(back) != len(c.store.All()) {
			t.Fatalf("LocalState holds %d records, the store %d", len(back), len(c.store.All()))
		}
	})
}

// FuzzDecodeKeyring: the keyring file on disk. Whatever decodes is valid
// and survives a round trip.
func FuzzDecodeKeyring(f *testing.F) {
	good, _ := json.Marshal(KeyringState{Primary: testKeyB, Keys: [][]byte{testKeyB, testKeyA}})
	f.Add(good)
	f.Add([]byte(`{"primary":null,"keys":null}`))
	f.Add([]byte(`{"primary":"bWVzaG5ldA==","keys":["bWVzaG5ldA=="]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, buf []byte) {
		k, err := DecodeKeyring(buf)
		if err != nil {
			return
		}
		if err := k.Validate(); err != nil {
			t.Fatalf("decoded an invalid keyring: %v", err)
		}
		again, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeKeyring(again); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}
