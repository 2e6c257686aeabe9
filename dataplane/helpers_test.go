package dataplane

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// requireRoot skips kernel tests when not root; CI runs as root, so they run
// there.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root (CAP_NET_ADMIN) to create network namespaces")
	}
}

// newNetNS makes a fresh network namespace without moving the test's thread:
// a throwaway goroutine locks its thread, unshares, opens a handle and exits
// still locked, so the thread dies instead of returning to Go's pool inside
// the namespace. The namespace lives until Cleanup closes the handle (and every
// socket in it is closed).
func newNetNS(t *testing.T) netns.NsHandle {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("unshare: %w", err)}
			return
		}
		ns, err := netns.Get()
		ch <- result{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("new network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	// Loopback up, as every real namespace has it.
	h := nlHandle(t, r.ns)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return r.ns
}

// inNS runs fn on a throwaway thread inside ns (see newNetNS for why the thread
// is never unlocked).
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// nlHandle is a netlink handle bound to ns, closed at Cleanup.
func nlHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// runIn runs a host tool inside ns through nsenter, passing the namespace as an
// inherited file descriptor (so nothing needs a name under /run/netns).
func runIn(ns netns.NsHandle, name string, args ...string) (string, error) {
	fd, err := unix.Dup(int(ns))
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), "netns")
	defer f.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=/proc/self/fd/3", name}, args...)...)
	cmd.ExtraFiles = []*os.File{f}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %v: %w: %s", name, args, err, out.String())
	}
	return out.String(), nil
}

func mustRunIn(t *testing.T, ns netns.NsHandle, name string, args ...string) string {
	t.Helper()
	out, err := runIn(ns, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testLogger logs through t.Log so failures show what Apply did.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

var _ io.Writer = testWriter{}

// newTestDataplane opens a VXLAN dataplane on ns, closed at Cleanup.
func newTestDataplane(t *testing.T, ns netns.NsHandle) *Kernel {
	t.Helper()
	return newTestDataplaneWith(t, ns, Options{})
}

// newTestDataplaneWith is newTestDataplane with options (NetNS is ns).
func newTestDataplaneWith(t *testing.T, ns netns.NsHandle, opts Options) *Kernel {
	t.Helper()
	opts.NetNS = ns
	d, err := New(testLogger(t), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// twoHosts makes two network namespaces joined by an underlay veth, ulA
// (198.18.0.1, host 1) and ulB (198.18.0.2, host 2), both up.
func twoHosts(t *testing.T) (h1ns, h2ns netns.NsHandle, h1, h2 *netlink.Handle) {
	t.Helper()
	h1ns, h2ns, h1, h2 = twoHostsLinked(t)
	for _, u := range []struct {
		h        *netlink.Handle
		dev, adr string
	}{{h1, "ulA", "198.18.0.1"}, {h2, "ulB", "198.18.0.2"}} {
		addUnderlayAddr(t, u.h, u.dev, u.adr)
		l, _ := u.h.LinkByName(u.dev)
		if err := u.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return h1ns, h2ns, h1, h2
}

// addUnderlay6 gives the two hosts of twoHosts IPv6 underlay addresses
// beside (or, on hosts made by twoHostsLinked, instead of) their IPv4 ones:
// fd00:99::1 on ulA, fd00:99::2 on ulB, without duplicate address detection.
func addUnderlay6(t *testing.T, h1, h2 *netlink.Handle) {
	t.Helper()
	for _, u := range []struct {
		h         *netlink.Handle
		dev, addr string
	}{{h1, "ulA", "fd00:99::1/64"}, {h2, "ulB", "fd00:99::2/64"}} {
		l, err := u.h.LinkByName(u.dev)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr(u.addr)
		a.Flags = unix.IFA_F_NODAD
		if err := u.h.AddrAdd(l, a); err != nil {
			t.Fatalf("IPv6 underlay address %s: %v", u.addr, err)
		}
		if err := u.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

// testWGPeer is d as a WireGuard peer at endpoint ep, carrying blocks.
func testWGPeer(d *Kernel, ep string, blocks ...string) WireGuardPeer {
	p := WireGuardPeer{PublicKey: d.wg.opts.PrivateKey.PublicKey().String(), Endpoint: netip.MustParseAddrPort(ep)}
	for _, b := range blocks {
		p.AllowedIPs = append(p.AllowedIPs, netip.MustParsePrefix(b))
	}
	return p
}

// twoHostsLinked is twoHosts without addresses: the underlay veth ulA-ulB
// between two fresh namespaces, down.
func twoHostsLinked(t *testing.T) (h1ns, h2ns netns.NsHandle, h1, h2 *netlink.Handle) {
	t.Helper()
	h1ns, h2ns = newNetNS(t), newNetNS(t)
	h1, h2 = nlHandle(t, h1ns), nlHandle(t, h2ns)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ulA"
	if err := h1.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "ulB", PeerNamespace: netlink.NsFd(int(h2ns))}); err != nil {
		t.Fatalf("underlay veth: %v", err)
	}
	return h1ns, h2ns, h1, h2
}

// testNet42 is vxlan network 42, 10.42.0.0/24 with gateway .1, holding locals
// and remotes.
func testNet42(locals []LocalEndpoint, remotes ...RemoteEndpoint) Network {
	return Network{VNI: 42, Subnet: netip.MustParsePrefix("10.42.0.0/24"), Gateway: netip.MustParseAddr("10.42.0.1"),
		Locals: locals, Remotes: remotes}
}

// testLocalEndpoint is a container endpoint with the veth names Apply gives
// its ID.
func testLocalEndpoint(id, mac, addr string) LocalEndpoint {
	h, c := VethNames(id)
	return LocalEndpoint{ID: id, HostIf: h, ContainerIf: c, MAC: mustMAC(mac), Addr: netip.MustParsePrefix(addr)}
}

// testRemoteEndpoint is l as another host sees it, behind vtep.
func testRemoteEndpoint(l LocalEndpoint, vtep string) RemoteEndpoint {
	return RemoteEndpoint{Addr: l.Addr.Addr(), MAC: l.MAC, VTEP: netip.MustParseAddr(vtep)}
}
