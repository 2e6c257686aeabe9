package dns

import (
	"errors"
	"net"
	"net/netip"
)

// UseConns makes the server serve these sockets instead of binding
// Config.Addr: a container's server gets sockets opened inside the
// container's network namespace, which no address of the daemon's own
// namespace can reach. Call it before Run; the server closes them.
func (s *Server) UseConns(udp *net.UDPConn, tcp net.Listener) error {
	s.lis.mu.Lock()
	defer s.lis.mu.Unlock()
	if s.lis.closed {
		return errClosed
	}
	if s.lis.tcp != nil {
		return errors.New("dns: UseConns on a server that already has sockets")
	}
	s.lis.udp, s.lis.tcp = []*net.UDPConn{udp}, tcp
	if ua, ok := udp.LocalAddr().(*net.UDPAddr); ok {
		s.lis.addr = netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port())
	}
	return nil
}
