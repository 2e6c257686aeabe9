package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// TCP connection limits: queries over TCP are the retries of truncated
// answers, so connections are short-lived.
const (
	tcpReadTimeout  = 2 * time.Second
	tcpWriteTimeout = 2 * time.Second
	tcpIdleTimeout  = 8 * time.Second
	tcpMaxQueries   = 128
	shutdownTimeout = 2 * time.Second
)

// errClosed is returned by Listen and Run on a closed server.
var errClosed = errors.New("dns: server closed")

// Addr returns the address the server is bound to (with the port chosen
// when Config.Addr had port 0); the zero AddrPort before Listen.
func (s *Server) Addr() netip.AddrPort {
	s.lis.mu.Lock()
	defer s.lis.mu.Unlock()
	return s.lis.addr
}

// Listen binds the TCP socket and Config.Listeners UDP sockets
// (SO_REUSEPORT) on Config.Addr. Run calls it when it has not been called;
// calling it first reports bind errors before anything is started.
//
// TCP is bound first and without SO_REUSEPORT, so a second server on the
// same address fails here instead of silently sharing the UDP port (the
// kernel would spread queries over both).
func (s *Server) Listen() error {
	s.lis.mu.Lock()
	defer s.lis.mu.Unlock()
	if s.cfgErr != nil {
		return s.cfgErr
	}
	if s.lis.closed {
		return errClosed
	}
	if s.lis.tcp != nil {
		return nil
	}
	ap, err := netip.ParseAddrPort(s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("dns: listen address %q: want IP:port: %w", s.cfg.Addr, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	for attempt := 0; ; attempt++ {
		tcp, udp, err := listenAll(ap, s.cfg.Listeners)
		if err == nil {
			s.lis.tcp, s.lis.udp = tcp, udp
			s.lis.addr = netip.AddrPortFrom(ap.Addr(), netip.MustParseAddrPort(tcp.Addr().String()).Port())
			s.log.Info("dns server listening", "addr", s.lis.addr.String(), "zone", s.table.Load().zone, "udp_listeners", len(udp))
			return nil
		}
		// Port 0: the port TCP got may be taken for UDP; pick another.
		if ap.Port() == 0 && errors.Is(err, syscall.EADDRINUSE) && attempt < 10 {
			continue
		}
		return explainListenError(ap, err)
	}
}

func listenAll(ap netip.AddrPort, n int) (net.Listener, []*net.UDPConn, error) {
	tcpNet, udpNet := "tcp4", "udp4"
	if ap.Addr().Is6() {
		tcpNet, udpNet = "tcp6", "udp6"
	}
	ctx := context.Background()
	tcp, err := (&net.ListenConfig{}).Listen(ctx, tcpNet, ap.String())
	if err != nil {
		return nil, nil, err
	}
	port := netip.MustParseAddrPort(tcp.Addr().String()).Port()
	bind := netip.AddrPortFrom(ap.Addr(), port).String()
	lc := net.ListenConfig{Control: udpSocketOptions}
	var udp []*net.UDPConn
	for range n {
		pc, err := lc.ListenPacket(ctx, udpNet, bind)
		if err != nil {
			tcp.Close()
			for _, c := range udp {
				c.Close()
			}
			return nil, nil, err
		}
		udp = append(udp, pc.(*net.UDPConn))
	}
	return tcp, udp, nil
}

// udpSocketOptions sets SO_REUSEPORT, and asks for each datagram's arrival
// interface (arrival.go) before the socket is bound: a datagram queued
// before the request would carry interface 0.
func udpSocketOptions(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
			serr = fmt.Errorf("set SO_REUSEPORT: %w", serr)
			return
		}
		if network == "udp6" {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
		if serr != nil {
			serr = fmt.Errorf("ask for the arrival interface (pktinfo): %w", serr)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// explainListenError says what the operator can do about a bind error.
func explainListenError(ap netip.AddrPort, err error) error {
	prefix := 32
	if ap.Addr().Is6() {
		prefix = 128
	}
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("dns: listen on %s: %s is not an address of this host; add it to lo (ip addr add %s/%d dev lo): %w",
			ap, ap.Addr(), ap.Addr(), prefix, err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("dns: listen on %s: port %d needs root or CAP_NET_BIND_SERVICE: %w", ap, ap.Port(), err)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("dns: listen on %s: another process already serves this address (ss -ltnup 'sport = :%d'): %w",
			ap, ap.Port(), err)
	}
	return fmt.Errorf("dns: listen on %s: %w", ap, err)
}

// Run serves UDP and TCP until ctx is done, then stops the listeners,
// aborts forwards in flight and waits for its goroutines. It returns nil
// after ctx is done, or the error that stopped it (bind errors included,
// see Listen). A server runs once.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.lis.mu.Lock()
	if s.lis.running || s.lis.closed {
		s.lis.mu.Unlock()
		return errors.New("dns: Run called on a server that has already run")
	}
	s.lis.running = true
	udp, tcp := s.lis.udp, s.lis.tcp
	s.lis.mu.Unlock()

	var wg sync.WaitGroup
	errc := make(chan error, len(udp)+1)
	for _, c := range udp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.readLoop(c); err != nil {
				errc <- err
			}
		}()
	}

	started, tcpDone := make(chan struct{}), make(chan struct{})
	tcpSrv := &dns.Server{
		Listener:          tcp,
		Net:               "tcp",
		Handler:           s,
		MsgAcceptFunc:     acceptHeader,
		ReadTimeout:       tcpReadTimeout,
		WriteTimeout:      tcpWriteTimeout,
		IdleTimeout:       func() time.Duration { return tcpIdleTimeout },
		MaxTCPQueries:     tcpMaxQueries,
		NotifyStartedFunc: func() { close(started) },
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(tcpDone)
		if err := tcpSrv.ActivateAndServe(); err != nil {
			errc <- fmt.Errorf("dns: serve tcp: %w", err)
		}
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		s.log.Error("dns server failed", "err", err)
	}

	s.cancel() // abort forwards first: TCP shutdown waits for its handlers
	select {
	case <-started:
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if serr := tcpSrv.ShutdownContext(sctx); serr != nil {
			s.log.Debug("dns: tcp shutdown", "err", serr)
		}
		cancel()
	case <-tcpDone:
	}
	s.Close()
	wg.Wait()
	s.forwards.Wait()
	return err
}

// Close stops the listeners and aborts forwards in flight. It is
// idempotent; after it, Listen and Run fail.
func (s *Server) Close() error {
	s.cancel()
	s.lis.mu.Lock()
	defer s.lis.mu.Unlock()
	if s.lis.closed {
		return nil
	}
	s.lis.closed = true
	var errs []error
	for _, c := range s.lis.udp {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.lis.tcp != nil {
		if err := s.lis.tcp.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// UDP batches: a listener takes up to Config.UDPBatch (default udpBatch) queries per wakeup
// (recvmmsg) and sends their answers together (sendmmsg).
const (
	udpBatch = 64
	// maxUDPQuery is the read buffer of one query. A query is one question
	// and at most an OPT and a TSIG; one larger than this arrives cut
	// (MSG_TRUNC) and gets FORMERR.
	maxUDPQuery = 4096
)

// batchConn is ipv4.PacketConn or ipv6.PacketConn (their Message is one
// type).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// readLoop reads one UDP socket and answers in place: table answers take
// microseconds, so one goroutine per socket and no goroutine per packet;
// only forwards leave the loop (handlePacket async). It reads a batch of
// queries per system call, answers each into its own buffer, and writes
// the answers with one system call.
//
// Each query's arrival interface comes along (IP_PKTINFO / IPV6_PKTINFO in
// the same system call), so that recursion can be decided by where a query
// came in, which a forged source address cannot change (see mayRecurse).
func (s *Server) readLoop(c *net.UDPConn) error {
	bc := arrivalConn(c)
	var in, out []ipv4.Message
	var ws []slotWriter
	// grow adds slots up to n. Nothing outlives a batch in a slot (a forward
	// detaches its writer first), so the slices may move.
	grow := func(n int) {
		for len(in) < n {
			in = append(in, ipv4.Message{Buffers: [][]byte{make([]byte, maxUDPQuery)}, OOB: make([]byte, pktinfoSpace)})
			ws = append(ws, slotWriter{conn: c, buf: make([]byte, 2*DefaultMaxUDPSize), bufs: make([][]byte, 1)})
		}
		out = make([]ipv4.Message, 0, n)
	}
	grow(s.cfg.UDPBatch)
	cache := newReplyCache()
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dns: read udp on %s: %w", c.LocalAddr(), err)
		}
		out = out[:0]
		for i := range n {
			m := &in[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			w := &ws[i]
			w.remote, w.reply = ua.AddrPort(), nil
			w.ifindex = arrivalIfindex(m.OOB[:m.NN])
			src := w.remote.Addr().Unmap()
			// The parsed message copies what it keeps, so the buffer is
			// free again when handlePacket returns, even if a forward is
			// still running.
			if raw := m.Buffers[0][:m.N]; m.Flags&unix.MSG_TRUNC != 0 {
				s.handleTruncated(raw, w, src)
			} else {
				s.handlePacket(raw, w, src, true, cache)
			}
			if w.reply != nil {
				w.bufs[0] = w.reply
				out = append(out, ipv4.Message{Buffers: w.bufs, Addr: ua})
			}
		}
		s.writeBatch(bc, out)
		// A full read means more were waiting: read more per call from now on.
		if n == len(in) && n < s.cfg.UDPBatchMax {
			grow(min(2*n, s.cfg.UDPBatchMax))
		}
	}
}

// writeBatch sends ms, as many per system call as the kernel takes. A
// reply the kernel refuses (say, no route to its client) is skipped; only
// a closed socket stops it (the next read ends the loop).
func (s *Server) writeBatch(bc batchConn, ms []ipv4.Message) {
	for len(ms) > 0 {
		n, err := bc.WriteBatch(ms, 0)
		n = min(max(n, 0), len(ms)) // sendmmsg's -1 on error
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if n < len(ms) {
				s.log.Debug("dns: write reply", "to", ms[n].Addr, "err", err)
				n++ // skip the one the kernel refused
			}
		}
		ms = ms[max(n, 1):]
	}
}

// slotWriter is the dns.ResponseWriter of one query of a batch: it keeps
// the reply in its own buffer until the batch is sent. A second reply to
// the same query (none is ever written) would go out at once.
type slotWriter struct {
	conn    *net.UDPConn
	remote  netip.AddrPort
	ifindex int      // the interface the query arrived on, 0 if unknown
	buf     []byte   // capacity for the reply
	reply   []byte   // the reply, nil until written
	bufs    [][]byte // one element, reused for the batch Message
}

var _ dns.ResponseWriter = (*slotWriter)(nil)

func (w *slotWriter) WriteMsg(m *dns.Msg) error {
	if w.reply != nil {
		return w.detach().WriteMsg(m)
	}
	b, err := m.PackBuffer(w.buf)
	if err != nil {
		return fmt.Errorf("pack reply: %w", err)
	}
	if cap(b) > cap(w.buf) {
		w.buf = b[:cap(b)]
	}
	w.reply = b
	return nil
}

func (w *slotWriter) Write(b []byte) (int, error) {
	if w.reply != nil {
		return w.detach().Write(b)
	}
	if len(b) > len(w.buf) {
		w.buf = make([]byte, len(b))
	}
	w.reply = w.buf[:copy(w.buf, b)]
	return len(b), nil
}

// detach returns a writer that sends at once and stays valid after the
// batch: forwards answer through it.
func (w *slotWriter) detach() dns.ResponseWriter {
	return &udpWriter{conn: w.conn, remote: w.remote, ifindex: w.ifindex}
}

func (w *slotWriter) arrivalIfindex() int { return w.ifindex }

func (w *slotWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *slotWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.remote) }
func (w *slotWriter) TsigStatus() error    { return nil }
func (w *slotWriter) TsigTimersOnly(bool)  {}
func (w *slotWriter) Hijack()              {}
func (w *slotWriter) Close() error         { return nil }

// udpWriter is the dns.ResponseWriter of one UDP query.
type udpWriter struct {
	conn    *net.UDPConn
	remote  netip.AddrPort
	ifindex int // the interface the query arrived on, 0 if unknown
}

func (w *udpWriter) arrivalIfindex() int { return w.ifindex }

var _ dns.ResponseWriter = (*udpWriter)(nil)

// packBufs holds buffers for packing UDP replies; large enough for any
// uncompressed reply up to DefaultMaxUDPSize compressed.
var packBufs = sync.Pool{New: func() any { b := make([]byte, 2*DefaultMaxUDPSize); return &b }}

func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	bp := packBufs.Get().(*[]byte)
	defer packBufs.Put(bp)
	b, err := m.PackBuffer(*bp)
	if err != nil {
		return fmt.Errorf("pack reply: %w", err)
	}
	_, err = w.Write(b)
	return err
}

func (w *udpWriter) Write(b []byte) (int, error) {
	return w.conn.WriteToUDPAddrPort(b, w.remote)
}

func (w *udpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.remote) }
func (w *udpWriter) TsigStatus() error    { return nil }
func (w *udpWriter) TsigTimersOnly(bool)  {}
func (w *udpWriter) Hijack()              {}
func (w *udpWriter) Close() error         { return nil }
