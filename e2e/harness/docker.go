package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// Docker runs the docker CLI on h.
func Docker(ctx context.Context, h Host, args ...string) (string, error) {
	return h.Exec(ctx, append([]string{"docker"}, args...)...)
}

// CreateNetwork runs, on h,
//
//	docker network create -d meshnet --ipam-driver meshnet --subnet SUBNET --label meshnet-e2e [EXTRA...] NAME
func CreateNetwork(ctx context.Context, h Host, name, subnet string, extra ...string) error {
	args := []string{"network", "create", "-d", "meshnet", "--ipam-driver", "meshnet", "--subnet", subnet, "--label", Label}
	args = append(append(args, extra...), name)
	_, err := Docker(ctx, h, args...)
	return err
}

// RunContainer runs, on h,
//
//	docker run -d --label meshnet-e2e --network NETWORK --name NAME [EXTRA...] meshnet/busybox sleep 3600
func RunContainer(ctx context.Context, h Host, name, network string, extra ...string) error {
	args := []string{"run", "-d", "--label", Label, "--network", network, "--name", name}
	args = append(append(args, extra...), Image, "sleep", "3600")
	_, err := Docker(ctx, h, args...)
	return err
}

// Endpoint is a container's attachment to one network, as `docker inspect` shows it.
type Endpoint struct {
	IP      netip.Addr
	Gateway netip.Addr
	// IPv6 and Gateway6 are its IPv6 address and gateway on a dual-stack
	// network; invalid on others.
	IPv6     netip.Addr
	Gateway6 netip.Addr
	MAC      string
}

// ContainerEndpoint returns container's address on network ("" means: its only network).
func ContainerEndpoint(ctx context.Context, h Host, container, network string) (Endpoint, error) {
	out, err := Docker(ctx, h, "inspect", "--format", "{{json .NetworkSettings.Networks}}", container)
	if err != nil {
		return Endpoint{}, err
	}
	var nets map[string]struct {
		IPAddress         string
		Gateway           string
		GlobalIPv6Address string
		IPv6Gateway       string
		MacAddress        string
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &nets); err != nil {
		return Endpoint{}, fmt.Errorf("parsing docker inspect of %s on %s: %w: %s", container, h.Name(), err, out)
	}
	if network == "" {
		if len(nets) != 1 {
			return Endpoint{}, fmt.Errorf("%s on %s is on %d networks; name one", container, h.Name(), len(nets))
		}
		for n := range nets {
			network = n
		}
	}
	n, ok := nets[network]
	if !ok {
		return Endpoint{}, fmt.Errorf("%s on %s is not on network %s: %s", container, h.Name(), network, out)
	}
	ip, err := netip.ParseAddr(n.IPAddress)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%s on %s has no address on %s (%q)", container, h.Name(), network, n.IPAddress)
	}
	ep := Endpoint{IP: ip, MAC: strings.ToLower(n.MacAddress)}
	ep.Gateway, _ = netip.ParseAddr(n.Gateway)
	ep.IPv6, _ = netip.ParseAddr(n.GlobalIPv6Address)
	ep.Gateway6, _ = netip.ParseAddr(n.IPv6Gateway)
	return ep, nil
}

// ContainerIP returns container's address on network ("" means: its only network).
func ContainerIP(ctx context.Context, h Host, container, network string) (netip.Addr, error) {
	ep, err := ContainerEndpoint(ctx, h, container, network)
	return ep.IP, err
}

// Ping runs `docker exec CONTAINER ping -c1 -W1 ADDR` on h.
func Ping(ctx context.Context, h Host, container string, addr netip.Addr) error {
	_, err := Docker(ctx, h, "exec", container, "ping", "-c1", "-W1", addr.String())
	return err
}

// UnderlayMTU returns the MTU of the interface that holds h's underlay address.
func UnderlayMTU(ctx context.Context, h Host) (int, error) {
	out, err := h.Exec(ctx, "ip", "-j", "addr", "show")
	if err != nil {
		return 0, err
	}
	var links []struct {
		Name     string `json:"ifname"`
		MTU      int    `json:"mtu"`
		AddrInfo []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return 0, fmt.Errorf("parsing ip -j addr on %s: %w", h.Name(), err)
	}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Local == h.Addr().String() {
				return l.MTU, nil
			}
		}
	}
	return 0, fmt.Errorf("no interface on %s holds %s", h.Name(), h.Addr())
}

// HostPing pings addr once from h itself (not from a container), with ping or busybox ping.
func HostPing(ctx context.Context, h Host, addr netip.Addr) error {
	_, err := h.Exec(ctx, "sh", "-c", `if command -v ping >/dev/null 2>&1; then exec ping -c1 -W2 "$1"; else exec busybox ping -c1 -W2 "$1"; fi`, "ping", addr.String())
	return err
}

// ContainerIPs returns the addresses on network of the named containers on h, with one
// `docker inspect`. A container without an address on network is an error.
func ContainerIPs(ctx context.Context, h Host, network string, names ...string) (map[string]netip.Addr, error) {
	return containerAddrs(ctx, h, network, false, names)
}

// ContainerIPv6s is ContainerIPs for the containers' IPv6 addresses on a dual-stack network.
func ContainerIPv6s(ctx context.Context, h Host, network string, names ...string) (map[string]netip.Addr, error) {
	return containerAddrs(ctx, h, network, true, names)
}

func containerAddrs(ctx context.Context, h Host, network string, v6 bool, names []string) (map[string]netip.Addr, error) {
	if len(names) == 0 {
		return map[string]netip.Addr{}, nil
	}
	out, err := Docker(ctx, h, append([]string{"inspect", "--format", "{{.Name}} {{json .NetworkSettings.Networks}}"}, names...)...)
	if err != nil {
		return nil, err
	}
	m := map[string]netip.Addr{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, js, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("docker inspect on %s: unexpected line %q", h.Name(), line)
		}
		name = strings.TrimPrefix(name, "/")
		var nets map[string]struct{ IPAddress, GlobalIPv6Address string }
		if err := json.Unmarshal([]byte(js), &nets); err != nil {
			return nil, fmt.Errorf("docker inspect of %s on %s: %w", name, h.Name(), err)
		}
		addr := nets[network].IPAddress
		if v6 {
			addr = nets[network].GlobalIPv6Address
		}
		ip, err := netip.ParseAddr(addr)
		if err != nil {
			return nil, fmt.Errorf("%s on %s has no address on %s: %s", name, h.Name(), network, js)
		}
		m[name] = ip
	}
	return m, nil
}
