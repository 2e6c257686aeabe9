package ipam

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshnet/meshnet/gossip"
)

// FuzzStateFile: the allocation table and the cluster cache on disk. A
// damaged file (any byte changed) fails its checksum, so the fuzzer writes
// the table it is given inside a valid envelope, to reach the checks
// behind the checksum. Nothing may panic: New refuses the file with an
// error, or serves the table (status, allocations, the gateway, releases)
// and persists it back readable.
// Run it for real with: go test ./ipam/ -run XXX -fuzz FuzzStateFile
func FuzzStateFile(f *testing.F) {
	f.Add(false, true, []byte(`{"node":"n1","pools":{"10.42.0.0/24":{"refs":1,"addrs":["10.42.0.1","10.42.0.7"]}}}`))
	f.Add(false, true, []byte(`{"node":"n1","pools":{"10.42.0.9/24":{"refs":-3,"addrs":[]}}}`))
	f.Add(false, true, []byte(`{"node":"","pools":{"::/0":{"refs":1,"addrs":["::1"]},"0.0.0.0/0":{"refs":2147483647}}}`))
	f.Add(false, true, []byte(`{"node":"n1","pools":{"10.42.0.0/32":{"refs":1,"released":true,"addrs":["10.42.0.0"]}}}`))
	f.Add(false, true, []byte(`{"node":"n1","pools":{"10.42.0.0/24":null}}`))
	f.Add(true, true, []byte(`{"node":"n1","records":[{"kind":"block","owner":"n2","id":"10.42.0.0/24/10.42.0.0/26","version":5,"value":{}}]}`))
	f.Add(true, true, []byte(`{"node":"n1","records":[{"kind":"pool","owner":"n2","id":"10.42.0.0/24","version":5,"value":{"block_bits":0}}]}`))
	f.Add(false, false, []byte(`{"format":1,"sha256":"00","state":{}}`))
	f.Fuzz(func(t *testing.T, cache, seal bool, data []byte) {
		dir := t.TempDir()
		name := StateFile
		if cache {
			name = ClusterCacheFile
		}
		if seal {
			data = sealEnvelope(data)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		store := gossip.NewStore(gossip.StoreConfig{Self: "n1"})
		cfg := DefaultConfig()
		cfg.Store, cfg.Dir = store, dir
		cfg.HandoffWait = 10 * time.Millisecond
		a, err := New(cfg)
		if err != nil {
			return
		}
		_ = a.Status()
		a.mu.Lock()
		var ids []string
		for id := range a.pools {
			ids = append(ids, id)
		}
		a.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		for _, id := range ids {
			addrs := a.Allocations(id)
			if p, err := a.RequestAddress(ctx, id, netip.Addr{}, true); err == nil {
				_ = a.ReleaseAddress(id, p.Addr())
			}
			for _, ad := range addrs {
				_ = a.ReleaseAddress(id, ad)
			}
			_ = a.ReleasePool(id)
		}
		a.mu.Lock()
		err = a.persistLocked()
		a.mu.Unlock()
		if err != nil {
			t.Fatalf("persisting a table New accepted: %v", err)
		}
		if _, err := loadState(filepath.Join(dir, StateFile)); err != nil {
			t.Fatalf("the table written back does not load: %v", err)
		}
	})
}
