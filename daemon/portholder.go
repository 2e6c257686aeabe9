package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// portHolder keeps one bound socket per published TCP or UDP host port,
// as Docker 28 does: a program that tries the port later fails with
// "address already in use" instead of silently never seeing its traffic
// (the DNAT takes it first), and a port a program already holds fails the
// publication. The sockets drop every packet (a BPF filter): traffic goes
// to the container by DNAT before it could reach them. They live in
// meshnetd's process, so a restarted daemon binds them again from its
// endpoint records (sync); a port a program took meanwhile is logged and
// stays published. SCTP ports are checked against the records only.
type portHolder struct {
	log *slog.Logger
	mu  sync.Mutex
	// socks by published.key(); reserved are held for a call that has not
	// written its record yet, so sync leaves them alone; failed were
	// logged once.
	socks    map[string]int
	reserved map[string]bool
	failed   map[string]bool
}

func newPortHolder(log *slog.Logger) *portHolder {
	return &portHolder{log: log, socks: map[string]int{}, reserved: map[string]bool{}, failed: map[string]bool{}}
}

// hold binds p's host port and reserves it until done or sync.
func (h *portHolder) hold(p published) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.socks[p.key()]; ok {
		return fmt.Errorf("held by meshnetd already: %w", unix.EADDRINUSE)
	}
	fd, _, err := bindPort(p)
	if err != nil {
		return err
	}
	if fd >= 0 {
		h.socks[p.key()] = fd
	}
	h.reserved[p.key()] = true
	return nil
}

// holdEphemeral binds a port the kernel picks (any free one, from
// ip_local_port_range), retrying while free says no (another endpoint's
// record claims it). SCTP, which is not bound, takes the first free port
// from 49153, the start of Docker's ephemeral range.
func (h *portHolder) holdEphemeral(p published, free func(uint16) bool) (published, error) {
	if p.proto == "sctp" {
		for port := 49153; port <= 65535; port++ {
			if free(uint16(port)) {
				p.hostPort = uint16(port)
				return p, h.hold(p)
			}
		}
		return published{}, fmt.Errorf("%w: no free ephemeral sctp port", errPortTaken)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for range 16 {
		fd, port, err := bindPort(p)
		if err != nil {
			return published{}, fmt.Errorf("bind an ephemeral %s port: %w", p.proto, err)
		}
		p.hostPort = port
		if _, ok := h.socks[p.key()]; ok || !free(port) {
			unix.Close(fd)
			continue
		}
		h.socks[p.key()] = fd
		h.reserved[p.key()] = true
		return p, nil
	}
	return published{}, fmt.Errorf("%w: no free ephemeral %s port", errPortTaken, p.proto)
}

// release closes the sockets of ps (an endpoint publishing again).
func (h *portHolder) release(ps ...published) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		if fd, ok := h.socks[p.key()]; ok {
			unix.Close(fd)
			delete(h.socks, p.key())
		}
		delete(h.reserved, p.key())
	}
}

// done ends the reservation of ports whose record is written (or that
// failed: sync then closes them).
func (h *portHolder) done(ps ...published) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		delete(h.reserved, p.key())
	}
}

// sync holds exactly want (plus reserved ports): binds what is missing
// (after a restart), closes what is no longer published.
func (h *portHolder) sync(want []published) {
	h.mu.Lock()
	defer h.mu.Unlock()
	keep := map[string]bool{}
	for _, p := range want {
		keep[p.key()] = true
		if _, ok := h.socks[p.key()]; ok || p.proto == "sctp" {
			continue
		}
		fd, _, err := bindPort(p)
		if err != nil {
			if !h.failed[p.key()] {
				h.log.Warn("a published port is taken by another program on this host; its traffic still goes to the container",
					"port", p.key(), "err", err)
				h.failed[p.key()] = true
			}
			continue
		}
		delete(h.failed, p.key())
		h.socks[p.key()] = fd
	}
	for k, fd := range h.socks {
		if !keep[k] && !h.reserved[k] {
			unix.Close(fd)
			delete(h.socks, k)
		}
	}
	for k := range h.failed {
		if !keep[k] {
			delete(h.failed, k)
		}
	}
}

// close releases every socket (tests; the process exit does it otherwise).
func (h *portHolder) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, fd := range h.socks {
		unix.Close(fd)
		delete(h.socks, k)
	}
}

// bindPort binds (and for TCP, listens on) p's host port with a filter
// that drops everything; port 0 lets the kernel choose. It returns the
// socket and its port; SCTP is not bound (fd -1).
func bindPort(p published) (fd int, port uint16, err error) {
	typ := unix.SOCK_STREAM
	switch p.proto {
	case "udp":
		typ = unix.SOCK_DGRAM
	case "sctp":
		return -1, p.hostPort, nil
	}
	fd, err = unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("socket: %w", err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: 1, Filter: (*unix.SockFilter)(unsafe.Pointer(&drop[0]))}); err != nil {
		return -1, 0, fmt.Errorf("attach drop filter: %w", err)
	}
	if typ == unix.SOCK_STREAM {
		// As a server would: TIME_WAIT leftovers do not block the port.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return -1, 0, fmt.Errorf("SO_REUSEADDR: %w", err)
		}
	}
	addr := netip.IPv4Unspecified()
	if p.hostIP.IsValid() {
		addr = p.hostIP
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.As4(), Port: int(p.hostPort)}); err != nil {
		return -1, 0, err
	}
	if typ == unix.SOCK_STREAM {
		// Listening is what makes the port taken for other SO_REUSEADDR
		// sockets; the filter drops every SYN.
		if err := unix.Listen(fd, 1); err != nil {
			return -1, 0, fmt.Errorf("listen: %w", err)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return -1, 0, fmt.Errorf("getsockname: %w", err)
	}
	in4, _ := sa.(*unix.SockaddrInet4)
	if in4 == nil {
		return -1, 0, errors.New("getsockname: not IPv4")
	}
	return fd, uint16(in4.Port), nil
}
