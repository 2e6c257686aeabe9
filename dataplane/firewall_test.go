package dataplane

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func ruleComments(rules []ruleSpec) map[string][]string {
	out := map[string][]string{}
	for _, r := range rules {
		k := r.Table + "/" + r.Chain
		out[k] = append(out[k], r.Comment)
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

func TestWantRules(t *testing.T) {
	nets := []Network{{VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.5/16"), Gateway: netip.MustParseAddr("10.7.0.1")}}
	meshnetOnly := map[string][]string{
		"meshnet/forward": {"meshnet: isolate mnbr7 except published"},
		"meshnet/postrouting": {"meshnet: masquerade 10.7.0.0/16 from mnbr7", "meshnet: masquerade hairpin to mnbr7",
			"meshnet: masquerade localhost to mnbr7"},
		"meshnet/raw": {"meshnet: drop from bridges to 127.0.0.0/8"},
	}
	accepts := []string{"meshnet: accept mnbr7 bridged", "meshnet: accept mnbr7 egress", "meshnet: accept mnbr7 return"}

	// No iptables: nothing in the filter table.
	got := ruleComments(withoutTunnelRules(wantRules(firewallSpec{Nets: nets, VXLANPort: 4789, AllowDockerBridges: true}, firewallView{})))
	if len(got) != 3 || !slices.Equal(got["meshnet/forward"], meshnetOnly["meshnet/forward"]) ||
		!slices.Equal(got["meshnet/postrouting"], meshnetOnly["meshnet/postrouting"]) ||
		!slices.Equal(got["meshnet/raw"], meshnetOnly["meshnet/raw"]) {
		t.Errorf("without iptables: %v", got)
	}
	// FORWARD only, in both families.
	view := firewallView{acceptChain: map[nftables.TableFamily]string{
		nftables.TableFamilyIPv4: iptForward, nftables.TableFamilyIPv6: iptDockerUser,
	}}
	rules := withoutTunnelRules(wantRules(firewallSpec{Nets: nets, VXLANPort: 4789, AllowDockerBridges: true}, view))
	var v4, v6 []string
	for _, r := range rules {
		switch {
		case r.Family == nftables.TableFamilyIPv4 && r.Chain == iptForward:
			v4 = append(v4, r.Comment)
		case r.Family == nftables.TableFamilyIPv6 && r.Chain == iptDockerUser:
			v6 = append(v6, r.Comment)
		}
	}
	slices.Sort(v4)
	slices.Sort(v6)
	if !slices.Equal(v4, accepts) || !slices.Equal(v6, accepts) {
		t.Errorf("accepts: ip FORWARD %v, ip6 DOCKER-USER %v; want %v in each", v4, v6, accepts)
	}
	// Comments are unique keys.
	seen := map[ruleKey]bool{}
	for _, r := range rules {
		if seen[r.key()] {
			t.Errorf("duplicate rule key %v", r.key())
		}
		seen[r.key()] = true
		if ruleBridge(r.Comment) != "mnbr7" && r.Chain != meshnetRaw {
			t.Errorf("comment %q does not name its bridge", r.Comment)
		}
	}
}

// A dual-stack network masquerades its IPv6 subnet too (NAT66) unless its
// IPv6 egress is routed; an internal one keeps both families inside.
func TestWantRulesDualStack(t *testing.T) {
	n := Network{VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/16"), Gateway: netip.MustParseAddr("10.7.0.1"),
		Subnet6: netip.MustParsePrefix("fd07::/64"), Gateway6: netip.MustParseAddr("fd07::1")}
	comments := func(n Network) []string {
		var out []string
		for _, r := range wantRules(firewallSpec{Nets: []Network{n}, VXLANPort: 4789, AllowDockerBridges: true}, firewallView{}) {
			if strings.Contains(r.Comment, "masquerade 10.7") || strings.Contains(r.Comment, "masquerade fd07") || strings.Contains(r.Comment, "internal") {
				out = append(out, r.Comment)
			}
		}
		slices.Sort(out)
		return out
	}
	if got := comments(n); !slices.Equal(got, []string{"meshnet: masquerade 10.7.0.0/16 from mnbr7", "meshnet: masquerade fd07::/64 from mnbr7"}) {
		t.Errorf("dual-stack: %q", got)
	}
	n.IPv6Routed = true
	if got := comments(n); !slices.Equal(got, []string{"meshnet: masquerade 10.7.0.0/16 from mnbr7"}) {
		t.Errorf("IPv6 routed: %q", got)
	}
	n.Internal = true
	if got := comments(n); !slices.Equal(got, []string{
		"meshnet: internal mnbr7 drop from outside 10.7.0.0/16", "meshnet: internal mnbr7 drop from outside fd07::/64",
		"meshnet: internal mnbr7 drop to outside 10.7.0.0/16", "meshnet: internal mnbr7 drop to outside fd07::/64"}) {
		t.Errorf("internal dual-stack: %q", got)
	}
}

func TestPlanRules(t *testing.T) {
	nets := []Network{{VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/16"), Gateway: netip.MustParseAddr("10.7.0.1")}}
	view := firewallView{acceptChain: map[nftables.TableFamily]string{nftables.TableFamilyIPv4: iptDockerUser}}
	want := wantRules(firewallSpec{Nets: nets, VXLANPort: 4789}, view)
	var have []ruleRef
	for i, r := range want[:3] {
		have = append(have, ruleRef{Family: r.Family, Table: r.Table, Chain: r.Chain, Comment: r.Comment, Handle: uint64(10 + i)})
	}
	stale := ruleRef{Family: nftables.TableFamilyIPv4, Table: iptFilterTable, Chain: iptForward,
		Comment: "meshnet: accept mnbr7 bridged", Handle: 3} // moved chain
	dup := have[0]
	dup.Handle = 99
	have = append(have, stale, dup)

	add, del := planRules(want, have)
	if len(add) != len(want)-3 {
		t.Errorf("adds %d rules, want %d", len(add), len(want)-3)
	}
	if len(del) != 2 || !slices.Contains(del, stale) || !slices.Contains(del, dup) {
		t.Errorf("deletes %v, want the rule in the old chain and the duplicate", del)
	}
	if add, del := planRules(want, have[:0]); len(add) != len(want) || len(del) != 0 {
		t.Errorf("from nothing: %d adds, %d deletes", len(add), len(del))
	}
}

func TestMasqueradeExprs(t *testing.T) {
	e := masqueradeExprs(netip.MustParsePrefix("10.7.0.0/16"), "mnbr7")
	var bw *expr.Bitwise
	var cmps [][]byte
	for _, x := range e {
		switch x := x.(type) {
		case *expr.Bitwise:
			bw = x
		case *expr.Cmp:
			cmps = append(cmps, x.Data)
		}
	}
	if bw == nil || !bytes.Equal(bw.Mask, []byte{255, 255, 0, 0}) {
		t.Errorf("mask %v, want 255.255.0.0", bw)
	}
	if len(cmps) != 3 || !bytes.Equal(cmps[1], []byte{10, 7, 0, 0}) || !bytes.Equal(cmps[2], []byte("mnbr7\x00")) {
		t.Errorf("compares %q", cmps)
	}
	if _, ok := e[len(e)-1].(*expr.Masq); !ok {
		t.Error("rule does not end in masquerade")
	}
	if got := netipMask(20, 32); !bytes.Equal(got, []byte{255, 255, 240, 0}) {
		t.Errorf("netipMask(20) = %v", got)
	}
}

// TestPlanRulesMisplaced: a meshnet accept found ahead of Docker's jump to
// DOCKER-USER is appended again and the old one deleted; one after it stays.
func TestPlanRulesMisplaced(t *testing.T) {
	nets := []Network{{VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/16"), Gateway: netip.MustParseAddr("10.7.0.1")}}
	view := firewallView{acceptChain: map[nftables.TableFamily]string{nftables.TableFamilyIPv4: iptForward}}
	want := wantRules(firewallSpec{Nets: nets, VXLANPort: 4789}, view)
	var have []ruleRef
	for i, r := range want {
		have = append(have, ruleRef{Family: r.Family, Table: r.Table, Chain: r.Chain, Comment: r.Comment, Handle: uint64(10 + i)})
	}
	i := slices.IndexFunc(have, func(r ruleRef) bool { return r.Chain == iptForward })
	have[i].Misplaced = true
	add, del := planRules(want, have)
	if len(add) != 1 || add[0].Comment != have[i].Comment || add[0].Chain != iptForward {
		t.Errorf("adds %v, want the misplaced %q again", add, have[i].Comment)
	}
	if len(del) != 1 || del[0] != have[i] {
		t.Errorf("deletes %v, want the misplaced rule", del)
	}
}

// TestDockerBridgeRules: both directions for every Docker bridge name,
// published connections spared, none with the allow option or no network.
func TestDockerBridgeRules(t *testing.T) {
	nets := []Network{{VNI: 7, Subnet: netip.MustParsePrefix("10.7.0.0/16"), Gateway: netip.MustParseAddr("10.7.0.1")}}
	got := ruleComments(dockerBridgeRules(firewallSpec{Nets: nets}))
	want := []string{
		"meshnet: isolate docker bridge br-* from meshnet bridges except published",
		"meshnet: isolate docker bridge br-* to meshnet bridges except published",
		"meshnet: isolate docker bridge docker0 from meshnet bridges except published",
		"meshnet: isolate docker bridge docker0 to meshnet bridges except published",
		"meshnet: isolate docker bridge docker_gwbridge from meshnet bridges except published",
		"meshnet: isolate docker bridge docker_gwbridge to meshnet bridges except published",
	}
	if len(got) != 1 || !slices.Equal(got["meshnet/forward"], want) {
		t.Errorf("rules %q, want %q in meshnet/forward", got, want)
	}
	for _, r := range dockerBridgeRules(firewallSpec{Nets: nets}) {
		var ifnames [][]byte
		dnat := false
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Cmp); ok && len(c.Data) > 0 && c.Data[0] >= 'a' {
				ifnames = append(ifnames, c.Data)
			}
			if _, ok := e.(*expr.Ct); ok {
				dnat = true
			}
		}
		if len(ifnames) != 2 || !dnat || ruleBridge(r.Comment) != "" {
			t.Errorf("%q: interface names %q, ct status %v", r.Comment, ifnames, dnat)
		}
		if strings.Contains(r.Comment, "br-* from") && (string(ifnames[0]) != "br-" || string(ifnames[1]) != "mnbr") {
			t.Errorf("%q matches %q", r.Comment, ifnames)
		}
		if strings.Contains(r.Comment, "docker0 to") && (string(ifnames[0]) != "mnbr" || string(ifnames[1]) != "docker0\x00") {
			t.Errorf("%q matches %q", r.Comment, ifnames)
		}
	}
	if r := dockerBridgeRules(firewallSpec{Nets: nets, AllowDockerBridges: true}); len(r) != 0 {
		t.Errorf("allowed: %v", ruleComments(r))
	}
	if r := dockerBridgeRules(firewallSpec{}); len(r) != 0 {
		t.Errorf("no network: %v", ruleComments(r))
	}
}
