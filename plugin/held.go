package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// Held is what the engine holds of a driver's resources on this host: the
// endpoints of its networks, and every address of networks whose IPAM
// driver it is (containers' addresses, gateways, auxiliary addresses). The
// daemon compares it with its own records to find leaks: an address or an
// endpoint record the engine never released because meshnetd was down when
// it should have.
type Held struct {
	Endpoints map[string]bool     // endpoint IDs on networks of the driver
	Addrs     map[netip.Addr]bool // addresses on networks of the IPAM driver
}

// dockerNetworkInspect is the part of GET /networks/{id} Held needs.
type dockerNetworkInspect struct {
	ID     string `json:"Id"`
	Driver string `json:"Driver"`
	IPAM   struct {
		Driver string `json:"Driver"`
		Config []struct {
			Gateway            string            `json:"Gateway"`
			AuxiliaryAddresses map[string]string `json:"AuxiliaryAddresses"`
		} `json:"Config"`
	} `json:"IPAM"`
	Containers map[string]struct {
		EndpointID  string `json:"EndpointID"`
		IPv4Address string `json:"IPv4Address"`
		IPv6Address string `json:"IPv6Address"`
	} `json:"Containers"`
}

// HeldBy asks the engine what it holds of driver (network and IPAM driver
// names match as in RestartStranded). It fails rather than answer in part:
// a network it could not read would make its addresses look free.
func (w *Watcher) HeldBy(ctx context.Context, driver string) (Held, error) {
	if w.clientErr != nil {
		return Held{}, w.clientErr
	}
	var list []struct {
		ID string `json:"Id"`
	}
	if err := w.client.get(ctx, "/networks", nil, &list); err != nil {
		return Held{}, fmt.Errorf("list networks: %w", err)
	}
	nets := make([]dockerNetworkInspect, 0, len(list))
	for _, n := range list {
		var in dockerNetworkInspect
		err := w.client.get(ctx, "/networks/"+url.PathEscape(n.ID), nil, &in)
		if errors.Is(err, errDockerNotFound) {
			continue // removed meanwhile: holds nothing
		}
		if err != nil {
			return Held{}, fmt.Errorf("inspect network %s: %w", n.ID, err)
		}
		nets = append(nets, in)
	}
	return heldBy(nets, driver), nil
}

func heldBy(nets []dockerNetworkInspect, driver string) Held {
	h := Held{Endpoints: map[string]bool{}, Addrs: map[netip.Addr]bool{}}
	add := func(s string) {
		s, _, _ = strings.Cut(s, "/")
		if a, err := netip.ParseAddr(s); err == nil {
			h.Addrs[a.Unmap()] = true
		}
	}
	for _, n := range nets {
		if driverIs(n.Driver, driver) {
			for _, c := range n.Containers {
				if c.EndpointID != "" {
					h.Endpoints[c.EndpointID] = true
				}
			}
		}
		if !driverIs(n.IPAM.Driver, driver) {
			continue
		}
		for _, cfg := range n.IPAM.Config {
			add(cfg.Gateway)
			for _, a := range cfg.AuxiliaryAddresses {
				add(a)
			}
		}
		for _, c := range n.Containers {
			add(c.IPv4Address)
			add(c.IPv6Address)
		}
	}
	return h
}
