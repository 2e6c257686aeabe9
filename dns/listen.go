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
	lc := net.ListenConfig{Control: setReusePort}
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

func setReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_REUSEPORT: %w", serr)
	}
	return nil
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

// readLoop reads one UDP socket and answers in place: table answers take
// microseconds, so one goroutine per socket and no goroutine per packet;
// only forwards leave the loop (handlePacket async).
func (s *Server) readLoop(c *net.UDPConn) error {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dns: read udp on %s: %w", c.LocalAddr(), err)
		}
		// The parsed message copies what it keeps, so buf is free again
		// when handlePacket returns, even if a forward is still running.
		s.handlePacket(buf[:n], &udpWriter{conn: c, remote: from}, from.Addr().Unmap(), true)
	}
}

// udpWriter is the dns.ResponseWriter of one UDP query.
type udpWriter struct {
	conn   *net.UDPConn
	remote netip.AddrPort
}

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
