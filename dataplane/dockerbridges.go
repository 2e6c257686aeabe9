package dataplane

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Isolation between Docker's bridges and meshnet's, in table inet meshnet's
// forward chain.
//
// Docker's FORWARD rules accept whatever leaves one of its bridges for any
// other interface (-i docker0 ! -o docker0 -j ACCEPT), and meshnet's egress
// accept does the same for its own bridges, so without these drops a
// container on docker0 could open connections into a meshnet network and a
// meshnet container into Docker's networks, where Docker keeps its own
// bridges apart (DOCKER-ISOLATION). A drop in table inet meshnet is final
// whatever iptables accepts. Connections to published ports are spared (ct
// status dnat, carried by both directions): a docker0 container reaches a
// meshnet container's published port through the host's address, as it
// reaches a Docker-published one. State.AllowDockerBridges leaves the drops
// out.
//
// Docker's bridges are known by name: docker0 (the default bridge),
// br-<network id> (user-defined bridge networks) and docker_gwbridge (Swarm
// and gateway-less networks). Names are fixed at once, unlike the bridges,
// which Docker creates at any time. A default bridge renamed with dockerd's
// --bridge is not covered; an uplink of the host named br-... would be cut
// off from meshnet networks (use --allow-docker-bridges there).

// dockerBridges are the name patterns of Docker's bridges; a trailing "*"
// is a prefix.
var dockerBridges = []string{"docker0", "br-*", "docker_gwbridge"}

// dockerBridgeRules are the drops between Docker's bridges and meshnet's.
func dockerBridgeRules(f firewallSpec) []ruleSpec {
	if f.AllowDockerBridges || len(f.Nets) == 0 {
		return nil
	}
	var rules []ruleSpec
	for _, name := range dockerBridges {
		data := ifnameExact(name)
		if name[len(name)-1] == '*' {
			data = ifnamePrefix(name[:len(name)-1])
		}
		for _, dir := range []struct {
			what     string
			from, to []byte
		}{
			{"from", data, ifnamePrefix(BridgePrefix)},
			{"to", ifnamePrefix(BridgePrefix), data},
		} {
			e := metaIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, dir.from)
			e = append(e, metaIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, dir.to)...)
			e = append(e, ctStatusDNAT(expr.CmpOpEq)...)
			rules = append(rules, ruleSpec{
				Family: nftables.TableFamilyINet, Table: meshnetTable, Chain: meshnetForward,
				Comment: fmt.Sprintf("%s isolate docker bridge %s %s meshnet bridges except published", commentPrefix, name, dir.what),
				Exprs:   append(e, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}),
			})
		}
	}
	return rules
}
