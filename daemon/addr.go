package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// DetectAdvertiseAddr picks the underlay address: the first IPv4 address of
// the interface holding the default route, else the first non-loopback IPv4
// on an interface that is not Docker's or meshnet's own; on a host without
// IPv4 (an IPv6-only cloud network), the same with global IPv6 addresses
// and the IPv6 default route.
func DetectAdvertiseAddr() (netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list interfaces: %w", err)
	}
	for _, fam := range []struct {
		defaultDev string
		first      func(net.Interface) (netip.Addr, bool)
	}{
		{defaultRouteInterface("/proc/net/route"), firstIPv4},
		{defaultRouteInterface6("/proc/net/ipv6_route"), firstGlobalIPv6},
	} {
		for _, ifc := range ifaces {
			if fam.defaultDev != "" && ifc.Name == fam.defaultDev {
				if a, ok := fam.first(ifc); ok {
					return a, nil
				}
			}
		}
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 || isOverlayInterface(ifc.Name) {
				continue
			}
			if a, ok := fam.first(ifc); ok {
				return a, nil
			}
		}
	}
	return netip.Addr{}, errors.New("no underlay address found: set --advertise-addr to this host's address on the network the other hosts reach")
}

// isOverlayInterface reports interfaces that never carry the underlay:
// Docker's bridges and veths, and meshnet's own devices.
func isOverlayInterface(name string) bool {
	for _, p := range []string{"docker", "br-", "veth", "mnbr", "mnvx", "mnwg", "mnh", "mnc", "docker_gwbridge"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func firstIPv4(ifc net.Interface) (netip.Addr, bool) {
	return firstAddr(ifc, func(ip netip.Addr) bool { return ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() })
}

// firstGlobalIPv6 skips link-local addresses: they name no host beyond its
// link, and a peer would need the zone.
func firstGlobalIPv6(ifc net.Interface) (netip.Addr, bool) {
	return firstAddr(ifc, func(ip netip.Addr) bool { return ip.Is6() && ip.IsGlobalUnicast() })
}

func firstAddr(ifc net.Interface, ok func(netip.Addr) bool) (netip.Addr, bool) {
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		ipn, isNet := a.(*net.IPNet)
		if !isNet {
			continue
		}
		if ip, parsed := netip.AddrFromSlice(ipn.IP); parsed && ok(ip.Unmap()) {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// defaultRouteInterface reads the kernel's IPv4 routing table for the
// interface of the default route ("" when there is none).
func defaultRouteInterface(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0]
		}
	}
	return ""
}

// defaultRouteInterface6 reads the kernel's IPv6 routing table for the
// interface of the default route (::/0; "" when there is none).
func defaultRouteInterface6(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 10 && fields[0] == strings.Repeat("0", 32) && fields[1] == "00" && fields[9] != "lo" {
			return fields[9]
		}
	}
	return ""
}
