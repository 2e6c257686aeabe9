package daemon

import (
	"context"
	"testing"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/plugin"
)

// The engine deletes an endpoint while the watcher's pass is describing it
// (DeleteEndpoint does not wait for the pass): the endpoint stays deleted.
// It used to come back, rewritten from the pass's older snapshot, and stay
// routed on every host until the leak sweep.
func TestContainersPassDoesNotResurrectADeletedEndpoint(t *testing.T) {
	d, _ := testDaemon(t, nil, true)
	const ep = "ep0123456789abcdef"
	if _, err := d.store.Put(gossip.KindEndpoint, ep, gossip.EndpointInfo{
		Subnet: "10.42.0.0/24", Addr: "10.42.0.2", MAC: "02:6d:0a:2a:00:02", Healthy: true,
	}); err != nil {
		t.Fatal(err)
	}
	testHookContainersRead = func() {
		if err := (networkBackend{d}).DeleteEndpoint(context.Background(), "net1", ep); err != nil {
			t.Errorf("DeleteEndpoint: %v", err)
		}
	}
	t.Cleanup(func() { testHookContainersRead = nil })
	d.onContainers([]plugin.ContainerInfo{{
		ID: "c1", Name: "web", Running: true,
		Networks: map[string]plugin.EndpointSettings{"app": {EndpointID: ep}},
	}}, nil)
	for _, r := range d.store.Snapshot().Records(gossip.KindEndpoint) {
		if r.ID == ep {
			t.Fatalf("endpoint %s is back after its deletion: %s", ep, r.Value)
		}
	}
}

// A pass with nothing deleted still records the container on its endpoint.
func TestContainersPassDescribesEndpoints(t *testing.T) {
	d, _ := testDaemon(t, nil, true)
	const ep = "ep0123456789abcdef"
	if _, err := d.store.Put(gossip.KindEndpoint, ep, gossip.EndpointInfo{
		Subnet: "10.42.0.0/24", Addr: "10.42.0.2", MAC: "02:6d:0a:2a:00:02",
	}); err != nil {
		t.Fatal(err)
	}
	d.onContainers([]plugin.ContainerInfo{{
		ID: "c1", Name: "web", Running: true, Labels: map[string]string{labelService: "API"},
		Networks: map[string]plugin.EndpointSettings{"app": {EndpointID: ep}},
	}}, nil)
	for _, e := range endpoints(d.store.Snapshot(), false) {
		if e.id == ep {
			if e.info.Container != "web" || e.info.Network != "app" || !e.info.Healthy || len(e.info.Services) != 1 || e.info.Services[0] != "api" {
				t.Fatalf("endpoint after the pass: %+v", e.info)
			}
			return
		}
	}
	t.Fatal("endpoint gone")
}
