package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/plugin"
	"github.com/meshnet/meshnet/sandbox"
)

// Container labels that name a service (DESIGN.md, "DNS").
const (
	labelService        = "meshnet.service"
	labelComposeService = "com.docker.compose.service"
	labelComposeProject = "com.docker.compose.project"
	labelSwarmService   = "com.docker.swarm.service.name"
)

// onContainers receives the full set of running containers from the event
// watcher and brings this node's endpoint and network records up to date
// with what Docker knows and the driver is never told: container names,
// services, aliases, health, network names.
func (d *Daemon) onContainers(containers []plugin.ContainerInfo, networks map[string]string) {
	snap := d.store.Snapshot()
	for _, r := range snap.Records(gossip.KindNetwork) {
		if r.Owner != d.cfg.NodeName {
			continue
		}
		if _, _, err := d.store.Update(gossip.KindNetwork, r.ID, func(cur gossip.Record, ok bool) (any, bool, error) {
			if !ok {
				return nil, false, nil // removed meanwhile: not brought back
			}
			info, err := gossip.DecodeNetwork(cur)
			if err != nil {
				return nil, false, nil
			}
			name, known := networks[info.DockerID]
			if !known || name == "" || name == info.Name {
				return nil, false, nil
			}
			info.Name = name
			return info, true, nil
		}); err != nil {
			d.log.Warn("recording a network's name", "network", short(r.ID), "err", err)
		}
	}
	byEndpoint := endpointContainers(containers)
	d.noteLabelErrors(containers)
	if d.sandboxes != nil {
		d.sandboxes.Sync(sandboxesOf(containers, snap, d.cfg.NodeName))
	}
	d.endpointsMu.Lock()
	defer d.endpointsMu.Unlock()
	snap = d.store.Snapshot()
	if testHookContainersRead != nil {
		testHookContainersRead()
	}
	// Each record is rewritten from its current value, not the snapshot's:
	// an endpoint the engine deleted since (DeleteEndpoint does not wait for
	// this pass) stays deleted, and what the plugin wrote meanwhile, e.g.
	// published ports, is kept.
	for _, r := range snap.Records(gossip.KindEndpoint) {
		if r.Owner != d.cfg.NodeName {
			continue
		}
		if _, _, err := d.store.Update(gossip.KindEndpoint, r.ID, func(cur gossip.Record, ok bool) (any, bool, error) {
			if !ok {
				return nil, false, nil
			}
			info, err := gossip.DecodeEndpoint(cur)
			if err != nil {
				return nil, false, nil
			}
			next := describeEndpoint(info, byEndpoint[r.ID])
			return next, !endpointInfoEqual(info, next), nil
		}); err != nil {
			d.log.Warn("recording an endpoint's container", "endpoint", short(r.ID), "err", err)
		}
	}
}

// testHookContainersRead, when set by a test, runs in onContainers between
// reading the store and rewriting the endpoint records: the window in which
// the engine may delete an endpoint.
var testHookContainersRead func()

// sandboxesOf lists the containers with an endpoint on a meshnet network of
// this node, for the container DNS.
func sandboxesOf(cs []plugin.ContainerInfo, snap *gossip.Snapshot, self string) []sandbox.Sandbox {
	own := make(map[string]netip.Prefix)
	for _, e := range endpoints(snap, false) {
		if e.owner == self {
			own[e.id] = e.subnet
		}
	}
	var out []sandbox.Sandbox
	for _, c := range cs {
		sb := sandbox.Sandbox{Key: c.SandboxKey, Pid: c.Pid, Endpoints: map[string]netip.Prefix{}}
		for _, ep := range c.Networks {
			if subnet, ok := own[ep.EndpointID]; ok {
				sb.Endpoints[ep.EndpointID] = subnet
			}
		}
		if len(sb.Endpoints) > 0 && sb.Key != "" {
			out = append(out, sb)
		}
	}
	return out
}

// containerEndpoint is a container seen on one network.
type containerEndpoint struct {
	c       plugin.ContainerInfo
	network string
	ep      plugin.EndpointSettings
}

func endpointContainers(cs []plugin.ContainerInfo) map[string]containerEndpoint {
	out := make(map[string]containerEndpoint)
	for _, c := range cs {
		for name, ep := range c.Networks {
			if ep.EndpointID != "" {
				out[ep.EndpointID] = containerEndpoint{c: c, network: name, ep: ep}
			}
		}
	}
	return out
}

// describeEndpoint fills an endpoint record from its container. An
// endpoint whose container the engine does not report running (created but
// not started yet, or restarting) keeps its address but is not healthy, so
// DNS does not hand it out.
func describeEndpoint(info gossip.EndpointInfo, ce containerEndpoint) gossip.EndpointInfo {
	if ce.c.ID == "" {
		info.Healthy = false
		return info
	}
	info.Container = ce.c.Name
	info.Network = ce.network
	// A container told to stop (docker stop, a rolling update) finishes
	// what it has but gets no new connections: DNS, VIPs and the routing
	// mesh leave it out from the stop signal on, not from its death.
	info.Healthy = ce.c.Running && !ce.c.Paused && !ce.c.Stopping && ce.c.Health != "unhealthy" && ce.c.Health != "starting"
	info.Services = serviceNames(ce.c, ce.ep)
	info.EndpointMode = endpointMode(ce.c.Labels)
	// An invalid label publishes nothing; meshctl status says why
	// (meshProblems).
	info.MeshPublish, _ = meshPublishStrings(ce.c.Labels)
	info.MeshPreferLocal = len(info.MeshPublish) > 0 && preferLocal(ce.c.Labels)
	info.Ports = info.Ports[:0:0]
	for _, p := range ce.c.Ports {
		info.Ports = append(info.Ports, fmt.Sprintf("%d/%s", p.Port, p.Proto))
	}
	if len(info.Ports) == 0 {
		info.Ports = nil
	}
	return info
}

// serviceNames collects a container's service names from its labels and
// network aliases; the container's own name and ID prefixes are not
// services (they are answered as container names).
func serviceNames(c plugin.ContainerInfo, ep plugin.EndpointSettings) []string {
	set := map[string]bool{}
	if s := c.Labels[labelService]; s != "" {
		set[s] = true
	}
	if s := c.Labels[labelComposeService]; s != "" {
		set[s] = true
		if p := c.Labels[labelComposeProject]; p != "" {
			set[s+"."+p] = true
		}
	}
	if s := c.Labels[labelSwarmService]; s != "" {
		set[s] = true
	}
	for _, a := range ep.Aliases {
		if a == "" || a == c.Name || strings.HasPrefix(c.ID, a) {
			continue
		}
		set[a] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, strings.ToLower(s))
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func endpointInfoEqual(a, b gossip.EndpointInfo) bool {
	return a.Subnet == b.Subnet && a.Addr == b.Addr && a.MAC == b.MAC && a.Container == b.Container &&
		a.Network == b.Network && a.Healthy == b.Healthy && slices.Equal(a.Services, b.Services) &&
		slices.Equal(a.Ports, b.Ports) && a.EndpointMode == b.EndpointMode && slices.Equal(a.MeshPublish, b.MeshPublish) &&
		a.MeshPreferLocal == b.MeshPreferLocal
}
