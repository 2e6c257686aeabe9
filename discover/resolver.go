package discover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Provider looks up the addresses of a cloud's instances; it is
// github.com/hashicorp/go-discover's Provider interface, which the providers
// under go-discover/provider implement. Addrs gets the parsed query
// ("provider" included) and returns IP addresses.
type Provider interface {
	Addrs(args map[string]string, l *log.Logger) ([]string, error)
	Help() string
}

// Resolver expands join entries into seed addresses. The zero value is not
// usable: see New.
type Resolver struct {
	// Providers by name, as the query's provider= names them.
	Providers map[string]Provider
	// LookupHost resolves a host name to its addresses (net.Resolver's
	// LookupHost in production).
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// Port is the gossip port of seeds that do not name one.
	Port int
	// Log receives the providers' own log lines at debug level; nil
	// discards them.
	Log *slog.Logger
}

// New returns a Resolver with the built-in providers and the system's
// resolver (/etc/hosts, then DNS).
func New(port int, log *slog.Logger) *Resolver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Resolver{Providers: Builtin(), LookupHost: net.DefaultResolver.LookupHost, Port: port, Log: log}
}

// IsQuery reports whether a join entry is a cloud discovery query rather
// than a host.
func IsQuery(entry string) bool {
	return strings.Contains(entry, "provider=")
}

// Check tells, without any network call, whether entry is a seed this
// Resolver can expand: a host[:port] or a query naming a known provider.
// meshnetd checks its --join list with it at startup, so a typo stops it
// with a message rather than retrying forever.
func (r *Resolver) Check(entry string) error {
	if IsQuery(entry) {
		args, err := ParseQuery(entry)
		if err != nil {
			return fmt.Errorf("--join %q: %w", entry, err)
		}
		if _, ok := r.Providers[args["provider"]]; !ok {
			return fmt.Errorf("--join %q: unknown provider %q (known: %s)", entry, args["provider"], strings.Join(r.providerNames(), ", "))
		}
		return nil
	}
	host, port, err := splitHostPort(entry, r.Port)
	if err != nil {
		return fmt.Errorf("--join %q: %w", entry, err)
	}
	if host == "" || port < 1 || port > 65535 {
		return fmt.Errorf("--join %q: want host, host:port, IP or IP:port", entry)
	}
	return nil
}

// Seeds expands every entry of join into IP:port addresses, in the order of
// the entries, without duplicates. It returns what it found even when some
// entries failed, with an error that names each of those.
func (r *Resolver) Seeds(ctx context.Context, join []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	var errs []error
	for _, entry := range join {
		addrs, err := r.expand(ctx, entry)
		if err != nil {
			errs = append(errs, err)
		}
		for _, a := range addrs {
			add(a)
		}
	}
	return out, errors.Join(errs...)
}

func (r *Resolver) expand(ctx context.Context, entry string) ([]string, error) {
	if IsQuery(entry) {
		return r.query(ctx, entry)
	}
	host, port, err := splitHostPort(entry, r.Port)
	if err != nil {
		return nil, fmt.Errorf("seed %q: %w", entry, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []string{netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()}, nil
	}
	ips, err := r.LookupHost(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolving seed %q: %w", host, err)
	}
	return withPort(ips, port), nil
}

// query runs a cloud discovery query. The providers take no context, so a
// query that outlives ctx is abandoned (its goroutine ends when the
// provider's own HTTP timeouts fire) rather than holding up the join loop.
func (r *Resolver) query(ctx context.Context, entry string) ([]string, error) {
	args, err := ParseQuery(entry)
	if err != nil {
		return nil, fmt.Errorf("discovery %q: %w", entry, err)
	}
	name := args["provider"]
	p, ok := r.Providers[name]
	if !ok {
		return nil, fmt.Errorf("discovery %q: unknown provider %q", entry, name)
	}
	port := r.Port
	if s, ok := args["port"]; ok {
		// port= is meshnet's own key (the gossip port of the instances
		// found); providers ignore keys they do not know.
		if port, err = strconv.Atoi(s); err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("discovery %q: port %q is not a port", entry, s)
		}
	}
	type result struct {
		addrs []string
		err   error
	}
	done := make(chan result, 1)
	logger := log.New(&slogWriter{log: r.logger().With("provider", name)}, "", 0)
	go func() {
		addrs, err := p.Addrs(args, logger)
		done <- result{addrs, err}
	}()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("discovery with provider %s: %w", name, ctx.Err())
	case res := <-done:
		if res.err != nil {
			return nil, fmt.Errorf("discovery with provider %s: %w", name, res.err)
		}
		var ips []string
		for _, a := range res.addrs {
			// Providers return bare IPs; tolerate host:port too.
			if h, p, err := net.SplitHostPort(a); err == nil {
				if n, err := strconv.Atoi(p); err == nil {
					ips = append(ips, net.JoinHostPort(h, strconv.Itoa(n)))
					continue
				}
			}
			ips = append(ips, withPort([]string{a}, port)...)
		}
		return ips, nil
	}
}

func (r *Resolver) logger() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func (r *Resolver) providerNames() []string {
	var names []string
	for n := range r.Providers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// splitHostPort splits "host", "host:port", "IP", "IP:port" and "[v6]:port".
func splitHostPort(s string, defPort int) (string, int, error) {
	if ip, err := netip.ParseAddr(s); err == nil { // a bare IPv6 address has colons
		return ip.String(), defPort, nil
	}
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(s, ":") {
			return "", 0, err
		}
		return s, defPort, nil
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", p)
	}
	return host, port, nil
}

func withPort(ips []string, port int) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
		}
	}
	return out
}

// slogWriter turns a provider's log.Logger lines ("[DEBUG] discover-aws:
// ...") into debug records: what a provider says is detail, its errors come
// back from Addrs.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = (*slogWriter)(nil)
