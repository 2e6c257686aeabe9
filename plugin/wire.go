package plugin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Wire types: the JSON the engine sends and reads, field names exactly as in moby's
// libnetwork/drivers/remote/api and libnetwork/ipams/remote/api. Addresses travel as text and
// are parsed here, so a backend never sees a malformed one.

type networkErrorReply struct {
	Err string `json:"Err"`
}

// ipamErrorReply: the IPAM client reads "Error" from a 200 reply (a reply with only "Err" is
// success to it). Replies here are never 200 on error, and the engine's plugin client reads "Err"
// from a non-200 body before the IPAM code looks at it, so both are set: "Error" for the
// protocol, "Err" so the user reads the message rather than the raw JSON body.
type ipamErrorReply struct {
	Error string `json:"Error"`
	Err   string `json:"Err"`
}

type activateReply struct {
	Implements []string `json:"Implements"`
}

type networkCapabilitiesReply struct {
	Scope             string `json:"Scope"`
	ConnectivityScope string `json:"ConnectivityScope"`
}

type ipamCapabilitiesReply struct {
	RequiresMACAddress    bool `json:"RequiresMACAddress"`
	RequiresRequestReplay bool `json:"RequiresRequestReplay"`
}

type addressSpacesReply struct {
	LocalDefaultAddressSpace  string `json:"LocalDefaultAddressSpace"`
	GlobalDefaultAddressSpace string `json:"GlobalDefaultAddressSpace"`
}

type wireIPAMData struct {
	AddressSpace string            `json:"AddressSpace"`
	Pool         string            `json:"Pool"`
	Gateway      string            `json:"Gateway"`
	AuxAddresses map[string]string `json:"AuxAddresses"`
}

type wireCreateNetwork struct {
	NetworkID string          `json:"NetworkID"`
	Options   map[string]any  `json:"Options"`
	IPv4Data  []*wireIPAMData `json:"IPv4Data"`
	IPv6Data  []*wireIPAMData `json:"IPv6Data"`
}

type wireNetworkID struct {
	NetworkID string `json:"NetworkID"`
}

type wireEndpointID struct {
	NetworkID  string `json:"NetworkID"`
	EndpointID string `json:"EndpointID"`
}

type wireInterface struct {
	Address     string `json:"Address,omitempty"`
	AddressIPv6 string `json:"AddressIPv6,omitempty"`
	MacAddress  string `json:"MacAddress,omitempty"`
}

type wireCreateEndpoint struct {
	NetworkID  string         `json:"NetworkID"`
	EndpointID string         `json:"EndpointID"`
	Interface  *wireInterface `json:"Interface"`
	Options    map[string]any `json:"Options"`
}

// createEndpointReply: Interface is null when the driver fills nothing.
type createEndpointReply struct {
	Interface *wireInterface `json:"Interface"`
}

type endpointInfoReply struct {
	Value map[string]any `json:"Value"`
}

type wireJoin struct {
	NetworkID  string         `json:"NetworkID"`
	EndpointID string         `json:"EndpointID"`
	SandboxKey string         `json:"SandboxKey"`
	Options    map[string]any `json:"Options"`
}

type wireInterfaceName struct {
	SrcName   string `json:"SrcName"`
	DstPrefix string `json:"DstPrefix"`
}

type wireStaticRoute struct {
	Destination string `json:"Destination"`
	RouteType   int    `json:"RouteType"`
	NextHop     string `json:"NextHop,omitempty"`
}

type joinReply struct {
	InterfaceName         wireInterfaceName `json:"InterfaceName"`
	Gateway               string            `json:"Gateway,omitempty"`
	GatewayIPv6           string            `json:"GatewayIPv6,omitempty"`
	StaticRoutes          []wireStaticRoute `json:"StaticRoutes,omitempty"`
	DisableGatewayService bool              `json:"DisableGatewayService"`
}

type wireRequestPool struct {
	AddressSpace string            `json:"AddressSpace"`
	Pool         string            `json:"Pool"`
	SubPool      string            `json:"SubPool"`
	Options      map[string]string `json:"Options"`
	V6           bool              `json:"V6"`
}

type requestPoolReply struct {
	PoolID string            `json:"PoolID"`
	Pool   string            `json:"Pool"`
	Data   map[string]string `json:"Data"`
}

type wirePoolID struct {
	PoolID string `json:"PoolID"`
}

type wireRequestAddress struct {
	PoolID  string            `json:"PoolID"`
	Address string            `json:"Address"`
	Options map[string]string `json:"Options"`
}

type requestAddressReply struct {
	Address string            `json:"Address"`
	Data    map[string]string `json:"Data"`
}

type wireReleaseAddress struct {
	PoolID  string `json:"PoolID"`
	Address string `json:"Address"`
}

// decodeBody unmarshals a request body; an empty body or "null" (what the engine sends for
// requests without arguments) leaves v as it is.
func decodeBody(body []byte, v any) error {
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return BadRequest("decoding request: %v", err)
	}
	return nil
}

// parsePrefix parses an optional CIDR ("" → zero); field names the field for the error.
func parsePrefix(field, s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, BadRequest("%s %q is not a subnet in CIDR form such as 10.42.0.0/24", field, s)
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), nil
}

// parseAddr parses an optional address ("" → zero).
func parseAddr(field, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, BadRequest("%s %q is not an IP address", field, s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, BadRequest("%s: %q: zoned addresses are not used", field, s)
	}
	return a.Unmap(), nil
}

func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func (w *wireIPAMData) toIPAMData(field string) (IPAMData, error) {
	if w == nil {
		return IPAMData{}, BadRequest("%s: null entry", field)
	}
	d := IPAMData{AddressSpace: w.AddressSpace}
	var err error
	if d.Pool, err = parsePrefix(field+".Pool", w.Pool); err != nil {
		return IPAMData{}, err
	}
	if d.Gateway, err = parsePrefix(field+".Gateway", w.Gateway); err != nil {
		return IPAMData{}, err
	}
	if len(w.AuxAddresses) > 0 {
		d.AuxAddresses = make(map[string]netip.Prefix, len(w.AuxAddresses))
		for name, s := range w.AuxAddresses {
			p, err := parsePrefix(field+".AuxAddresses["+name+"]", s)
			if err != nil {
				return IPAMData{}, err
			}
			d.AuxAddresses[name] = p
		}
	}
	return d, nil
}

func toIPAMDataList(field string, ws []*wireIPAMData) ([]IPAMData, error) {
	if len(ws) == 0 {
		return nil, nil
	}
	out := make([]IPAMData, 0, len(ws))
	for i, w := range ws {
		d, err := w.toIPAMData(fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// toRequest flattens the engine's option map: the user's -o options become text, the flags bools.
func (w *wireCreateNetwork) toRequest() (CreateNetworkRequest, error) {
	req := CreateNetworkRequest{NetworkID: w.NetworkID, Options: map[string]string{}}
	if w.NetworkID == "" {
		return req, BadRequest("CreateNetwork without NetworkID")
	}
	var err error
	if req.Internal, err = optionBool(w.Options, OptionInternal); err != nil {
		return req, err
	}
	if req.EnableIPv6, err = optionBool(w.Options, OptionEnableIPv6); err != nil {
		return req, err
	}
	switch generic := w.Options[OptionGeneric].(type) {
	case nil:
	case map[string]any:
		for k, v := range generic {
			req.Options[k] = optionText(v)
		}
	default:
		return req, BadRequest("option %s: want an object, got %T", OptionGeneric, generic)
	}
	if req.IPv4Data, err = toIPAMDataList("IPv4Data", w.IPv4Data); err != nil {
		return req, err
	}
	if req.IPv6Data, err = toIPAMDataList("IPv6Data", w.IPv6Data); err != nil {
		return req, err
	}
	return req, nil
}

// optionBool reads a flag the engine sends as a JSON bool (text is accepted too).
func optionBool(opts map[string]any, key string) (bool, error) {
	switch v := opts[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, BadRequest("option %s: %v", key, err)
		}
		return b, nil
	default:
		return false, BadRequest("option %s: want a bool, got %T", key, v)
	}
}

// optionText renders a generic option value as text: strings as they are, anything else as JSON.
func optionText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func (w *wireInterface) toInterface() (EndpointInterface, error) {
	var ifc EndpointInterface
	if w == nil {
		return ifc, nil
	}
	var err error
	if ifc.Address, err = parsePrefix("Interface.Address", w.Address); err != nil {
		return ifc, err
	}
	if ifc.AddressIPv6, err = parsePrefix("Interface.AddressIPv6", w.AddressIPv6); err != nil {
		return ifc, err
	}
	if w.MacAddress != "" {
		if ifc.MacAddress, err = net.ParseMAC(w.MacAddress); err != nil {
			return ifc, BadRequest("Interface.MacAddress: %v", err)
		}
	}
	return ifc, nil
}

// onlyNewFields keeps the fields of got that were empty in asked. The engine refuses any change
// to a field it set, even to the same value ("driver modified interface"), and rolls the endpoint
// back; it returns nil when nothing is left, which the engine reads as "no change".
func onlyNewFields(asked, got EndpointInterface) *wireInterface {
	var out wireInterface
	if !asked.Address.IsValid() && got.Address.IsValid() {
		out.Address = got.Address.String()
	}
	if !asked.AddressIPv6.IsValid() && got.AddressIPv6.IsValid() {
		out.AddressIPv6 = got.AddressIPv6.String()
	}
	if len(asked.MacAddress) == 0 && len(got.MacAddress) > 0 {
		out.MacAddress = got.MacAddress.String()
	}
	if out == (wireInterface{}) {
		return nil
	}
	return &out
}

func toJoinReply(r JoinResponse) (joinReply, error) {
	if r.InterfaceName.SrcName == "" {
		return joinReply{}, fmt.Errorf("join reply names no interface (SrcName empty)")
	}
	out := joinReply{
		InterfaceName:         wireInterfaceName(r.InterfaceName),
		Gateway:               addrText(r.Gateway),
		GatewayIPv6:           addrText(r.GatewayIPv6),
		DisableGatewayService: r.DisableGatewayService,
	}
	for i, rt := range r.StaticRoutes {
		if !rt.Destination.IsValid() {
			return joinReply{}, fmt.Errorf("join reply: static route %d has no destination", i)
		}
		if rt.RouteType == RouteNextHop && !rt.NextHop.IsValid() {
			return joinReply{}, fmt.Errorf("join reply: static route %d to %s needs a next hop", i, rt.Destination)
		}
		out.StaticRoutes = append(out.StaticRoutes, wireStaticRoute{
			Destination: rt.Destination.String(),
			RouteType:   int(rt.RouteType),
			NextHop:     addrText(rt.NextHop),
		})
	}
	return out, nil
}
