package daemon

import (
	"context"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/gossip"
)

// stuckDataplane's Apply blocks until the test ends: a dataplane that takes
// its time (a cold Apply at 10,000 endpoints, a Join holding its lock).
type stuckDataplane struct {
	nopDataplane
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stuckDataplane) Apply(ctx context.Context, _ dataplane.State) error {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return nil
}

func (s *stuckDataplane) Close() error { return nil }

// A new endpoint's name answers while the dataplane is still busy applying:
// the DNS table has its own subscription to the store.
func TestDNSTableDoesNotWaitForApply(t *testing.T) {
	d, _ := testDaemon(t, nil, true)
	dp := &stuckDataplane{entered: make(chan struct{}), release: make(chan struct{})}
	d.dp = dp
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context) error{d.reconcileLoop, d.dnsTableLoop} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = loop(ctx) }()
	}
	defer func() { close(dp.release); cancel(); wg.Wait() }()
	select {
	case <-dp.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the reconciler never called Apply")
	}
	if _, err := d.store.Put(gossip.KindEndpoint, "ep1", gossip.EndpointInfo{
		Subnet: "10.42.0.0/24", Addr: "10.42.0.2", MAC: "02:6d:0a:2a:00:02", Container: "web", Network: "app",
		Services: []string{"api"}, Healthy: true,
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if tab := d.dnsTable.Load(); tab != nil {
			if ans, _ := tab.Lookup("api."+d.cfg.DNSDomain+".", mdns.TypeA); len(ans) == 1 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("api did not answer within 5 s while Apply was busy")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
