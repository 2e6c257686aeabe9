package dataplane

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestVethNames(t *testing.T) {
	for _, tc := range []struct{ id, host, container string }{
		{"0123456789abcdef0123", "mnh0123456789", "mnc0123456789"},
		{"abc", "mnhabc", "mncabc"},
	} {
		h, c := VethNames(tc.id)
		if h != tc.host || c != tc.container {
			t.Errorf("VethNames(%q) = %q, %q; want %q, %q", tc.id, h, c, tc.host, tc.container)
		}
		if len(h) > 15 || len(c) > 15 {
			t.Errorf("VethNames(%q): names longer than IFNAMSIZ-1", tc.id)
		}
	}
	// The longest VNI still fits IFNAMSIZ.
	if n := BridgeName(maxVNI); len(n) > 15 {
		t.Errorf("BridgeName(maxVNI) = %q, too long", n)
	}
}

func TestVNIFromName(t *testing.T) {
	for _, tc := range []struct {
		name string
		vni  uint32
		ok   bool
	}{
		{"mnbr42", 42, true},
		{"mnbr16777215", maxVNI, true},
		{"mnbr16777216", 0, false},
		{"mnbr0", 0, false},
		{"mnbr042", 0, false}, // not a name meshnet would make
		{"mnbr", 0, false},
		{"mnbrx", 0, false},
		{"eth0", 0, false},
	} {
		vni, ok := vniFromName(tc.name, BridgePrefix)
		if vni != tc.vni || ok != tc.ok {
			t.Errorf("vniFromName(%q) = %d, %v; want %d, %v", tc.name, vni, ok, tc.vni, tc.ok)
		}
	}
}

// sampleState is a state with everything set, for Equal and compile tests.
func sampleState() State {
	h1, c1 := VethNames("aaaa000001")
	h2, c2 := VethNames("aaaa000002")
	return State{
		Underlay:  UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.1"), Interface: "eth0"},
		VXLANPort: 4789,
		Networks: []Network{
			{
				VNI: 100, Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1"),
				Locals: []LocalEndpoint{
					{ID: "aaaa000001", HostIf: h1, ContainerIf: c1, MAC: mustMAC("02:00:00:01:00:11"), Addr: netip.MustParsePrefix("10.1.0.11/24")},
					{ID: "aaaa000002", HostIf: h2, ContainerIf: c2, MAC: mustMAC("02:00:00:01:00:12"), Addr: netip.MustParsePrefix("10.1.0.12/24")},
				},
				Remotes: []RemoteEndpoint{
					{Addr: netip.MustParseAddr("10.1.0.21"), MAC: mustMAC("02:00:00:01:00:21"), VTEP: netip.MustParseAddr("198.18.0.2")},
					{Addr: netip.MustParseAddr("10.1.0.22"), MAC: mustMAC("02:00:00:01:00:22"), VTEP: netip.MustParseAddr("198.18.0.3")},
				},
			},
			{VNI: 200, Subnet: netip.MustParsePrefix("10.2.0.0/24"), Gateway: netip.MustParseAddr("10.2.0.1"), MTU: 1400},
		},
	}
}

func TestStateEqual(t *testing.T) {
	a := sampleState()
	if !a.Equal(sampleState()) {
		t.Fatal("a state is not Equal to a copy of itself")
	}

	// Order does not matter.
	b := sampleState()
	b.Networks[0], b.Networks[1] = b.Networks[1], b.Networks[0]
	n := &b.Networks[1]
	n.Locals[0], n.Locals[1] = n.Locals[1], n.Locals[0]
	n.Remotes[0], n.Remotes[1] = n.Remotes[1], n.Remotes[0]
	if !a.Equal(b) {
		t.Error("reordered state is not Equal")
	}
	if a.Networks[0].VNI != 100 || a.Networks[0].Locals[0].ID != "aaaa000001" {
		t.Error("Equal reordered its receiver")
	}
	// An unset port equals the default port.
	c := sampleState()
	c.VXLANPort = 0
	if !a.Equal(c) {
		t.Error("VXLANPort 0 is not Equal to the default port")
	}

	// Every field matters.
	for name, mutate := range map[string]func(*State){
		"underlay addr": func(s *State) { s.Underlay.Addr = netip.MustParseAddr("198.18.0.9") },
		"underlay if":   func(s *State) { s.Underlay.Interface = "eth1" },
		"underlay mtu":  func(s *State) { s.Underlay.MTU = 9000 },
		"port":          func(s *State) { s.VXLANPort = 4790 },
		"network gone":  func(s *State) { s.Networks = s.Networks[:1] },
		"vni":           func(s *State) { s.Networks[1].VNI = 201 },
		"subnet":        func(s *State) { s.Networks[1].Subnet = netip.MustParsePrefix("10.2.0.0/16") },
		"gateway":       func(s *State) { s.Networks[1].Gateway = netip.MustParseAddr("10.2.0.254") },
		"mtu":           func(s *State) { s.Networks[1].MTU = 0 },
		"local gone":    func(s *State) { s.Networks[0].Locals = s.Networks[0].Locals[:1] },
		"local id":      func(s *State) { s.Networks[0].Locals[0].ID = "x" },
		"local hostif":  func(s *State) { s.Networks[0].Locals[0].HostIf = "mnhx" },
		"local contif":  func(s *State) { s.Networks[0].Locals[0].ContainerIf = "mncx" },
		"local mac":     func(s *State) { s.Networks[0].Locals[0].MAC = mustMAC("02:00:00:00:00:99") },
		"local addr":    func(s *State) { s.Networks[0].Locals[0].Addr = netip.MustParsePrefix("10.1.0.99/24") },
		"remote gone":   func(s *State) { s.Networks[0].Remotes = s.Networks[0].Remotes[:1] },
		"remote addr":   func(s *State) { s.Networks[0].Remotes[0].Addr = netip.MustParseAddr("10.1.0.99") },
		"remote mac":    func(s *State) { s.Networks[0].Remotes[0].MAC = mustMAC("02:00:00:00:00:99") },
		"remote vtep":   func(s *State) { s.Networks[0].Remotes[0].VTEP = netip.MustParseAddr("198.18.0.9") },
	} {
		s := sampleState()
		mutate(&s)
		if a.Equal(s) || s.Equal(a) {
			t.Errorf("%s: changed state is still Equal", name)
		}
	}
}

func TestValidate(t *testing.T) {
	good := sampleState().Networks[0]
	if err := good.validate(); err != nil {
		t.Fatalf("valid network: %v", err)
	}
	for name, tc := range map[string]struct {
		mutate func(*Network)
		want   string
	}{
		"vni 0":           {func(n *Network) { n.VNI = 0 }, "VNI"},
		"vni too big":     {func(n *Network) { n.VNI = 1 << 24 }, "VNI"},
		"no subnet":       {func(n *Network) { n.Subnet = netip.Prefix{} }, "subnet"},
		"gateway outside": {func(n *Network) { n.Gateway = netip.MustParseAddr("10.9.0.1") }, "gateway"},
		"mtu too small":   {func(n *Network) { n.MTU = 100 }, "MTU"},
	} {
		n := sampleState().Networks[0]
		tc.mutate(&n)
		if err := n.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: validate() = %v, want error mentioning %q", name, err, tc.want)
		}
	}
	l := good.Locals[0]
	l.HostIf = "veth0"
	if err := l.validate(); err == nil {
		t.Error("local endpoint without the mnh prefix passed validation")
	}
	l = good.Locals[0]
	l.ContainerIf = "a-name-longer-than-15"
	if err := l.validate(); err == nil {
		t.Error("local endpoint with a too long name passed validation")
	}
	r := good.Remotes[0]
	r.MAC = nil
	if err := r.validate(); err == nil {
		t.Error("remote without MAC passed validation")
	}
}

// A WireGuard network's changes are logged as wireguard, not vxlan (the
// WireGuard half applies through the same applyLocked).
func TestLogKinds(t *testing.T) {
	vx, wg := Network{VNI: 1}, Network{VNI: 2, Kind: KindWireGuard}
	for _, c := range []struct {
		nets []Network
		want string
	}{
		{nil, "none"},
		{[]Network{vx}, "vxlan"},
		{[]Network{wg}, "wireguard"},
		{[]Network{wg, vx}, "vxlan+wireguard"},
	} {
		if got := logKinds(State{Networks: c.nets}); got != c.want {
			t.Errorf("%v: %q, want %q", c.nets, got, c.want)
		}
	}
}
