package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/miekg/dns"
)

// Defaults; DefaultConfig explains each.
const (
	DefaultDomain         = "meshnet"
	DefaultAddr           = "169.254.53.53:53"
	DefaultTTL            = 5 * time.Second
	DefaultForwardTimeout = time.Second
	DefaultMaxUDPSize     = 4096
	DefaultResolvConf     = "/etc/resolv.conf"
)

// Config configures a Server. Zero fields take the defaults NewServer
// documents, except RateLimit, whose zero value means "no limit".
type Config struct {
	// Domain is the zone served authoritatively ("meshnet" → "meshnet.").
	Domain string
	// Addr is the IP:port to listen on, UDP and TCP. Port 0 picks a free
	// port (tests); Server.Addr reports the bound one.
	Addr string
	// TTL of every answer and of negative answers (SOA minimum). Short,
	// because replicas come and go and a stale address is a failed call.
	TTL time.Duration
	// Upstreams are the resolvers ("IP" or "IP:port") names outside the
	// zone are forwarded to, tried in turn. nil reads ResolvConf (see
	// UpstreamsFromResolvConf); an empty non-nil slice disables forwarding
	// (such queries get SERVFAIL).
	Upstreams []string
	// Forward, when set, answers the names outside the zone instead of
	// Upstreams: a container's server hands them to Docker's resolver in
	// the container's namespace. It must honour ctx and answer the
	// question asked.
	Forward func(ctx context.Context, r *dns.Msg, tcp bool) (*dns.Msg, error)
	// ResolvConf is read when Upstreams is nil; default /etc/resolv.conf.
	ResolvConf string
	// ForwardTimeout is how long one upstream gets before the next is
	// tried. Short: a stub resolver gives up after about 5 s in total.
	ForwardTimeout time.Duration
	// AllowRecursion says whether a source may have names outside the
	// zone forwarded for it. The daemon allows the subnets of this host's
	// container bridges, so the server is never an open resolver on the
	// underlay. nil allows loopback sources only.
	AllowRecursion func(src netip.Addr) bool
	// RecursionInterface, when set, also judges a UDP query by the index
	// of the interface it arrived on: a forwarded UDP query must come in
	// on an interface it accepts. A UDP source address can be forged from
	// anywhere; the arrival interface cannot. (TCP sources are proven by
	// the handshake: AllowRecursion alone judges them.) The daemon accepts
	// this host's container bridges. nil: sources alone decide.
	RecursionInterface func(ifindex int) bool
	// RateLimit limits queries per source address.
	RateLimit RateLimit
	// Listeners is the number of UDP sockets bound with SO_REUSEPORT, each
	// read by one goroutine, so the kernel spreads queries over cores.
	// Default GOMAXPROCS.
	Listeners int
	// UDPBatch is how many queries a UDP listener reads per system call
	// (default 64). Each slot holds a 4 KiB query and an 8 KiB reply
	// buffer: a container's own server, which serves one client, starts
	// with a few.
	UDPBatch int
	// UDPBatchMax lets the batch grow, doubling each time a read fills it,
	// up to this many slots (default, and at least, UDPBatch). A
	// container's server starts small and takes more only while its client
	// keeps it busy. One dnsperf client in a container, 5 rounds against
	// Docker's resolver: 4 slots fixed, 1.98× its queries per second; 64
	// fixed, 2.17×; 4 growing to 64, 2.13× (docs/benchmarks.md).
	UDPBatchMax int
	// MaxUDPSize caps the UDP payload size a client may ask for with EDNS0
	// (at least 512). Default 4096, the largest EDNS size in common use;
	// 1232 avoids IP fragmentation everywhere (DNS flag day 2020).
	MaxUDPSize int
	// Counts, when set, is where the server counts its replies, drops and
	// forwards; servers given the same Counts add into it (see Counts).
	// nil: a Counts of the server's own.
	Counts *Counts
}

// RateLimit is a token bucket per source address. Zero QPS: no limit.
type RateLimit struct {
	QPS   float64 // sustained queries per second per source
	Burst int     // bucket size; default 2×QPS
	// MaxSources bounds how many sources are tracked (memory stays bounded
	// under a flood of spoofed sources: the oldest are forgotten, and a
	// forgotten source starts again with a full bucket). Default 65536.
	MaxSources int
}

// DefaultConfig returns the configuration meshnetd starts from:
//
//   - Domain "meshnet", Addr 169.254.53.53:53 (link-local, held on lo);
//   - TTL 5 s: short enough that a moved replica is followed quickly;
//   - Upstreams from /etc/resolv.conf, 1 s per upstream before the next;
//   - recursion for loopback sources only until the daemon says which
//     networks are meshnet's;
//   - 10000 queries/s per source with bursts of 20000, chosen from
//     bench -parts dnsflood (docs/benchmarks.md, "The DNS rate limit"): a
//     client at 5000 q/s is never limited, and beside a source flooding
//     700k q/s it loses nothing. Over the limit UDP queries are answered
//     truncated (the client goes on over TCP, with a bucket of its own), up
//     to the rate again; past twice the rate they are dropped, a flood;
//   - one UDP listener per CPU; UDP answers up to 4096 bytes.
func DefaultConfig() Config {
	return Config{
		Domain:         DefaultDomain,
		Addr:           DefaultAddr,
		TTL:            DefaultTTL,
		ResolvConf:     DefaultResolvConf,
		ForwardTimeout: DefaultForwardTimeout,
		RateLimit:      RateLimit{QPS: 10000, Burst: 20000, MaxSources: 1 << 16},
		Listeners:      runtime.GOMAXPROCS(0),
		MaxUDPSize:     DefaultMaxUDPSize,
		UDPBatch:       udpBatch,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Domain == "" {
		c.Domain = d.Domain
	}
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.TTL <= 0 {
		c.TTL = d.TTL
	}
	if c.ResolvConf == "" {
		c.ResolvConf = d.ResolvConf
	}
	if c.ForwardTimeout <= 0 {
		c.ForwardTimeout = d.ForwardTimeout
	}
	if c.Listeners <= 0 {
		c.Listeners = d.Listeners
	}
	if c.MaxUDPSize <= 0 {
		c.MaxUDPSize = d.MaxUDPSize
	}
	if c.UDPBatch <= 0 {
		c.UDPBatch = d.UDPBatch
	}
	c.UDPBatchMax = max(c.UDPBatchMax, c.UDPBatch)
	c.MaxUDPSize = min(max(c.MaxUDPSize, dns.MinMsgSize), dns.MaxMsgSize)
	if c.AllowRecursion == nil {
		c.AllowRecursion = netip.Addr.IsLoopback
	}
	return c
}

// Resolvers that must never be upstreams:
//   - dockerResolver is Docker's embedded resolver; it forwards what it does
//     not know to the engine's "dns" servers, which (DESIGN: daemon.json
//     "dns": ["169.254.53.53"]) is this server: a loop.
//   - resolvedStub is systemd-resolved's stub; it is replaced by the
//     upstreams resolved itself uses (as Docker does), so that a host whose
//     resolved lists this server does not loop through it either.
var (
	dockerResolver = netip.MustParseAddr("127.0.0.11")
	resolvedStub   = netip.MustParseAddr("127.0.0.53")
)

// resolvedUpstreams is where systemd-resolved writes its real upstreams.
var resolvedUpstreams = "/run/systemd/resolve/resolv.conf"

// UpstreamsFromResolvConf returns the nameservers of a resolv.conf file as
// "IP:port", leaving out those that would send queries back to the server
// listening on self: self itself; any local address on self's port when
// self is a wildcard address; Docker's embedded resolver 127.0.0.11 (it
// forwards to the engine's DNS servers, typically this one). A
// systemd-resolved stub (127.0.0.53) is replaced by resolved's own
// upstreams when /run/systemd/resolve/resolv.conf exists.
func UpstreamsFromResolvConf(path string, self netip.AddrPort) ([]string, error) {
	servers, err := readResolvConf(path)
	if err != nil {
		return nil, err
	}
	var out []string
	seen := make(map[netip.AddrPort]bool)
	add := func(list []netip.AddrPort) {
		for _, ap := range list {
			if seen[ap] || loopsBack(ap, self) {
				continue
			}
			seen[ap] = true
			out = append(out, ap.String())
		}
	}
	for _, ap := range servers {
		if ap.Addr() == resolvedStub {
			if real, err := readResolvConf(resolvedUpstreams); err == nil && len(real) > 0 {
				add(real)
				continue
			}
		}
		add([]netip.AddrPort{ap})
	}
	return out, nil
}

func loopsBack(up, self netip.AddrPort) bool {
	a := up.Addr()
	switch {
	case up == self:
		return true
	case a == dockerResolver:
		return true
	case self.Addr().IsUnspecified() && up.Port() == self.Port() && (a.IsLoopback() || a.IsUnspecified()):
		return true
	}
	return false
}

func readResolvConf(path string) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read upstream resolvers: %w", err)
	}
	defer f.Close()
	cc, err := dns.ClientConfigFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("parse upstream resolvers from %s: %w", path, err)
	}
	var out []netip.AddrPort
	for _, s := range cc.Servers {
		ap, err := parseUpstream(net.JoinHostPort(s, cc.Port))
		if err == nil {
			out = append(out, ap)
		}
	}
	return out, nil
}

// parseUpstream accepts "IP", "IP:port" and "[IPv6]:port". Host names are
// refused: resolving them would need the resolver being configured.
func parseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	return netip.AddrPort{}, errors.New("want IP or IP:port")
}
