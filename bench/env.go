package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// Path names, as the report shows them.
const (
	PathUnderlay  = "underlay"
	PathSwarm     = "swarm overlay"
	PathMeshVXLAN = "meshnet vxlan"
	PathMeshWG    = "meshnet wireguard"
	// PathMeshVIP is the meshnet vxlan client to a service VIP whose one
	// replica runs on host B: the same hops as PathMeshVXLAN plus the DNAT.
	PathMeshVIP     = "meshnet vxlan VIP"
	PathWireGuardGo = "wireguard-go"
)

// Endpoint is one end of a measured path: a network namespace to run tools in (a container's,
// or the host's own) and the address the other end reaches it at.
type Endpoint struct {
	Host *harness.SimHost
	// PID is a process in the namespace (container init, or the host's anchor).
	PID int
	IP  netip.Addr
	// Container is the container's name, "" for the host itself.
	Container string
}

// Path is client (on host A) to server (on host B) over one network.
type Path struct {
	Name           string
	Client, Server Endpoint
	// Err says why the path could not be set up; its figures are then unavailable.
	Err error
}

// EnvConfig is how the dataplane environment is set up.
type EnvConfig struct {
	Repo string
	// MeshnetSrc is the source tree meshnetd and meshctl are built from; default Repo.
	MeshnetSrc string
	// MeshnetFlags are added to meshnetd's command line on both hosts.
	MeshnetFlags []string
	WorkDir      string
	Underlay     netip.Prefix
	Tools        Tools
	Log          *slog.Logger
}

// Networks of the run; all inside the simulated hosts.
var (
	swarmSubnet = netip.MustParsePrefix("10.61.0.0/16")
	vxlanSubnet = netip.MustParsePrefix("10.62.0.0/16")
	wgSubnet    = netip.MustParsePrefix("10.63.0.0/16")
	wgGoSubnet  = netip.MustParsePrefix("10.64.0.0/24")
)

// Ports moved off their defaults so meshnet and Swarm run side by side on the same hosts:
// Swarm's networkdb holds 7946 and its overlay VXLAN 4789.
const (
	meshGossipPort = 7947
	meshVXLANPort  = 4790
	wgGoPort       = 51900
	meshService    = "benchsvc"
)

// Env is two simulated Docker hosts running meshnetd and a two-node Swarm, with one
// container per host on each overlay.
type Env struct {
	C    *harness.Cluster
	A, B *harness.SimHost
	cfg  EnvConfig
	log  *slog.Logger

	Paths map[string]*Path
	// Networks maps a path to the Docker network its containers use.
	Networks map[string]string
	// wgGo is the standalone wireguard-go pair, stopped by Close.
	wgGo []*harness.Process
}

// NewEnv brings the hosts up and sets every path up; a path that cannot be set up is kept
// with its error. Only a failure of the hosts themselves (engines, meshnetd) is an error.
func NewEnv(ctx context.Context, cfg EnvConfig) (_ *Env, err error) {
	log := cfg.Log
	start := time.Now()
	c, err := harness.NewSimCluster(ctx, harness.SimOptions{Hosts: 2, Subnet: cfg.Underlay, WorkDir: cfg.WorkDir, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("starting two simulated hosts: %w", err)
	}
	e := &Env{C: c, A: c.Hosts[0].(*harness.SimHost), B: c.Hosts[1].(*harness.SimHost), cfg: cfg, log: log,
		Paths: map[string]*Path{}, Networks: map[string]string{}}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	log.Info("hosts up", "took", time.Since(start).Round(time.Millisecond))
	src := cfg.MeshnetSrc
	if src == "" {
		src = cfg.Repo
	}
	if c.Bin, err = harness.BuildBinaries(ctx, src, filepath.Join(cfg.WorkDir, "bin")); err != nil {
		return nil, err
	}
	join := []string{fmt.Sprintf("%s:%d", e.A.Addr(), meshGossipPort)}
	for _, h := range []*harness.SimHost{e.A, e.B} {
		if _, err := c.StartMeshnetWith(ctx, h, harness.MeshnetConfig{Key: c.Key, Join: join, Flags: append([]string{
			"--bind-port", strconv.Itoa(meshGossipPort), "--vxlan-port", strconv.Itoa(meshVXLANPort),
			// Debug logging costs time on the DNS path; an operator runs at info.
			"--log-level", "info",
			// Docker's resolver has no per-source limit, and one dnsperf client is one
			// source: measure the server, not the limit (its effect is the in-process row).
			"--dns-rate-limit", "0",
		}, cfg.MeshnetFlags...)}); err != nil {
			return nil, fmt.Errorf("starting meshnetd on %s: %w", h.Name(), err)
		}
	}
	e.Paths[PathUnderlay] = &Path{Name: PathUnderlay,
		Client: Endpoint{Host: e.A, PID: e.A.AnchorPID(), IP: e.A.Addr()},
		Server: Endpoint{Host: e.B, PID: e.B.AnchorPID(), IP: e.B.Addr()}}
	e.Paths[PathSwarm] = e.setupSwarm(ctx)
	e.Paths[PathMeshVXLAN] = e.setupMeshnet(ctx, PathMeshVXLAN, "bench-vx", vxlanSubnet, "vxlan")
	e.Paths[PathMeshVIP] = e.setupVIP(ctx, e.Paths[PathMeshVXLAN])
	e.Paths[PathMeshWG] = e.setupMeshnet(ctx, PathMeshWG, "bench-wg", wgSubnet, "wireguard")
	e.Paths[PathWireGuardGo] = e.setupWireGuardGo(ctx)
	for name, p := range e.Paths {
		if p.Err != nil {
			log.Warn("path unavailable", "path", name, "err", p.Err)
		}
	}
	log.Info("paths set up", "took", time.Since(start).Round(time.Millisecond))
	return e, nil
}

// Close tears everything down: the harness kills every process of the hosts (engines,
// Swarm, meshnetd, wireguard-go, tools) by PID and removes links and mounts.
func (e *Env) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range e.wgGo {
		_ = p.Stop(ctx, 3*time.Second)
	}
	for _, h := range []*harness.SimHost{e.A, e.B} {
		if h != nil {
			// Leaving the swarm first keeps the engines' teardown quick; errors are moot.
			_, _ = harness.Docker(ctx, h, "swarm", "leave", "--force")
		}
	}
	return e.C.Close()
}

// setupMeshnet creates the meshnet network on both hosts and a container on each; the
// containers use meshnet's DNS and carry the benchmark's service label.
func (e *Env) setupMeshnet(ctx context.Context, pathName, network string, subnet netip.Prefix, dataplane string) *Path {
	p := &Path{Name: pathName}
	e.Networks[pathName] = network
	for _, h := range []*harness.SimHost{e.A, e.B} {
		if err := harness.CreateNetwork(ctx, h, network, subnet.String(), "-o", "dataplane="+dataplane); err != nil {
			p.Err = fmt.Errorf("docker network create -o dataplane=%s: %s", dataplane, lastLine(err))
			return p
		}
	}
	p.Client, p.Server, p.Err = e.containerPair(ctx, network, "--dns", "169.254.53.53", "--label", "meshnet.service="+meshService+"-"+dataplane)
	if p.Err != nil {
		return p
	}
	// The first packet across waits for both hosts to have programmed each other's endpoint.
	p.Err = e.waitPing(ctx, p.Client, p.Server.IP, 60*time.Second)
	return p
}

// containerPair runs NETWORK-a on host A and NETWORK-b on host B.
func (e *Env) containerPair(ctx context.Context, network string, extra ...string) (client, server Endpoint, err error) {
	var eps [2]Endpoint
	for i, h := range []*harness.SimHost{e.A, e.B} {
		name := network + "-" + string(rune('a'+i))
		if err := harness.RunContainer(ctx, h, name, network, extra...); err != nil {
			return client, server, fmt.Errorf("docker run on %s: %s", h.Name(), lastLine(err))
		}
		ep, err := containerEndpoint(ctx, h, name, network)
		if err != nil {
			return client, server, err
		}
		eps[i] = ep
	}
	return eps[0], eps[1], nil
}

func containerEndpoint(ctx context.Context, h *harness.SimHost, name, network string) (Endpoint, error) {
	ip, err := harness.ContainerIP(ctx, h, name, network)
	if err != nil {
		return Endpoint{}, err
	}
	pid, err := ContainerPID(ctx, h, name)
	if err != nil {
		return Endpoint{}, err
	}
	return Endpoint{Host: h, PID: pid, IP: ip, Container: name}, nil
}

// ContainerPID returns the PID of a container's init process (in the machine's PID namespace:
// simulated hosts have none of their own).
func ContainerPID(ctx context.Context, h harness.Host, name string) (int, error) {
	out, err := harness.Docker(ctx, h, "inspect", "-f", "{{.State.Pid}}", name)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("container %s on %s has no running process (%q)", name, h.Name(), out)
	}
	return pid, nil
}

// InNS returns the command line that runs args in ep's network namespace, from the host.
func InNS(ep Endpoint, args ...string) []string {
	return append([]string{"nsenter", "-t", strconv.Itoa(ep.PID), "-n", "--"}, args...)
}

// waitPing pings ip from ep until it answers.
func (e *Env) waitPing(ctx context.Context, ep Endpoint, ip netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := harness.Poll(ctx, func() error {
		_, err := ep.Host.Exec(ctx, InNS(ep, "busybox", "ping", "-c1", "-W1", ip.String())...)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s never answered a ping from %s within %s: %s", ip, ep.Host.Name(), timeout, lastLine(err))
	}
	return nil
}

// lastLine shortens a command error to its last line of output, for a report cell.
func lastLine(err error) string {
	var ce *harness.CommandError
	s := err.Error()
	if errors.As(err, &ce) && strings.TrimSpace(ce.Output) != "" {
		s = ce.Output
	}
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// setupVIP starts a replica of a service in vip mode on host B, on the vxlan path's network,
// and makes a path from that path's client to the service's VIP (read from meshctl on A).
func (e *Env) setupVIP(ctx context.Context, vx *Path) *Path {
	p := &Path{Name: PathMeshVIP}
	if vx == nil || vx.Err != nil {
		p.Err = fmt.Errorf("needs the %s path", PathMeshVXLAN)
		return p
	}
	network := e.Networks[PathMeshVXLAN]
	e.Networks[PathMeshVIP] = network
	const name = "bench-vip-b"
	if err := harness.RunContainer(ctx, e.B, name, network, "--label", "meshnet.service=benchvip",
		"--label", "meshnet.endpoint-mode=vip"); err != nil {
		p.Err = fmt.Errorf("docker run on %s: %s", e.B.Name(), lastLine(err))
		return p
	}
	server, err := containerEndpoint(ctx, e.B, name, network)
	if err != nil {
		p.Err = err
		return p
	}
	vip, err := e.serviceVIP(ctx, "benchvip", 1)
	if err != nil {
		p.Err = err
		return p
	}
	server.IP = vip
	p.Client, p.Server = vx.Client, server
	// The VIP's DNAT covers ICMP too: the first echo answered is the path ready.
	p.Err = e.waitPing(ctx, p.Client, p.Server.IP, 60*time.Second)
	return p
}
