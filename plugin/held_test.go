package plugin

import (
	"encoding/json"
	"net/netip"
	"testing"
)

func TestHeldBy(t *testing.T) {
	// What `GET /networks/{id}` returns, trimmed: a meshnet network with
	// two endpoints and an auxiliary address, a bridge network that uses
	// meshnet's IPAM, and a plain bridge network.
	const raw = `[
	 {"Id":"n1","Driver":"meshnet:latest","IPAM":{"Driver":"meshnet:latest","Config":[{"Subnet":"10.42.0.0/24","Gateway":"10.42.0.1","AuxiliaryAddresses":{"router":"10.42.0.250"}}]},
	  "Containers":{"c1":{"EndpointID":"e1","IPv4Address":"10.42.0.2/24"},"ep-e2":{"EndpointID":"e2","IPv4Address":"10.42.0.3/24"}}},
	 {"Id":"n2","Driver":"bridge","IPAM":{"Driver":"meshnet","Config":[{"Subnet":"10.50.0.0/24","Gateway":"10.50.0.1"}]},
	  "Containers":{"c3":{"EndpointID":"e3","IPv4Address":"10.50.0.9/24"}}},
	 {"Id":"n3","Driver":"bridge","IPAM":{"Driver":"default","Config":[{"Subnet":"172.17.0.0/16","Gateway":"172.17.0.1"}]},
	  "Containers":{"c4":{"EndpointID":"e4","IPv4Address":"172.17.0.2/16"}}}
	]`
	var nets []dockerNetworkInspect
	if err := json.Unmarshal([]byte(raw), &nets); err != nil {
		t.Fatal(err)
	}
	h := heldBy(nets, "meshnet")
	wantEps := []string{"e1", "e2"}
	if len(h.Endpoints) != len(wantEps) {
		t.Errorf("endpoints %v, want %v", h.Endpoints, wantEps)
	}
	for _, e := range wantEps {
		if !h.Endpoints[e] {
			t.Errorf("endpoint %s missing from %v", e, h.Endpoints)
		}
	}
	wantAddrs := []string{"10.42.0.1", "10.42.0.250", "10.42.0.2", "10.42.0.3", "10.50.0.1", "10.50.0.9"}
	if len(h.Addrs) != len(wantAddrs) {
		t.Errorf("addresses %v, want %v", h.Addrs, wantAddrs)
	}
	for _, a := range wantAddrs {
		if !h.Addrs[netip.MustParseAddr(a)] {
			t.Errorf("address %s missing from %v", a, h.Addrs)
		}
	}
}
