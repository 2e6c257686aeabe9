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
// on an interface that is not Docker's or meshnet's own.
func DetectAdvertiseAddr() (netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list interfaces: %w", err)
	}
	if dev := defaultRouteInterface("/proc/net/route"); dev != "" {
		for _, ifc := range ifaces {
			if ifc.Name == dev {
				if a, ok := firstIPv4(ifc); ok {
					return a, nil
				}
			}
		}
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 || isOverlayInterface(ifc.Name) {
			continue
		}
		if a, ok := firstIPv4(ifc); ok {
			return a, nil
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
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
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
