package daemonflags

import (
	"flag"
	"strings"

	"github.com/meshnet/meshnet/daemon"
	"github.com/meshnet/meshnet/dataplane"
)

// Lists are the flags given as comma-separated text, split by the caller
// once every source has been read.
type Lists struct {
	Join      string
	Upstreams string
}

// CommandOnly are the flags that say what meshnetd does rather than how
// it is set up (main acts on them): they have no variable twin and no
// plugin setting.
var CommandOnly = map[string]bool{"version": true, "cleanup": true}

// New returns meshnetd's flag set, each flag writing into cfg (or l),
// with cfg's values as defaults.
func New(cfg *daemon.Config, l *Lists) *flag.FlagSet {
	fs := flag.NewFlagSet("meshnetd", flag.ContinueOnError)
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "this node's unique name in the mesh (default: the hostname)")
	fs.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "underlay address other hosts reach this one at (default: the address of the interface holding the default route, else the first non-loopback IPv4 outside Docker's and meshnet's bridges)")
	fs.StringVar(&cfg.BindAddr, "bind-addr", "", "address the gossip port listens on (default: the advertise address; never 0.0.0.0 unless given)")
	fs.IntVar(&cfg.BindPort, "bind-port", cfg.BindPort, "gossip port, TCP and UDP")
	fs.StringVar(&l.Join, "join", "", "comma-separated seeds, host[:port]; a host name may resolve to several seeds. Retried until one answers")
	fs.StringVar(&cfg.KeyFile, "key-file", "", "file holding the base64 32-byte gossip key (make one: install -d -m 0700 /etc/meshnet; (umask 077; meshctl keygen > /etc/meshnet/key)). Or set MESHNET_KEY. The initial key only: once --state-dir holds a keyring (keyring.json, written at the first start and by meshctl keys) that is used")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "allow running without a gossip key (unencrypted, unauthenticated gossip): trusted test networks only")
	fs.StringVar(&cfg.Cluster, "cluster", cfg.Cluster, "cluster name: gossip from another cluster name is dropped")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory for state that must survive restarts (records, allocations, keys)")
	fs.StringVar(&cfg.PluginDir, "plugin-dir", cfg.PluginDir, "directory of the Docker plugin socket meshnet.sock (NetworkDriver and IpamDriver)")
	fs.StringVar(&cfg.ControlSocket, "control-socket", cfg.ControlSocket, "unix socket of the local control API used by meshctl (root only)")
	fs.StringVar(&cfg.DockerHost, "docker-host", cfg.DockerHost, "Docker engine API socket, for container names, labels and aliases")
	fs.StringVar(&cfg.Dataplane, "dataplane", cfg.Dataplane, "default dataplane of new networks: vxlan or wireguard (per network: -o dataplane=)")
	fs.StringVar(&cfg.GossipProfile, "gossip-profile", cfg.GossipProfile, "failure detection timings: lan, or wan for underlay round trips of hundreds of milliseconds (slower to declare a host dead)")
	fs.IntVar(&cfg.VXLANPort, "vxlan-port", cfg.VXLANPort, "UDP port of VXLAN tunnels")
	fs.IntVar(&cfg.WireGuardPort, "wireguard-port", cfg.WireGuardPort, "UDP port of WireGuard tunnels")
	fs.StringVar(&cfg.WireGuardMode, "wireguard-mode", cfg.WireGuardMode, "which WireGuard carries wireguard networks: auto (the kernel module where it loads, else the embedded wireguard-go), kernel (fail rather than fall back) or userspace (embedded, even where the module is)")
	fs.DurationVar(&cfg.WireGuardKeepalive, "wireguard-keepalive", cfg.WireGuardKeepalive, "WireGuard persistent keepalive towards every peer, for hosts behind NAT (e.g. 25s); 0 = off")
	fs.StringVar(&cfg.DNSAddr, "dns-addr", cfg.DNSAddr, "address of the embedded DNS server, held on the host's lo; containers use it with --dns")
	fs.StringVar(&cfg.DNSDomain, "dns-domain", cfg.DNSDomain, "DNS zone answered for services and containers")
	fs.StringVar(&l.Upstreams, "dns-upstream", "", "comma-separated resolvers (IP or IP:port) for names outside the zone, asked for this host's containers only (default: the host's /etc/resolv.conf; none: no forwarding)")
	fs.Float64Var(&cfg.DNSRateLimit, "dns-rate-limit", cfg.DNSRateLimit, "DNS queries per second one source may send (bursts of twice that); over it UDP queries are answered truncated, so clients retry over TCP (a bucket of its own; REFUSED over that too), and past twice it dropped (a flood); 0 = no limit")
	fs.BoolVar(&cfg.ContainerDNS, "container-dns", cfg.ContainerDNS, "answer each meshnet container's queries to Docker's resolver (127.0.0.11) in its own namespace first, so a bare service name, container name or alias resolves to every replica in the cluster; false: Docker's resolver alone (local replicas only), the DNS address for the rest")
	fs.BoolVar(&cfg.AllowDockerBridges, "allow-docker-bridges", false, "let containers on Docker's own bridges (docker0, br-*, docker_gwbridge) and on meshnet networks open connections to each other; by default they are kept apart as Docker keeps its bridges apart (published ports stay reachable)")
	fs.Var((*bypassFlag)(&cfg.BridgeBypass), "bridge-bypass", "when to hand a vxlan network's IPv4 between containers straight between their veths and the VXLAN device, past the host's bridge and netfilter hooks (less CPU per byte, as Swarm's overlay gets from its own namespace): auto (on while the host's firewall has no forward rules of its own, DOCKER-USER empty; the moment one appears, every container goes back to the bridge), on (always: that traffic then skips the host's FORWARD chain, DOCKER-USER included) or off. Needs --container-dns (VIPs balanced in containers); egress, published ports and everything else keep the host's rules")
	fs.DurationVar(&cfg.ReclaimAfter, "reclaim-after", cfg.ReclaimAfter, "free addresses and endpoint records no container on this host has held for this long (Docker's release calls lost while meshnetd was down); 0 = never")
	fs.BoolVar(&cfg.LeaveOnStop, "leave-on-stop", false, "leave the cluster when stopped (SIGTERM), so peers withdraw this host's containers at once; by default a stop is a restart or upgrade: peers keep this host's entries while its data path answers, and traffic flows on")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text (key=value lines) or json (one object per line)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "host:port for Prometheus metrics (/metrics) and health checks (/healthz, /readyz), e.g. 127.0.0.1:9464; unauthenticated: keep it off public addresses (default: off)")
	fs.Bool("version", false, "print meshnetd's version and exit")
	fs.Bool("cleanup", false, "remove everything meshnet made on this host (bridges, VXLAN and WireGuard devices, routes, nftables tables, iptables rules, the DNS address on lo), then exit; for uninstalling. Refused while a meshnetd answers on --control-socket or in --plugin-dir. Keeps --state-dir")
	fs.BoolVar(&cfg.ManagedPlugin, "managed-plugin", false, "running as a Docker managed plugin: also read the plugin's settings, one per flag, named as the flag in upper case with _ (VXLAN_PORT=4790; docker plugin set)")
	return fs
}

// bypassFlag is --bridge-bypass: a mode, and a switch as it was before
// (a bare --bridge-bypass is on).
type bypassFlag dataplane.BypassMode

func (f *bypassFlag) String() string {
	if f == nil {
		return ""
	}
	return string(*f)
}

func (f *bypassFlag) Set(s string) error {
	m, err := dataplane.ParseBypassMode(s)
	if err != nil {
		return err
	}
	*f = bypassFlag(m)
	return nil
}

func (f *bypassFlag) IsBoolFlag() bool { return true }

func (f *bypassFlag) Get() any { return dataplane.BypassMode(*f) }

// EnvName is the environment variable of a flag: MESHNET_ and the flag in
// upper case, - as _.
func EnvName(flag string) string { return "MESHNET_" + SettingName(flag) }

// SettingName is the managed plugin's setting of a flag (docker plugin
// set NAME=VALUE): the flag in upper case, - as _.
func SettingName(flag string) string { return strings.ToUpper(strings.ReplaceAll(flag, "-", "_")) }
