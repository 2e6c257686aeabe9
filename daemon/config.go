package daemon

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
)

// Config is everything meshnetd is told. Flags and MESHNET_* environment
// variables map onto it one to one (cmd/meshnetd); DefaultConfig holds every
// default in one place.
type Config struct {
	NodeName      string
	AdvertiseAddr string // empty: detected (see DetectAdvertiseAddr)
	BindAddr      string // empty: the advertise address, never 0.0.0.0 by default
	BindPort      int
	// GossipProfile tunes failure detection to the underlay: "lan"
	// (memberlist's LAN timings: a probe a second, answered within
	// 500 ms) or "wan" (its WAN timings: a probe every 5 s, 3 s to answer,
	// for round trips of hundreds of milliseconds).
	GossipProfile string
	Join          []string
	KeyFile       string
	Key           string // base64, from MESHNET_KEY; the key file wins if both are set
	Insecure      bool
	Cluster       string // memberlist label
	StateDir      string
	PluginDir     string
	ControlSocket string
	DockerHost    string
	Dataplane     string
	VXLANPort     int
	WireGuardPort int
	// WireGuardKeepalive makes every WireGuard peer send a keepalive this
	// often, so NAT mappings stay open for hosts behind NAT; 0 = off.
	WireGuardKeepalive time.Duration
	// WireGuardMode is which WireGuard runs the wireguard networks:
	// dataplane.ModeAuto (the kernel module where it loads, else the
	// embedded wireguard-go), ModeKernel or ModeUserspace.
	WireGuardMode string
	DNSAddr       string
	DNSDomain     string
	// DNSUpstreams are the resolvers names outside the zone are forwarded
	// to ("IP" or "IP:port"); nil: the host's /etc/resolv.conf; ["none"]:
	// no forwarding.
	DNSUpstreams []string
	// DNSRateLimit is the queries per second one source may send the DNS
	// server (bursts of twice that); 0 turns the limit off.
	DNSRateLimit float64
	// ContainerDNS answers each container's queries to Docker's resolver
	// (127.0.0.11) inside its own namespace first (package sandbox), so
	// bare names resolve cluster-wide with no engine setting.
	ContainerDNS bool
	// AllowDockerBridges lets containers on Docker's own bridges and on
	// meshnet networks open connections to each other (dataplane.State).
	AllowDockerBridges bool
	// BridgeBypass says when the dataplane bypasses the bridge
	// (dataplane.Options.BridgeBypass): auto, on or off. Auto without
	// ContainerDNS is off (BridgeBypassMode).
	BridgeBypass dataplane.BypassMode
	LogLevel     string
	// LogFormat is "text" (slog's key=value lines) or "json" (one object
	// per line, for log collectors).
	LogFormat string
	// MetricsAddr is host:port of the HTTP listener for Prometheus
	// (/metrics) and health checks (/healthz, /readyz); "" = off. Give a
	// loopback or underlay address: the endpoints have no authentication.
	MetricsAddr string
	// ManagedPlugin: meshnetd runs as a Docker managed plugin (see
	// internal/pluginbundle), with the plugin's settings and sandbox.
	ManagedPlugin bool
	// ResyncInterval re-applies the whole desired state to the kernel even
	// when nothing changed, repairing drift and missed events.
	ResyncInterval time.Duration
	// LeaveOnStop makes a stopping meshnetd (SIGTERM) leave the cluster
	// gracefully: peers withdraw its entries at once. Off by default, so a
	// restart or upgrade loses no packet: peers keep the entries while the
	// node's data path answers (daemon/datapath.go).
	LeaveOnStop bool
	// ReclaimAfter frees addresses and endpoint records no container on
	// this host has held for this long (daemon/sweep.go); 0 never does.
	ReclaimAfter time.Duration
}

// Gossip profiles (Config.GossipProfile).
const (
	GossipLAN = "lan"
	GossipWAN = "wan"
)

// DefaultConfig returns the defaults of DESIGN.md's command-line contract.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:       host,
		BindPort:       7946, // memberlist's usual port
		GossipProfile:  GossipLAN,
		Cluster:        "meshnet",
		StateDir:       "/var/lib/meshnet",
		PluginDir:      "/run/docker/plugins", // where the engine looks for legacy plugin sockets
		ControlSocket:  "/run/meshnet/meshnet.sock",
		DockerHost:     "unix:///var/run/docker.sock",
		Dataplane:      "vxlan",
		VXLANPort:      4789, // IANA's VXLAN port
		WireGuardPort:  51820,
		WireGuardMode:  dataplane.ModeAuto,
		DNSAddr:        "169.254.53.53", // link-local: never routed off the host
		DNSDomain:      "meshnet",
		DNSRateLimit:   dns.DefaultConfig().RateLimit.QPS,
		ContainerDNS:   true,
		BridgeBypass:   dataplane.BypassAuto,
		LogLevel:       "info",
		LogFormat:      "text",
		ResyncInterval: 30 * time.Second,
		ReclaimAfter:   2 * time.Minute,
	}
}

// BridgeBypassMode is the bypass the dataplane runs: auto is off without
// ContainerDNS (a VIP is then balanced on the host, which must see the
// replica's reply), where on is refused (Validate).
func (c *Config) BridgeBypassMode() dataplane.BypassMode {
	if c.BridgeBypass == dataplane.BypassAuto && !c.ContainerDNS {
		return dataplane.BypassOff
	}
	return c.BridgeBypass
}

// Validate checks what can be checked before anything starts, with errors
// that say what to fix.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is empty and the hostname is unknown: set --node-name"))
	}
	if c.AdvertiseAddr != "" {
		if _, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("--advertise-addr %q is not an IP address", c.AdvertiseAddr))
		}
	}
	if c.GossipProfile != GossipLAN && c.GossipProfile != GossipWAN {
		errs = append(errs, fmt.Errorf("--gossip-profile %q: choose lan (hosts on one site) or wan (round trips of hundreds of milliseconds)", c.GossipProfile))
	}
	for name, p := range map[string]int{"--bind-port": c.BindPort, "--vxlan-port": c.VXLANPort, "--wireguard-port": c.WireGuardPort} {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s %d is not a port (1-65535)", name, p))
		}
	}
	switch c.Dataplane {
	case "vxlan", "wireguard":
	default:
		errs = append(errs, fmt.Errorf("--dataplane %q: choose vxlan or wireguard", c.Dataplane))
	}
	if c.WireGuardKeepalive < 0 || c.WireGuardKeepalive > 65535*time.Second {
		errs = append(errs, fmt.Errorf("--wireguard-keepalive %v: give 0 (off) or a duration up to 18h12m15s, e.g. 25s behind NAT", c.WireGuardKeepalive))
	}
	switch c.WireGuardMode {
	case dataplane.ModeAuto, dataplane.ModeKernel, dataplane.ModeUserspace:
	default:
		errs = append(errs, fmt.Errorf("--wireguard-mode %q: choose auto (the kernel module where it loads, else embedded), kernel or userspace (embedded wireguard-go)", c.WireGuardMode))
	}
	if a, err := netip.ParseAddr(c.DNSAddr); err != nil || !a.Is4() {
		errs = append(errs, fmt.Errorf("--dns-addr %q is not an IPv4 address", c.DNSAddr))
	}
	if c.DNSDomain == "" || strings.Contains(c.DNSDomain, " ") {
		errs = append(errs, fmt.Errorf("--dns-domain %q is not a domain name", c.DNSDomain))
	}
	if c.ReclaimAfter != 0 && c.ReclaimAfter < 10*time.Second {
		errs = append(errs, fmt.Errorf("--reclaim-after %v: give 0 (never) or at least 10s: a shorter wait could free an address Docker is about to use", c.ReclaimAfter))
	}
	switch c.BridgeBypass {
	case dataplane.BypassAuto, dataplane.BypassOff:
	case dataplane.BypassOn:
		if !c.ContainerDNS {
			errs = append(errs, errors.New("--bridge-bypass=on needs --container-dns: a VIP balanced on the host needs the host to see the replica's reply, which the bypass hands past it (give --bridge-bypass=off or drop --container-dns=false)"))
		}
	default:
		if _, err := dataplane.ParseBypassMode(string(c.BridgeBypass)); err != nil {
			errs = append(errs, fmt.Errorf("--bridge-bypass %w", err))
		} else {
			// true, false: the flag's spellings, not the Config's.
			errs = append(errs, fmt.Errorf("--bridge-bypass %q: choose auto, on or off", c.BridgeBypass))
		}
	}
	if c.DNSRateLimit < 0 || c.DNSRateLimit > 1e7 {
		errs = append(errs, fmt.Errorf("--dns-rate-limit %v: give queries per second per source, or 0 for no limit", c.DNSRateLimit))
	}
	if err := checkUpstreams(c.DNSUpstreams); err != nil {
		errs = append(errs, err)
	}
	if err := c.checkJoin(); err != nil {
		errs = append(errs, err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q: choose debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--log-format %q: choose text or json", c.LogFormat))
	}
	if c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("--metrics-addr %q: give host:port, e.g. 127.0.0.1:9464 (or :9464 for every address)", c.MetricsAddr))
		}
	}
	if !strings.HasPrefix(c.DockerHost, "unix://") {
		errs = append(errs, fmt.Errorf("--docker-host %q: only unix:// sockets are supported", c.DockerHost))
	}
	return errors.Join(errs...)
}

// GossipKey returns the 32-byte gossip key from the key file or MESHNET_KEY,
// nil with --insecure, or an error saying how to make one.
func (c *Config) GossipKey() ([]byte, error) {
	raw, source := c.Key, "MESHNET_KEY"
	if c.KeyFile != "" {
		b, err := os.ReadFile(c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("read key file: %w (make one with: (umask 077; meshctl keygen > %s), in a folder of mode 0700)", err, c.KeyFile)
		}
		raw, source = string(b), "key file "+c.KeyFile
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		if c.Insecure {
			return nil, nil
		}
		return nil, errors.New("no gossip key: make one with `install -d -m 0700 /etc/meshnet; (umask 077; meshctl keygen > /etc/meshnet/key)` and pass --key-file /etc/meshnet/key (or MESHNET_KEY), the same on every host; or run with --insecure on a trusted test network")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("%s is not base64: %v (make a key with `meshctl keygen`)", source, err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("%s holds %d bytes; a gossip key is 32 bytes (make one with `meshctl keygen`)", source, len(key))
	}
	return key, nil
}

// checkUpstreams accepts "none" alone, or resolvers written IP or IP:port.
func checkUpstreams(ups []string) error {
	if len(ups) == 1 && ups[0] == "none" {
		return nil
	}
	for _, u := range ups {
		if _, err := netip.ParseAddr(u); err == nil {
			continue
		}
		if _, err := netip.ParseAddrPort(u); err == nil {
			continue
		}
		return fmt.Errorf("--dns-upstream %q: give resolvers as IP or IP:port, comma-separated, or none to disable forwarding", u)
	}
	return nil
}

// upstreams turns --dns-upstream into dns.Config.Upstreams: nil (read the
// host's resolv.conf), empty (no forwarding) or IP:port entries.
func (c *Config) upstreams() []string {
	if len(c.DNSUpstreams) == 0 {
		return nil
	}
	if len(c.DNSUpstreams) == 1 && c.DNSUpstreams[0] == "none" {
		return []string{}
	}
	out := make([]string, 0, len(c.DNSUpstreams))
	for _, u := range c.DNSUpstreams {
		if a, err := netip.ParseAddr(u); err == nil {
			u = netip.AddrPortFrom(a, 53).String()
		}
		out = append(out, u)
	}
	return out
}
