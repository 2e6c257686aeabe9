package plugin

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// Published ports. The engine passes a container's -p bindings to the driver of its gateway
// endpoint in ProgramExternalConnectivity (and the same sandbox options again in Join), as
// libnetwork's types.PortBinding list under OptionPortMap. That struct has no JSON tags, so
// the fields travel under their Go names; Proto is a number (the IP protocol).

const (
	// OptionPortMap holds the -p bindings: [{Proto, IP, Port, HostIP, HostPort, HostPortEnd}].
	OptionPortMap = "com.docker.network.portmap"
	// OptionExposedPorts holds the image's and --expose ports: [{Proto, Port}].
	OptionExposedPorts = "com.docker.network.endpoint.exposedports"
)

// IP protocol numbers as libnetwork's types.Protocol carries them.
const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

// PortBinding is one -p binding: HostIP:HostPort[-HostPortEnd] → the container's Port/Proto.
type PortBinding struct {
	Proto string     // "tcp", "udp" or "sctp"
	IP    netip.Addr // the container's address as the engine knows it; zero if not sent
	Port  uint16     // container port
	// HostIP is the host address to publish on; zero means every address.
	HostIP netip.Addr
	// HostPort is the first host port the binding may take, HostPortEnd the last (equal to
	// HostPort for a single port). HostPort 0 asks for any free ephemeral port.
	HostPort    uint16
	HostPortEnd uint16
}

// String renders b as docker port does: 0.0.0.0:8081-8085->8080/tcp.
func (b PortBinding) String() string {
	host := "0.0.0.0"
	if b.HostIP.IsValid() {
		host = b.HostIP.String()
	}
	ports := fmt.Sprint(b.HostPort)
	if b.HostPortEnd > b.HostPort {
		ports += fmt.Sprintf("-%d", b.HostPortEnd)
	}
	return fmt.Sprintf("%s:%s->%d/%s", host, ports, b.Port, b.Proto)
}

// ExternalConnectivityRequest is NetworkDriver.ProgramExternalConnectivity: the endpoint became
// its container's gateway endpoint; publish Ports on this host.
type ExternalConnectivityRequest struct {
	NetworkID  string
	EndpointID string
	Ports      []PortBinding
	// Exposed are the container's exposed ports ("8080/tcp"); informational.
	Exposed []string
}

type wireExternalConnectivity struct {
	NetworkID  string         `json:"NetworkID"`
	EndpointID string         `json:"EndpointID"`
	Options    map[string]any `json:"Options"`
}

// wirePortBinding is libnetwork's types.PortBinding as encoding/json writes it (no tags; net.IP
// as text, "" for nil).
type wirePortBinding struct {
	Proto       int    `json:"Proto"`
	IP          string `json:"IP"`
	Port        int    `json:"Port"`
	HostIP      string `json:"HostIP"`
	HostPort    int    `json:"HostPort"`
	HostPortEnd int    `json:"HostPortEnd"`
}

type wireTransportPort struct {
	Proto int `json:"Proto"`
	Port  int `json:"Port"`
}

func protoName(n int) (string, bool) {
	switch n {
	case protoTCP:
		return "tcp", true
	case protoUDP:
		return "udp", true
	case protoSCTP:
		return "sctp", true
	}
	return "", false
}

func toRequest(w wireExternalConnectivity) (ExternalConnectivityRequest, error) {
	req := ExternalConnectivityRequest{NetworkID: w.NetworkID, EndpointID: w.EndpointID}
	if w.NetworkID == "" || w.EndpointID == "" {
		return req, BadRequest("ProgramExternalConnectivity needs NetworkID and EndpointID")
	}
	var err error
	if req.Ports, err = ParsePortMap(w.Options[OptionPortMap]); err != nil {
		return req, err
	}
	if req.Exposed, err = parseExposed(w.Options[OptionExposedPorts]); err != nil {
		return req, err
	}
	return req, nil
}

// reencode turns a decoded JSON value back into v's type: option values arrive as any.
func reencode(key string, raw any, v any) error {
	b, err := json.Marshal(raw)
	if err != nil {
		return BadRequest("option %s: %v", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return BadRequest("option %s: want a list of port bindings: %v", key, err)
	}
	return nil
}

// ParsePortMap parses the value of OptionPortMap as decoded from JSON (nil: no bindings).
func ParsePortMap(raw any) ([]PortBinding, error) {
	if raw == nil {
		return nil, nil
	}
	var ws []wirePortBinding
	if err := reencode(OptionPortMap, raw, &ws); err != nil {
		return nil, err
	}
	out := make([]PortBinding, 0, len(ws))
	for i, w := range ws {
		field := fmt.Sprintf("%s[%d]", OptionPortMap, i)
		proto, ok := protoName(w.Proto)
		if !ok {
			return nil, BadRequest("%s: protocol %d is not tcp (6), udp (17) or sctp (132)", field, w.Proto)
		}
		for name, p := range map[string]int{"Port": w.Port, "HostPort": w.HostPort, "HostPortEnd": w.HostPortEnd} {
			if p < 0 || p > 65535 {
				return nil, BadRequest("%s: %s %d outside 0..65535", field, name, p)
			}
		}
		if w.Port == 0 {
			return nil, BadRequest("%s: container port 0", field)
		}
		b := PortBinding{Proto: proto, Port: uint16(w.Port), HostPort: uint16(w.HostPort), HostPortEnd: uint16(w.HostPortEnd)}
		var err error
		if b.IP, err = parseAddr(field+".IP", w.IP); err != nil {
			return nil, err
		}
		if b.HostIP, err = parseAddr(field+".HostIP", w.HostIP); err != nil {
			return nil, err
		}
		if b.HostIP.Is4() && b.HostIP.IsUnspecified() {
			b.HostIP = netip.Addr{} // 0.0.0.0 is every IPv4 address, as "" is; "::" stays as it is
		}
		switch {
		case b.HostPortEnd == 0:
			b.HostPortEnd = b.HostPort
		case b.HostPort == 0:
			return nil, BadRequest("%s: a host port range %d-%d needs its first port", field, w.HostPort, w.HostPortEnd)
		case b.HostPortEnd < b.HostPort:
			return nil, BadRequest("%s: host port range %d-%d ends before it starts", field, w.HostPort, w.HostPortEnd)
		}
		out = append(out, b)
	}
	return out, nil
}

func parseExposed(raw any) ([]string, error) {
	if raw == nil {
		return nil, nil
	}
	var ws []wireTransportPort
	if err := reencode(OptionExposedPorts, raw, &ws); err != nil {
		return nil, err
	}
	var out []string
	for i, w := range ws {
		proto, ok := protoName(w.Proto)
		if !ok || w.Port <= 0 || w.Port > 65535 {
			return nil, BadRequest("%s[%d]: %d/%d is not a port and protocol", OptionExposedPorts, i, w.Port, w.Proto)
		}
		out = append(out, fmt.Sprintf("%d/%s", w.Port, proto))
	}
	return out, nil
}
