package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
)

// Service VIPs (issue 16). A service in vip mode gets one address per
// network, answered by its name in DNS and balanced in the kernel over its
// healthy replicas (dataplane/vip.go).
//
// # Who allocates, and why it converges
//
// The address comes from the network's pool through this node's IPAM, like
// a container's: from a block this node owns, so no other host can hand
// it out, and the allocation is persisted and kept by handoffs (the held
// list). The writer is deterministic: the up node with the lowest name
// among those holding a replica of the service on the network. It writes
// a kindVIP record (ID "<subnet> <service>"); every host reads the same
// records, so every host answers and balances the same address.
//
// Two hosts may still write one at once (each sees only its own replica
// before gossip carries the other's, or they disagree on who is up). Then
// every host picks the same winner from the same records, the lowest
// owner name, and the loser deletes its record and frees its address: the
// store's own rule (only the owner writes a record) is kept, and the
// outcome does not depend on timing. Connections opened to the losing
// address in that window break once; the window is gossip's delay at the
// service's first start.
//
// The record is not withdrawn when its owner dies (records of dead nodes
// keep what they own, like blocks): the address stays stable while its
// owner is down and replicas run elsewhere. Its owner deletes it once no
// endpoint record anywhere carries the service in vip mode for vipLinger
// (a service restarted with one replica keeps its address).
//
// Allocation touches IPAM and may wait for a block, so it runs in its own
// loop (vipLoop), never inside the reconciler.

// kindVIP is a service VIP record; only its owner writes it.
const kindVIP = gossip.KindVIP

// Endpoint modes (label meshnet.endpoint-mode, Swarm's endpoint_mode).
const (
	labelEndpointMode = "meshnet.endpoint-mode"
	modeVIP           = "vip"
	modeDNSRR         = "dnsrr"
)

// vipLinger is how long a VIP outlives the last endpoint of its service.
const vipLinger = 30 * time.Second

// vipInfo is the value of a kindVIP record.
type vipInfo = gossip.VIPInfo

// serviceKey names one service on one network.
type serviceKey struct {
	subnet netip.Prefix
	name   string
}

func (k serviceKey) id() string { return k.subnet.String() + " " + k.name }

// vipRecord is a decoded kindVIP record.
type vipRecord struct {
	owner string
	key   serviceKey
	addr  netip.Addr
}

// endpointMode reads the label: vip or dnsrr; anything else is the default.
// The default is dnsrr, which keeps the answers meshnet gave before VIPs
// existed: a cluster upgraded host by host would otherwise hand a VIP to
// containers whose older host has no rule for it, and services that rely
// on seeing every replica in DNS (clients that balance themselves) keep
// working. Services opt in with meshnet.endpoint-mode=vip.
func endpointMode(labels map[string]string) string {
	if strings.EqualFold(strings.TrimSpace(labels[labelEndpointMode]), modeVIP) {
		return modeVIP
	}
	return modeDNSRR
}

func decodeVIPs(recs []gossip.Record) []vipRecord {
	var out []vipRecord
	for _, r := range recs {
		v, err := gossip.ParseVIP(r)
		if err != nil {
			continue // refused at Merge from peers; counted nowhere else
		}
		out = append(out, vipRecord{owner: r.Owner, key: serviceKey{subnet: v.Subnet, name: v.Service}, addr: v.Addr})
	}
	return out
}

// vipWanted is every service with an endpoint in vip mode, with the nodes
// holding its endpoints (any endpoint record, its node up or not).
func vipWanted(eps []gossip.Endpoint) map[serviceKey][]string {
	out := map[serviceKey][]string{}
	for _, e := range eps {
		// VIPs are IPv4: on an IPv6-only network the service stays
		// DNS round robin (README, "IPv6").
		if e.Info.EndpointMode != modeVIP || !e.Subnet.Addr().Is4() {
			continue
		}
		for _, s := range e.Info.Services {
			k := serviceKey{subnet: e.Subnet.Masked(), name: s}
			out[k] = append(out[k], e.Owner)
		}
	}
	return out
}

// vipWinners is the VIP every host uses per service: among the records
// for a wanted service, the lowest owner's.
func vipWinners(snap *gossip.Snapshot) map[serviceKey]vipRecord {
	wanted := vipWanted(snap.View().Endpoints)
	out := map[serviceKey]vipRecord{}
	for _, v := range decodeVIPs(snap.Records(kindVIP)) {
		if _, ok := wanted[v.key]; !ok {
			continue
		}
		if cur, ok := out[v.key]; !ok || v.owner < cur.owner {
			out[v.key] = v
		}
	}
	return out
}

// desiredVIPs is what this host balances: every winning VIP on a network
// it has, over the healthy replicas of up nodes.
func desiredVIPs(snap *gossip.Snapshot, nets []dataplane.Network) []dataplane.VIP {
	local := map[netip.Prefix]bool{}
	for _, n := range nets {
		local[n.Subnet.Masked()] = true
	}
	backends := map[serviceKey][]netip.Addr{}
	for _, e := range snap.View().Endpoints {
		if !e.Up || !e.Info.Healthy {
			continue
		}
		for _, s := range e.Info.Services {
			k := serviceKey{subnet: e.Subnet.Masked(), name: s}
			backends[k] = append(backends[k], e.Addr)
		}
	}
	var out []dataplane.VIP
	for k, v := range vipWinners(snap) {
		if local[k.subnet] {
			out = append(out, dataplane.VIP{Addr: v.addr, Service: k.name, Backends: backends[k]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// withVIPs rewrites DNS entries for services that have a VIP: their name
// answers the VIP, and tasks.<service> every replica (Swarm's answers).
func withVIPs(snap *gossip.Snapshot, entries []dns.Entry) []dns.Entry {
	winners := vipWinners(snap)
	if len(winners) == 0 {
		return entries
	}
	names := map[netip.Prefix]string{} // Docker network name per subnet, for <service>.<network>
	for i := range entries {
		e := &entries[i]
		var keep, tasks []string
		for _, s := range e.Services {
			k := serviceKey{subnet: e.Subnet.Masked(), name: s}
			if _, ok := winners[k]; ok {
				tasks = append(tasks, s)
				continue
			}
			keep = append(keep, s)
		}
		if len(tasks) > 0 {
			e.Services, e.TaskServices = keep, tasks
		}
		if e.Network != "" {
			names[e.Subnet.Masked()] = e.Network
		}
	}
	keys := make([]serviceKey, 0, len(winners))
	for k := range winners {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].id() < keys[j].id() })
	for _, k := range keys {
		entries = append(entries, dns.Entry{Services: []string{k.name}, Network: names[k.subnet],
			Subnet: k.subnet, Addr: winners[k].addr, Node: winners[k].owner, VIP: true})
	}
	return entries
}

// ownVIPAddrs are the addresses this node's VIP records hold: not leaks.
func ownVIPAddrs(snap *gossip.Snapshot) []netip.Addr {
	var out []netip.Addr
	for _, v := range decodeVIPs(snap.Records(kindVIP)) {
		if v.owner == snap.Self {
			out = append(out, v.addr)
		}
	}
	return out
}

// vipLoop allocates, hands over and frees this node's VIPs on every store
// change and every few seconds (the linger runs out without a change).
func (d *Daemon) vipLoop(ctx context.Context) error {
	changes, cancel := d.store.Subscribe()
	defer cancel()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	gone := map[serviceKey]time.Time{}
	for {
		d.syncVIPs(ctx, gone, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-t.C:
		}
	}
}

// syncVIPs is one pass of vipLoop. gone remembers since when each of this
// node's VIPs has had no service.
func (d *Daemon) syncVIPs(ctx context.Context, gone map[serviceKey]time.Time, now time.Time) {
	snap := d.store.Snapshot()
	self := snap.Self
	wanted := vipWanted(snap.View().Endpoints)
	upHolders := map[serviceKey][]string{}
	for _, e := range snap.View().Endpoints {
		if !e.Up || e.Info.EndpointMode != modeVIP {
			continue
		}
		for _, s := range e.Info.Services {
			k := serviceKey{subnet: e.Subnet.Masked(), name: s}
			upHolders[k] = append(upHolders[k], e.Owner)
		}
	}
	all := decodeVIPs(snap.Records(kindVIP))
	best := map[serviceKey]string{} // lowest owner with a record
	mine := map[serviceKey]vipRecord{}
	for _, v := range all {
		if cur, ok := best[v.key]; !ok || v.owner < cur {
			best[v.key] = v.owner
		}
		if v.owner == self {
			mine[v.key] = v
		}
	}
	// Free what lost or lingered out.
	for k, v := range mine {
		_, want := wanted[k]
		if want {
			delete(gone, k)
		} else if _, ok := gone[k]; !ok {
			gone[k] = now
		}
		lost := best[k] != self
		if !lost && (want || now.Sub(gone[k]) < vipLinger) {
			continue
		}
		d.freeVIP(v, lost)
		delete(gone, k)
	}
	// Allocate where this node is the deterministic writer and no one has.
	for k, holders := range upHolders {
		if _, ok := best[k]; ok {
			continue
		}
		if slices.Min(holders) != self {
			continue
		}
		if err := d.allocateVIP(ctx, k); err != nil {
			d.log.Warn("allocating a service VIP", "service", k.name, "subnet", k.subnet, "err", err)
		}
	}
}

func (d *Daemon) allocateVIP(ctx context.Context, k serviceKey) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := d.ipam.RequestAddress(ctx, k.subnet.String(), netip.Addr{}, false)
	if err != nil {
		return fmt.Errorf("request an address of %s: %w", k.subnet, err)
	}
	if _, err := d.store.Put(kindVIP, k.id(), vipInfo{Subnet: k.subnet.String(), Service: k.name, Addr: p.Addr().String()}); err != nil {
		_ = d.ipam.ReleaseAddress(k.subnet.String(), p.Addr())
		return fmt.Errorf("publish VIP %v: %w", p.Addr(), err)
	}
	d.log.Info("service VIP allocated", "service", k.name, "subnet", k.subnet, "vip", p.Addr())
	return nil
}

func (d *Daemon) freeVIP(v vipRecord, lost bool) {
	if err := d.store.Delete(kindVIP, v.key.id()); err != nil {
		d.log.Warn("withdrawing a service VIP", "service", v.key.name, "vip", v.addr, "err", err)
		return
	}
	if err := d.ipam.ReleaseAddress(v.key.subnet.String(), v.addr); err != nil {
		d.log.Warn("freeing a service VIP's address", "vip", v.addr, "err", err)
	}
	why := "service gone"
	if lost {
		why = "another node's VIP for the service won"
	}
	d.log.Info("service VIP withdrawn", "service", v.key.name, "subnet", v.key.subnet, "vip", v.addr, "why", why)
}
