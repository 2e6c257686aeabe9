package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsfsMagic is the file system type of a namespace file (NSFS_MAGIC): a
// sandbox key is a plain file until the engine bind-mounts the namespace
// onto it.
const nsfsMagic = 0x6e736673

// openNetNS opens path if it is a network namespace, and reports false
// (without error) while it is not one yet.
func openNetNS(path string) (*os.File, bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Type != nsfsMagic {
		return nil, false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	return f, true, nil
}

// sameNetNS reports whether f is the namespace meshnetd itself runs in (a
// container on the host's network: nothing to intercept there). It asks
// about this thread, not /proc/self: a locked thread that entered another
// namespace and cannot exit (Go keeps the main thread) would answer there.
func sameNetNS(f *os.File) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat("/proc/thread-self/ns/net", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// socketIn creates a socket inside the namespace ns. Only socket(2) needs
// to run there: a socket belongs to the namespace it was created in for
// its whole life, whatever thread binds, connects or reads it later.
//
// It runs on a fresh goroutine locked to its thread and never unlocked, so
// the thread exits with the goroutine instead of going back to Go's pool
// inside the container's namespace.
func socketIn(ns *os.File, typ int) (int, error) {
	type result struct {
		fd  int
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			c <- result{-1, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			err = fmt.Errorf("socket: %w", err)
		}
		c <- result{fd, err}
	}()
	r := <-c
	return r.fd, r.err
}

// listenIn opens a UDP socket and a TCP listener on addr (port 0: any)
// inside ns. IP_FREEBIND: the engine may not have brought the namespace's
// lo up yet when the sandbox is first seen.
func listenIn(ns *os.File, addr netip.Addr) (*net.UDPConn, *net.TCPListener, error) {
	uf, err := bindIn(ns, addr, unix.SOCK_DGRAM)
	if err != nil {
		return nil, nil, err
	}
	defer uf.Close()
	pc, err := net.FilePacketConn(uf)
	if err != nil {
		return nil, nil, err
	}
	tf, err := bindIn(ns, addr, unix.SOCK_STREAM)
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	defer tf.Close()
	ln, err := net.FileListener(tf)
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return pc.(*net.UDPConn), ln.(*net.TCPListener), nil
}

// bindIn creates a socket of typ in ns bound to addr:0 (and listening, for
// a stream socket). The net package dups the file it is turned into; the
// caller closes it.
func bindIn(ns *os.File, addr netip.Addr, typ int) (*os.File, error) {
	what := "udp"
	if typ == unix.SOCK_STREAM {
		what = "tcp"
	}
	fd, err := socketIn(ns, typ)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), what)
	if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s socket: set IP_FREEBIND: %w", what, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.As4()}); err != nil {
		f.Close()
		return nil, fmt.Errorf("bind %s %s: %w", what, addr, err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 128); err != nil {
			f.Close()
			return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
		}
	}
	return f, nil
}

// dialIn connects a socket created inside ns to to, with the firewall mark
// that lets it past the redirect (see redirect.go).
func dialIn(ns *os.File, network string, to netip.AddrPort, mark uint32) (net.Conn, error) {
	typ := unix.SOCK_DGRAM
	if network == "tcp" {
		typ = unix.SOCK_STREAM
	}
	fd, err := socketIn(ns, typ)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), network)
	defer f.Close()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
		return nil, fmt.Errorf("set SO_MARK: %w", err)
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())})
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return nil, fmt.Errorf("connect %s %s: %w", network, to, err)
	}
	// A non-blocking TCP connect finishes in the background; the net
	// package's first write waits for it.
	return net.FileConn(f)
}
