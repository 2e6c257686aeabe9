package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/plugin"
	"golang.org/x/sys/unix"
)

// published is one port this node publishes for a local endpoint, as its
// endpoint record carries it: "hostIP:hostPort:containerPort/proto".
type published struct {
	proto    string
	hostIP   netip.Addr // IPv4; zero = every address (written 0.0.0.0)
	hostPort uint16
	port     uint16 // the container's
}

func (p published) String() string {
	return fmt.Sprintf("%s:%d:%d/%s", p.hostText(), p.hostPort, p.port, p.proto)
}

func (p published) hostText() string {
	if p.hostIP.IsValid() {
		return p.hostIP.String()
	}
	return "0.0.0.0"
}

// key names the host port p takes, for the socket that holds it.
func (p published) key() string {
	return fmt.Sprintf("%s/%s:%d", p.proto, p.hostText(), p.hostPort)
}

// overlaps reports whether p and o want the same host port.
func (p published) overlaps(proto string, hostIP netip.Addr, port uint16) bool {
	return p.proto == proto && p.hostPort == port &&
		(!p.hostIP.IsValid() || !hostIP.IsValid() || p.hostIP == hostIP)
}

// parsePublished reads one "hostIP:hostPort:containerPort/proto".
func parsePublished(s string) (published, error) {
	rest, proto, ok := strings.Cut(s, "/")
	parts := strings.Split(rest, ":")
	if !ok || len(parts) != 3 {
		return published{}, fmt.Errorf("published port %q: want hostIP:hostPort:containerPort/proto", s)
	}
	var p published
	switch proto {
	case "tcp", "udp", "sctp":
		p.proto = proto
	default:
		return published{}, fmt.Errorf("published port %q: protocol %q", s, proto)
	}
	ip, err := netip.ParseAddr(parts[0])
	if err != nil || !ip.Is4() {
		return published{}, fmt.Errorf("published port %q: host address %q is not IPv4", s, parts[0])
	}
	if !ip.IsUnspecified() {
		p.hostIP = ip
	}
	for i, dst := range []*uint16{&p.hostPort, &p.port} {
		n, err := strconv.ParseUint(parts[1+i], 10, 16)
		if err != nil || n == 0 {
			return published{}, fmt.Errorf("published port %q: port %q", s, parts[1+i])
		}
		*dst = uint16(n)
	}
	return p, nil
}

// parsePublishedList parses a record's list, skipping what does not parse
// (records may come from newer nodes).
func parsePublishedList(ss []string) []published {
	var out []published
	for _, s := range ss {
		if p, err := parsePublished(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func publishedStrings(ps []published) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// portMappings is what the dataplane publishes for a record's list.
func portMappings(ss []string) []dataplane.PortMapping {
	var out []dataplane.PortMapping
	for _, p := range parsePublishedList(ss) {
		out = append(out, dataplane.PortMapping{Proto: p.proto, HostIP: p.hostIP, HostPort: p.hostPort, ContainerPort: p.port})
	}
	return out
}

// protoNumbers are the IP protocol numbers libnetwork carries.
var protoNumbers = map[string]int{"tcp": 6, "udp": 17, "sctp": 132}

// portUser is a host port already published on this node, and by whom.
type portUser struct {
	p         published
	container string
}

var (
	// errPortTaken is a host port that is published already or held by another program.
	errPortTaken = errors.New("host port in use")
	// errCannotBind is a binding the host cannot take for another reason
	// (its host address is not local).
	errCannotBind = errors.New("cannot publish")
)

// choosePort picks the host port for one binding: the first port of its
// range that no endpoint of this node publishes and that the holder can
// bind; any free port when the binding asks for 0. The port is held when
// it returns.
func choosePort(h *portHolder, b plugin.PortBinding, users []portUser) (published, error) {
	p := published{proto: b.Proto, hostIP: b.HostIP, port: b.Port}
	if b.HostPort == 0 {
		return h.holdEphemeral(p, func(port uint16) bool { return userOf(users, p.proto, p.hostIP, port) == nil })
	}
	var lastErr error
	for port := int(b.HostPort); port <= int(b.HostPortEnd); port++ {
		p.hostPort = uint16(port)
		if u := userOf(users, p.proto, p.hostIP, p.hostPort); u != nil {
			who := "another container"
			if u.container != "" {
				who = "container " + u.container
			}
			lastErr = fmt.Errorf("%w: %s:%d/%s is already published by %s on this host", errPortTaken, u.p.hostText(), port, p.proto, who)
			continue
		}
		if err := h.hold(p); err != nil {
			if !errors.Is(err, unix.EADDRINUSE) {
				// Not a taken port: an address that is not this host's, say.
				return published{}, fmt.Errorf("%w: %s:%d/%s: %v", errCannotBind, p.hostText(), port, p.proto, err)
			}
			lastErr = fmt.Errorf("%w: %s:%d/%s: %v (another program listens on it)", errPortTaken, p.hostText(), port, p.proto, err)
			continue
		}
		return p, nil
	}
	if b.HostPortEnd > b.HostPort {
		return published{}, fmt.Errorf("no free host port in %d-%d for %s: last: %w", b.HostPort, b.HostPortEnd, b, lastErr)
	}
	return published{}, lastErr
}

func userOf(users []portUser, proto string, hostIP netip.Addr, port uint16) *portUser {
	for i := range users {
		if users[i].p.overlaps(proto, hostIP, port) {
			return &users[i]
		}
	}
	return nil
}
