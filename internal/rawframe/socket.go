package rawframe

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is an AF_PACKET socket bound to one interface, receiving every frame
// it sees in either direction. It lives in the network namespace of the
// thread that opened it.
type Conn struct {
	fd    int
	index int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open opens a raw socket on the interface named ifname in the calling
// thread's network namespace.
func Open(ifname string) (*Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", ifname, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind packet socket to %s: %w", ifname, err)
	}
	return &Conn{fd: fd, index: ifi.Index}, nil
}

// Send writes one whole Ethernet frame.
func (c *Conn) Send(frame []byte) error {
	to := &unix.SockaddrLinklayer{Ifindex: c.index, Halen: 6}
	copy(to.Addr[:], frame[0:6])
	if err := unix.Sendto(c.fd, frame, 0, to); err != nil {
		return fmt.Errorf("send frame: %w", err)
	}
	return nil
}

// ErrTimeout is returned by Recv when nothing arrived in time.
var ErrTimeout = errors.New("no frame before the deadline")

// Recv returns the next frame, parsed, and its bytes; it waits at most
// timeout.
func (c *Conn) Recv(timeout time.Duration) (Frame, []byte, error) {
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return Frame{}, nil, err
	}
	buf := make([]byte, 65536)
	n, from, err := unix.Recvfrom(c.fd, buf, 0)
	for errors.Is(err, unix.EINTR) { // Go's runtime signals its threads
		n, from, err = unix.Recvfrom(c.fd, buf, 0)
	}
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
			return Frame{}, nil, ErrTimeout
		}
		return Frame{}, nil, fmt.Errorf("receive frame: %w", err)
	}
	f := Parse(buf[:n])
	if ll, ok := from.(*unix.SockaddrLinklayer); ok {
		f.Outgoing = ll.Pkttype == unix.PACKET_OUTGOING
	}
	return f, buf[:n], nil
}

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }
