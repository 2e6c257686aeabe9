package gossip

import "testing"

// The delegate never waits for the store: while a local write holds the
// store's lock across its persistence (an fsync in the daemon), a peer's
// gossip message and push/pull state are only queued, and mergeLoop merges
// them once the write is done. Before the queue, NotifyMsg merged itself
// and this test hung in it.
func TestDelegateOnlyEnqueuesWhileAWritePersists(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	persisting := false
	s := NewStore(StoreConfig{Self: "a", Persist: func(OwnState) error {
		if persisting {
			close(entered)
			<-release
		}
		return nil
	}})
	d := delegateOf(t, s)
	persisting = true
	put := make(chan error)
	go func() {
		_, err := s.Put(KindNode, "", NodeInfo{Addr: "198.18.0.11"})
		put <- err
	}()
	<-entered // the write holds the store's lock now

	r := Record{Key: Key{Kind: KindNode, Owner: "b"}, Version: 5, Value: rawJSON(t, NodeInfo{Addr: "198.18.0.12"})}
	d.NotifyMsg(append([]byte{msgRecord}, rawJSON(t, r)...))
	state, err := EncodeState([]Record{r})
	if err != nil {
		t.Fatal(err)
	}
	d.MergeRemoteState(state, false)
	if n := len(d.c.in); n != 2 {
		t.Fatalf("%d items queued, want the message and the state", n)
	}

	close(release)
	if err := <-put; err != nil {
		t.Fatal(err)
	}
	d.c.mergeQueued()
	if _, ok := s.Snapshot().Get(KindNode, "b", ""); !ok {
		t.Error("the queued record was not merged")
	}
}
