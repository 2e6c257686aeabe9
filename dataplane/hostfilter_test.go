package dataplane

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// TestHostForwardFilters: what keeps the auto bridge bypass off is the
// operator's own filtering of forwarded IPv4, and nothing Docker or meshnet
// put there.
func TestHostForwardFilters(t *testing.T) {
	ip := &nftables.Table{Name: iptFilterTable, Family: nftables.TableFamilyIPv4}
	ip6 := &nftables.Table{Name: iptFilterTable, Family: nftables.TableFamilyIPv6}
	mangle := &nftables.Table{Name: "mangle", Family: nftables.TableFamilyIPv4}
	own := &nftables.Table{Name: "fw", Family: nftables.TableFamilyINet}
	dockerNft := &nftables.Table{Name: "docker-bridges", Family: nftables.TableFamilyIPv4}
	meshnetInet := &nftables.Table{Name: meshnetTable, Family: nftables.TableFamilyINet}
	meshnetL2 := &nftables.Table{Name: l2Table, Family: nftables.TableFamilyBridge}
	opBridge := &nftables.Table{Name: "br", Family: nftables.TableFamilyBridge}
	accept, drop := nftables.ChainPolicyAccept, nftables.ChainPolicyDrop
	base := func(t *nftables.Table, name string, hook *nftables.ChainHook, policy nftables.ChainPolicy) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Hooknum: hook, Type: nftables.ChainTypeFilter, Policy: &policy}
	}
	dockerReturn := &nftables.Rule{Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictReturn}}}
	oldMeshnet := &nftables.Rule{UserData: ruleUserData(commentPrefix + " accept mnbr42"), Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}
	operatorDrop := &nftables.Rule{Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{169, 254, 169, 254}},
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}}
	operatorAccept := &nftables.Rule{Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}}}
	dockerUser := &nftables.Chain{Name: iptDockerUser, Table: ip}
	forward := base(ip, iptForward, nftables.ChainHookForward, drop)
	ifname := func(key expr.MetaKey, op expr.CmpOp, data string) []expr.Any {
		return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: []byte(data)}}
	}
	rule := func(parts ...[]expr.Any) *nftables.Rule {
		r := &nftables.Rule{}
		for _, p := range parts {
			r.Exprs = append(r.Exprs, p...)
		}
		return r
	}
	jump := func(chain string) []expr.Any {
		return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
	}
	acceptV := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}}
	// FORWARD as engine 20.10 writes it, with meshnet's accept.
	docker2010 := []*nftables.Rule{
		rule(jump(iptDockerUser)), rule(jump("DOCKER-ISOLATION-STAGE-1")),
		rule(ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, "docker0\x00"), []expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeySTATE}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}}}, acceptV),
		rule(ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, "br-1a2b3c\x00"), jump("DOCKER")),
		rule(ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, "br-1a2b3c\x00"), ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, "br-1a2b3c\x00"), acceptV),
		rule(ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, "docker0\x00"), ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, "docker0\x00"), acceptV),
		oldMeshnet,
	}
	ufw := rule(jump("ufw-before-forward"))
	fromEth0 := rule(ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, "eth0\x00"), ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, "br-"), acceptV)
	ownAccepting := base(own, "forward", nftables.ChainHookForward, accept)
	mangleForward := base(mangle, "FORWARD", nftables.ChainHookForward, accept)
	bridgeForward := base(opBridge, "fwd", nftables.ChainHookForward, accept)

	for _, c := range []struct {
		name   string
		chains []*nftables.Chain
		rules  map[*nftables.Chain][]*nftables.Rule
		want   []string // substrings, one per reason
	}{
		{"docker 20.10: DOCKER-USER returns", []*nftables.Chain{base(ip, iptForward, nftables.ChainHookForward, drop), dockerUser},
			map[*nftables.Chain][]*nftables.Rule{dockerUser: {dockerReturn}}, nil},
		{"docker 20.10's FORWARD", []*nftables.Chain{forward}, map[*nftables.Chain][]*nftables.Rule{forward: docker2010}, nil},
		{"docker 28's FORWARD", []*nftables.Chain{forward}, map[*nftables.Chain][]*nftables.Rule{forward: {rule(jump(iptDockerUser)), rule(jump("DOCKER-FORWARD"))}}, nil},
		{"ufw's jump in FORWARD", []*nftables.Chain{forward}, map[*nftables.Chain][]*nftables.Rule{forward: append(slices.Clone(docker2010), ufw)}, []string{"FORWARD holds 1 rule"}},
		{"a FORWARD rule naming another interface beside Docker's", []*nftables.Chain{forward}, map[*nftables.Chain][]*nftables.Rule{forward: {fromEth0, operatorDrop}}, []string{"FORWARD holds 2 rule"}},
		{"docker 28: DOCKER-USER empty", []*nftables.Chain{dockerUser}, nil, nil},
		{"a meshnet rule left in DOCKER-USER", []*nftables.Chain{dockerUser},
			map[*nftables.Chain][]*nftables.Rule{dockerUser: {oldMeshnet, dockerReturn}}, nil},
		{"an operator's drop", []*nftables.Chain{dockerUser},
			map[*nftables.Chain][]*nftables.Rule{dockerUser: {operatorDrop, dockerReturn}}, []string{"DOCKER-USER holds 1 rule"}},
		{"an operator's accept counts too", []*nftables.Chain{dockerUser},
			map[*nftables.Chain][]*nftables.Rule{dockerUser: {operatorAccept, operatorDrop}}, []string{"DOCKER-USER holds 2 rule"}},
		{"ip6 DOCKER-USER: IPv6 is never bypassed", []*nftables.Chain{{Name: iptDockerUser, Table: ip6}, base(ip6, "fwd", nftables.ChainHookForward, drop)}, nil, nil},
		{"meshnet's and Docker's nftables chains", []*nftables.Chain{base(meshnetInet, meshnetForward, nftables.ChainHookForward, accept),
			base(meshnetL2, "forward", nftables.ChainHookForward, accept), base(dockerNft, "filter-FORWARD", nftables.ChainHookForward, drop)},
			nil, nil},
		{"an empty accepting chain of the operator's", []*nftables.Chain{ownAccepting}, nil, nil},
		{"the operator's chain with a rule", []*nftables.Chain{ownAccepting},
			map[*nftables.Chain][]*nftables.Rule{ownAccepting: {operatorDrop}}, []string{"inet fw forward at the forward hook holds 1 rule"}},
		{"the operator's chain dropping by policy", []*nftables.Chain{base(own, "forward", nftables.ChainHookForward, drop)}, nil, []string{"drops by policy"}},
		{"iptables -t mangle FORWARD", []*nftables.Chain{mangleForward},
			map[*nftables.Chain][]*nftables.Rule{mangleForward: {operatorAccept}}, []string{"ip mangle FORWARD"}},
		{"a bridge-family forward chain", []*nftables.Chain{bridgeForward},
			map[*nftables.Chain][]*nftables.Rule{bridgeForward: {operatorDrop}}, []string{"bridge br fwd"}},
		{"other hooks do not count", []*nftables.Chain{base(own, "in", nftables.ChainHookInput, drop), base(own, "pre", nftables.ChainHookPrerouting, drop)}, nil, nil},
		{"a regular chain does not count by itself", []*nftables.Chain{{Name: "mine", Table: own}}, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := hostForwardFilters(c.chains, func(ch *nftables.Chain) ([]*nftables.Rule, error) { return c.rules[ch], nil })
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %q, want %d reason(s) like %q", got, len(c.want), c.want)
			}
			for i, w := range c.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("reason %d: %q, want it to say %q", i, got[i], w)
				}
			}
		})
	}

	// A chain that cannot be read is an error, not "no filtering".
	_, err := hostForwardFilters([]*nftables.Chain{dockerUser}, func(*nftables.Chain) ([]*nftables.Rule, error) { return nil, errors.New("EPERM") })
	if err == nil || !strings.Contains(err.Error(), "DOCKER-USER") {
		t.Errorf("unreadable DOCKER-USER: %v", err)
	}
}

func TestParseBypassMode(t *testing.T) {
	for in, want := range map[string]BypassMode{"auto": BypassAuto, "AUTO": BypassAuto, "on": BypassOn, "true": BypassOn, "off": BypassOff, "false": BypassOff} {
		if got, err := ParseBypassMode(in); err != nil || got != want {
			t.Errorf("ParseBypassMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseBypassMode("yes"); err == nil || !strings.Contains(err.Error(), "choose auto") {
		t.Errorf("ParseBypassMode(yes): %v, want an error naming the choices", err)
	}
	st := BypassStatus{Mode: BypassAuto, Why: []string{"DOCKER-USER holds 1 rule(s) of the operator's"}}
	if s := st.String(); !strings.HasPrefix(s, "off (auto: DOCKER-USER holds 1") {
		t.Errorf("status: %q", s)
	}
	if s := (BypassStatus{Mode: BypassAuto, On: true}).String(); !strings.HasPrefix(s, "on (auto") {
		t.Errorf("status: %q", s)
	}
	if !slices.Contains([]string{"off"}, BypassStatus{Mode: BypassOff}.String()) {
		t.Errorf("off: %q", BypassStatus{Mode: BypassOff}.String())
	}
}
