package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// wgDevice is the host's WireGuard device, kernel or embedded: the rest of
// the dataplane sees only this.
type wgDevice interface {
	// configure applies a (partial) configuration.
	configure(cfg wgtypes.Config) error
	// read returns the listen port and the peers the device has.
	read() (port int, peers []wgtypes.Peer, err error)
	// close releases the device. The embedded one goes with it (its TUN
	// link vanishes); the kernel one stays until its link is deleted.
	close() error
}

// WireGuard modes.
const (
	ModeAuto      = "auto"      // kernel where the module is, else embedded
	ModeKernel    = "kernel"    // kernel module only
	ModeUserspace = "userspace" // embedded wireguard-go only
)

// kernelWG drives a kernel WireGuard device through wgctrl (generic netlink).
type kernelWG struct {
	d    *Kernel
	name string
}

// withClient runs fn with a wgctrl client whose netlink socket is in the
// dataplane's namespace.
func (k *kernelWG) withClient(fn func(c *wgctrl.Client) error) error {
	return k.d.inNetNS(func() error {
		c, err := wgctrl.New()
		if err != nil {
			return fmt.Errorf("open wgctrl: %w", err)
		}
		defer c.Close()
		return fn(c)
	})
}

func (k *kernelWG) configure(cfg wgtypes.Config) error {
	return k.withClient(func(c *wgctrl.Client) error { return c.ConfigureDevice(k.name, cfg) })
}

func (k *kernelWG) read() (port int, peers []wgtypes.Peer, err error) {
	err = k.withClient(func(c *wgctrl.Client) error {
		dev, err := c.Device(k.name)
		if err != nil {
			return err
		}
		port, peers = dev.ListenPort, dev.Peers
		return nil
	})
	return port, peers, err
}

func (k *kernelWG) close() error { return nil }

// createKernelWG adds a kernel WireGuard link (or adopts the one a previous
// run left). errNoKernelWG means the module is not there.
func (d *Kernel) createKernelWG(name string, mtu int) (*kernelWG, error) {
	if l, err := d.nl.LinkByName(name); err == nil {
		if l.Type() == "wireguard" {
			return &kernelWG{d: d, name: name}, nil
		}
		if err := d.deleteLink(name); err != nil {
			return nil, err
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = name, mtu
	if err := d.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
			return nil, fmt.Errorf("%w (ip link add type wireguard: %v)", errNoKernelWG, err)
		}
		return nil, fmt.Errorf("create WireGuard link %s: %w", name, err)
	}
	d.changed("create wireguard " + name)
	return &kernelWG{d: d, name: name}, nil
}

var errNoKernelWG = errors.New("the kernel has no WireGuard module")

// userWG is the embedded wireguard-go on a TUN device.
type userWG struct {
	d   *Kernel
	dev *device.Device
	// Offloads describes the TUN's offloads, for meshctl status.
	offloads string
}

func (u *userWG) configure(cfg wgtypes.Config) error {
	// Opening the UDP sockets (listen_port) happens on the calling
	// thread, which must be in the dataplane's namespace.
	return u.d.inNetNS(func() error { return u.dev.IpcSet(uapiSet(cfg)) })
}

func (u *userWG) read() (int, []wgtypes.Peer, error) {
	text, err := u.dev.IpcGet()
	if err != nil {
		return 0, nil, fmt.Errorf("read WireGuard device: %w", err)
	}
	return uapiGet(text)
}

func (u *userWG) close() error {
	u.dev.Close()
	return nil
}

// createUserWG starts the embedded wireguard-go on a new TUN device.
// tun.CreateTUN asks for IFF_VNET_HDR and turns on TSO (and USO where the
// kernel has it), so the device reads and writes batches of coalesced
// segments (GSO/GRO) instead of one packet per syscall: the offloads are
// what make userspace WireGuard fast, and they are checked, not assumed.
func (d *Kernel) createUserWG(name string, mtu int, tunPath string, log *slog.Logger) (*userWG, error) {
	if err := checkTUN(tunPath); err != nil {
		return nil, err
	}
	if l, err := d.nl.LinkByName(name); err == nil {
		// A kernel device of an earlier run, or a foreign one: the name is ours.
		d.log.Warn("replacing existing link with the embedded WireGuard device", "link", name, "kind", l.Type())
		if err := d.deleteLink(name); err != nil {
			return nil, err
		}
	}
	var u *userWG
	err := d.inNetNS(func() error {
		t, err := tun.CreateTUN(name, mtu)
		if err != nil {
			return tunError(tunPath, err)
		}
		logger := &device.Logger{
			Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
			Errorf:   func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) },
		}
		bind := nsBind{Bind: conn.NewDefaultBind(), inNetNS: d.inNetNS}
		u = &userWG{d: d, dev: device.NewDevice(t, bind, logger)}
		u.offloads = describeOffloads(t.BatchSize())
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.changed("create embedded WireGuard device " + name)
	return u, nil
}

// nsBind opens wireguard-go's UDP sockets inside the dataplane's namespace.
// wireguard-go reopens them from its own goroutines (when the TUN link goes
// up, say), on whatever thread runs them; a socket belongs to the namespace
// of the thread that creates it.
type nsBind struct {
	conn.Bind
	inNetNS func(func() error) error
}

func (b nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	nsErr := b.inNetNS(func() error {
		fns, actual, err = b.Bind.Open(port)
		return nil
	})
	if nsErr != nil {
		return nil, 0, nsErr
	}
	return fns, actual, err
}

// describeOffloads says whether the TUN came up with its offloads: a batch
// size above 1 means IFF_VNET_HDR with TSO; UDP GSO/GRO on the socket is
// probed the way wireguard-go's bind does.
func describeOffloads(batch int) string {
	tso := "off (no IFF_VNET_HDR: one packet per syscall)"
	if batch > 1 {
		tso = fmt.Sprintf("on (IFF_VNET_HDR, TSO/GRO, batch %d)", batch)
	}
	tx, rx := probeUDPOffload()
	return fmt.Sprintf("TUN offloads %s; UDP GSO %s, GRO %s", tso, onOff(tx), onOff(rx))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// probeUDPOffload checks UDP_SEGMENT (GSO) and UDP_GRO on a throwaway socket.
func probeUDPOffload() (tx, rx bool) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return false, false
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		tx = err == nil
		// wireguard-go turns GRO on for its own sockets; here it is enough
		// that the kernel knows the option.
		rx = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return tx, rx
}

// checkTUN says clearly why the embedded WireGuard cannot get a TUN device.
func checkTUN(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return tunError(path, err)
	}
	return f.Close()
}

// tunError turns the errors of opening or creating a TUN device into what to
// do about them.
func tunError(path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV):
		return fmt.Errorf("the WireGuard dataplane cannot start: %s does not exist, and the embedded WireGuard needs a TUN device "+
			"(load the tun module with `modprobe tun`; in a container or managed plugin, pass the device /dev/net/tun): %w", path, err)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("the WireGuard dataplane cannot start: creating a TUN device needs root (CAP_NET_ADMIN) "+
			"and access to %s; run meshnetd as root or grant it CAP_NET_ADMIN: %w", path, err)
	}
	return fmt.Errorf("the WireGuard dataplane cannot start: create TUN device: %w", err)
}
