package dataplane

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func portsNet(internal bool, ports ...PortMapping) Network {
	h, c := VethNames("e1e1e1e1e1e1")
	return Network{VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/24"), Gateway: netip.MustParseAddr("10.7.0.1"),
		Internal: internal, Locals: []LocalEndpoint{{ID: "e1e1e1e1e1e1", HostIf: h, ContainerIf: c,
			MAC: mustMAC("02:00:00:07:00:05"), Addr: netip.MustParsePrefix("10.7.0.5/24"), Ports: ports}}}
}

func TestPublishRules(t *testing.T) {
	p := PortMapping{Proto: "tcp", HostPort: 8081, ContainerPort: 8080}
	q := PortMapping{Proto: "udp", HostIP: netip.MustParseAddr("198.18.0.1"), HostPort: 53, ContainerPort: 5353}
	view := firewallView{acceptChain: map[nftables.TableFamily]string{
		nftables.TableFamilyIPv4: iptDockerUser, nftables.TableFamilyIPv6: iptDockerUser}}
	got := ruleComments(wantRules(firewallSpec{Nets: []Network{portsNet(false, p, q)}, VXLANPort: 4789}, view))
	for chain, want := range map[string][]string{
		"meshnet/prerouting": {
			"meshnet: publish tcp 0.0.0.0:8081 to 10.7.0.5:8080 on mnbr7",
			"meshnet: publish udp 198.18.0.1:53 to 10.7.0.5:5353 on mnbr7"},
		"meshnet/output": {
			"meshnet: publish tcp 0.0.0.0:8081 to 10.7.0.5:8080 on mnbr7 from host",
			"meshnet: publish udp 198.18.0.1:53 to 10.7.0.5:5353 on mnbr7 from host"},
	} {
		if !slices.Equal(got[chain], want) {
			t.Errorf("%s: %q, want %q", chain, got[chain], want)
		}
	}
	if !slices.Contains(got["filter/DOCKER-USER"], "meshnet: accept mnbr7 published tcp 10.7.0.5:8080") ||
		!slices.Contains(got["filter/DOCKER-USER"], "meshnet: accept mnbr7 published udp 10.7.0.5:5353") {
		t.Errorf("accepts: %q", got["filter/DOCKER-USER"])
	}
	// Only IPv4 accepts: meshnet publishes IPv4 only.
	for _, r := range wantRules(firewallSpec{Nets: []Network{portsNet(false, p)}}, view) {
		if r.Family == nftables.TableFamilyIPv6 && strings.Contains(r.Comment, "published") {
			t.Errorf("IPv6 accept %q", r.Comment)
		}
	}

	// The DNAT: local destination, port, then the container's address and port.
	var dnat []expr.Any
	for _, r := range wantRules(firewallSpec{Nets: []Network{portsNet(false, p)}}, view) {
		if r.Chain == meshnetPrerouting {
			dnat = r.Exprs
		}
	}
	if _, ok := dnat[2].(*expr.Fib); !ok {
		t.Errorf("no fib daddr type local: %#v", dnat)
	}
	nat, ok := dnat[len(dnat)-1].(*expr.NAT)
	if !ok || nat.Type != expr.NATTypeDestNAT || nat.RegAddrMin != 1 || nat.RegProtoMin != 2 {
		t.Errorf("last expression %#v, want dnat from registers 1 and 2", dnat[len(dnat)-1])
	}
	if im := dnat[len(dnat)-3].(*expr.Immediate); !slices.Equal(im.Data, []byte{10, 7, 0, 5}) {
		t.Errorf("dnat address %v", im.Data)
	}
	if im := dnat[len(dnat)-2].(*expr.Immediate); !slices.Equal(im.Data, []byte{0x1f, 0x90}) {
		t.Errorf("dnat port %v", im.Data)
	}
}

func TestInternalRules(t *testing.T) {
	p := PortMapping{Proto: "tcp", HostPort: 8081, ContainerPort: 8080}
	view := firewallView{acceptChain: map[nftables.TableFamily]string{nftables.TableFamilyIPv4: iptForward}}
	st := State{Underlay: UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.1")}, Networks: []Network{portsNet(true, p)}}
	c, err := compile(st, 1500, "")
	if err != nil {
		t.Fatal(err)
	}
	if ps := c.Networks[0].Locals[0].Ports; len(ps) != 0 {
		t.Errorf("internal network kept ports %v", ps)
	}
	got := ruleComments(withoutTunnelRules(wantRules(firewallSpec{Nets: c.Networks, AllowDockerBridges: true}, view)))
	want := map[string][]string{
		"meshnet/forward": {"meshnet: internal mnbr7 drop from outside 10.7.0.0/24",
			"meshnet: internal mnbr7 drop to outside 10.7.0.0/24", "meshnet: isolate mnbr7 except published"},
		"filter/FORWARD": {"meshnet: accept mnbr7 bridged", "meshnet: accept mnbr7 return"},
		"meshnet/raw":    {"meshnet: drop from bridges to 127.0.0.0/8"},
	}
	if len(got) != len(want) {
		t.Errorf("chains %v, want %v", got, want)
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("%s: %q, want %q", k, got[k], w)
		}
	}
}

func TestCompilePortConflicts(t *testing.T) {
	p := PortMapping{Proto: "tcp", HostPort: 8081, ContainerPort: 8080}
	n := portsNet(false, p, PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("198.18.0.1"), HostPort: 8081, ContainerPort: 80},
		PortMapping{Proto: "udp", HostPort: 8081, ContainerPort: 80}, PortMapping{Proto: "icmp", HostPort: 1, ContainerPort: 1},
		PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("::1"), HostPort: 9, ContainerPort: 9})
	st := State{Underlay: UnderlayInfo{Addr: netip.MustParseAddr("198.18.0.1")}, Networks: []Network{n}}
	c, err := compile(st, 1500, "")
	if err == nil || !strings.Contains(err.Error(), "already published") || !strings.Contains(err.Error(), "icmp") ||
		!strings.Contains(err.Error(), "::1") {
		t.Errorf("compile error %v; want the overlap, the protocol and the IPv6 address reported", err)
	}
	got := c.Networks[0].Locals[0].Ports
	if len(got) != 2 || !slices.Contains(got, p) || got[0].Proto == got[1].Proto && got[0].HostPort == got[1].HostPort {
		t.Errorf("kept %v; want tcp 8081 once and udp 8081", got)
	}
	// The state itself is untouched.
	if len(st.Networks[0].Locals[0].Ports) != 5 {
		t.Errorf("compile changed its input: %v", st.Networks[0].Locals[0].Ports)
	}
	// Equal sees ports, in any order.
	rev := slices.Clone(n.Locals[0].Ports)
	slices.Reverse(rev)
	other := State{Underlay: st.Underlay, Networks: []Network{portsNet(false, rev...)}}
	if !st.Equal(other) {
		t.Error("the same ports in another order are not Equal")
	}
	other.Networks[0].Locals[0].Ports = rev[1:]
	if st.Equal(other) {
		t.Error("a missing port is Equal")
	}
}
