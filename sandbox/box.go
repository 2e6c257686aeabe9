package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	mdns "github.com/miekg/dns"
)

// box is meshnet's DNS in one container's namespace: two sockets on
// 127.0.0.11, a dns.Server scoped to the container's meshnet networks, and
// the redirect that sends the container's queries to it.
type box struct {
	m    *Manager
	key  string // the engine's sandbox key (a namespace file path)
	born time.Time

	cancel context.CancelFunc
	done   chan struct{}
	// after is the end of the container's previous box, if it was still
	// closing: its teardown would otherwise remove what this box writes.
	after <-chan struct{}

	// mu guards what Attach, Sync and the lease renewal change while the
	// box runs.
	mu  sync.Mutex
	pid int                     // the container's process, once the watcher has said (fallback path)
	eps map[string]netip.Prefix // endpoint ID → its network's subnet
	srv *dns.Server             // nil until the namespace is up
	rd  *redirect
	err error // why the box does not serve, for status

	// vipConn writes the container's VIP table (set while the box runs);
	// vips is what it last wrote, vipErr why the last write failed.
	vipConn    *nftables.Conn
	vips       []dataplane.VIP
	vipWritten bool
	vipErr     error
	// leaving: the box closes because the container left its last meshnet
	// network (or is gone), not because meshnetd stops: its VIPs go too.
	leaving bool
}

// syncVIPsLocked writes the VIPs of the box's networks into the
// container's namespace, when they differ from what it wrote last.
func (b *box) syncVIPsLocked() {
	if b.vipConn == nil {
		return
	}
	want := vipsOf(b.m.vips.Load(), b.eps)
	if b.vipWritten && dataplane.VIPsEqual(want, b.vips) {
		return
	}
	was := b.vipReadyLocked()
	defer func() {
		if b.vipReadyLocked() != was {
			b.m.vipTableChanged()
		}
	}()
	err := dataplane.WriteClientVIPs(b.vipConn, want)
	if err != nil {
		if b.vipErr == nil {
			b.m.log.Warn("container VIPs not written; the host's table balances its connections", "sandbox", b.key, "err", err)
		}
		b.vipErr = err
		return
	}
	b.vips, b.vipWritten, b.vipErr = want, true, nil
}

// vipReadyLocked reports whether the container balances its service VIPs
// in its own namespace: the box runs and wrote the container's VIP table
// as it is now.
func (b *box) vipReadyLocked() bool { return b.vipConn != nil && b.vipWritten && b.vipErr == nil }

// vipsOf picks the VIPs on the box's networks.
func vipsOf(all *[]dataplane.VIP, eps map[string]netip.Prefix) []dataplane.VIP {
	if all == nil {
		return nil
	}
	var out []dataplane.VIP
	for _, v := range *all {
		for _, subnet := range eps {
			if subnet.Contains(v.Addr) {
				out = append(out, v)
				break
			}
		}
	}
	return out
}

// scopeLocked is the box's networks as a DNS scope.
func (b *box) scopeLocked() *dns.Scope {
	var subnets []netip.Prefix
	for _, p := range b.eps {
		subnets = append(subnets, p)
	}
	return dns.NewScope(subnets)
}

// run waits for the namespace, serves in it until ctx is done, then takes
// the redirect away so that the container's queries go to Docker's
// resolver again.
func (b *box) run(ctx context.Context) {
	defer close(b.done)
	if b.after != nil {
		select {
		case <-b.after:
		case <-ctx.Done():
			return
		}
	}
	ns, err := b.waitNetNS(ctx)
	if err != nil {
		b.fail(err)
		return
	}
	if ns == nil {
		return // ctx done
	}
	defer ns.Close()
	if sameNetNS(ns) {
		b.fail(errors.New("the container shares the host's network namespace"))
		return
	}
	udp, tcp, err := listenIn(ns, dockerResolver)
	if err != nil {
		b.fail(fmt.Errorf("open DNS sockets in the container's namespace: %w", err))
		return
	}
	m := b.m
	srv := dns.NewServer(dns.Config{
		Domain: m.cfg.Domain,
		TTL:    m.cfg.TTL,
		Forward: func(ctx context.Context, r *mdns.Msg, tcp bool) (*mdns.Msg, error) {
			return b.forward(ctx, ns, r, tcp)
		},
		AllowRecursion: func(netip.Addr) bool { return true }, // only the container reaches these sockets
		UDPBatch:       4,
		UDPBatchMax:    64,
		Counts:         m.cfg.Counts,
	}, m.log)
	if err := srv.UseConns(udp, tcp); err != nil {
		udp.Close()
		tcp.Close()
		b.fail(err)
		return
	}
	srv.SetTable(m.table.Load())
	rd, err := newRedirect(ns, m.cfg.Lease)
	if err != nil {
		srv.Close()
		b.fail(err)
		return
	}
	defer rd.close()
	b.mu.Lock()
	srv.SetScope(b.scopeLocked())
	b.srv, b.rd = srv, rd
	b.mu.Unlock()
	// The table may have changed between SetTable and publishing srv.
	srv.SetTable(m.table.Load())

	udpPort := uint16(udp.LocalAddr().(*net.UDPAddr).Port)
	tcpPort := uint16(tcp.Addr().(*net.TCPAddr).Port)
	if err := rd.install(udpPort, tcpPort, m.cfg.Mark); err != nil {
		srv.Close()
		b.fail(err)
		return
	}
	b.fail(nil)
	m.log.Debug("container DNS serving", "sandbox", b.key, "udp", udpPort, "tcp", tcpPort)
	if vc, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())), nftables.AsLasting()); err != nil {
		m.log.Warn("container VIPs: nftables in the container's namespace", "sandbox", b.key, "err", err)
	} else {
		defer b.stopVIPs(vc)
		b.mu.Lock()
		b.vipConn = vc
		b.syncVIPsLocked()
		b.mu.Unlock()
	}
	if err := srv.Run(ctx); err != nil {
		m.log.Warn("container DNS stopped", "sandbox", b.key, "err", err)
	}
	if err := rd.remove(); err != nil {
		m.log.Debug("remove the DNS redirect", "sandbox", b.key, "err", err)
	}
}

// stopVIPs ends the box's VIP writes. The table stays when meshnetd stops
// (a container keeps reaching its services while the daemon is away, as
// through the host's table), and goes when the container left its last
// meshnet network.
func (b *box) stopVIPs(vc *nftables.Conn) {
	b.mu.Lock()
	leaving, was := b.leaving, b.vipReadyLocked()
	b.vipConn = nil
	b.mu.Unlock()
	if was {
		b.m.vipTableChanged()
	}
	if leaving {
		if err := dataplane.WriteClientVIPs(vc, nil); err != nil {
			b.m.log.Debug("container VIPs: remove the table", "sandbox", b.key, "err", err)
		}
	}
	_ = vc.CloseLasting()
}

func (b *box) fail(err error) {
	b.mu.Lock()
	b.err = err
	b.mu.Unlock()
	if err != nil {
		b.m.log.Warn("container DNS not set up; it uses Docker's resolver alone", "sandbox", b.key, "err", err)
	}
}

// waitNetNS polls for the container's namespace: the engine names the
// sandbox key in Join, and on some engines (20.10) mounts the namespace
// there only when the container's process is created, moments later. Meanwhile the
// watcher may give the container's pid. It returns nil, nil when ctx ends.
func (b *box) waitNetNS(ctx context.Context) (*os.File, error) {
	start := time.Now()
	deadline := start.Add(b.m.cfg.WaitForNetNS)
	for {
		f, ok, err := openNetNS(b.key)
		if !ok {
			b.mu.Lock()
			pid := b.pid
			b.mu.Unlock()
			if pid > 0 {
				f, ok, err = openNetNS("/proc/" + strconv.Itoa(pid) + "/ns/net")
			}
		}
		if ok || err != nil {
			return f, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sandbox %s did not become a network namespace within %v", b.key, b.m.cfg.WaitForNetNS)
		}
		// The engine mounts the namespace moments before the container's
		// process runs: look often at first, then rarely (a key the
		// managed plugin cannot see waits for the watcher's pid).
		wait := time.Millisecond
		if time.Since(start) > 2*time.Second {
			wait = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(wait):
		}
	}
}

// forwardTimeout bounds one query handed to Docker's resolver, which
// itself tries the engine's upstreams in turn.
const forwardTimeout = 4 * time.Second

// forward hands a query meshnet does not answer to Docker's resolver in
// the container's namespace: names of the container's other networks, and
// the world's, which Docker forwards as the engine is configured.
func (b *box) forward(ctx context.Context, ns *os.File, r *mdns.Msg, tcp bool) (*mdns.Msg, error) {
	network := "udp"
	if tcp {
		network = "tcp"
	}
	conn, err := dialIn(ns, network, netip.AddrPortFrom(dockerResolver, 53), b.m.cfg.Mark)
	if err != nil {
		return nil, fmt.Errorf("reach Docker's resolver: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c := &mdns.Conn{Conn: conn, UDPSize: mdns.MaxMsgSize}
	q := r.Copy()
	q.Id = mdns.Id()
	if err := c.WriteMsg(q); err != nil {
		return nil, fmt.Errorf("ask Docker's resolver: %w", err)
	}
	for {
		resp, err := c.ReadMsg()
		if err != nil {
			return nil, fmt.Errorf("ask Docker's resolver: %w", err)
		}
		if resp.Id == q.Id {
			return resp, nil
		}
	}
}
