package daemon

import (
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/plugin"
)

// networkOptions are the -o options (compose: driver_opts) a meshnet network takes.
var networkOptions = map[string]string{
	"dataplane": "vxlan or wireguard",
	"mtu":       "container MTU (default: underlay MTU minus the tunnel overhead)",
	"vni":       "VXLAN network identifier (default: derived from the subnet)",
	optIPv6Egress: "with --ipv6: nat (the default: IPv6 leaving the network is masqueraded to the host's address) " +
		"or routed (left as it is: route the IPv6 subnet to the hosts yourself)",
	// What a compose file written for Docker's overlay driver carries in
	// driver_opts, so that it works unchanged.
	optDockerMTU: "the same as mtu",
	optEncrypted: "any value: the same as dataplane=wireguard",
}

const (
	optDockerMTU = "com.docker.network.driver.mtu"
	optEncrypted = "encrypted"
	// optIPv6Egress picks how a dual-stack network's IPv6 leaves it.
	optIPv6Egress = "ipv6-egress"
)

// applyNetworkOptions sets info's dataplane, MTU and VNI from a network's
// -o options. Docker's overlay spells encryption "-o encrypted" (present:
// on, whatever its value, empty included) and the MTU
// com.docker.network.driver.mtu; both mean here what they mean there.
func applyNetworkOptions(info *gossip.NetworkInfo, opts map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		if _, known := networkOptions[k]; !known {
			return plugin.BadRequest("unknown option -o %s; meshnet networks take: %s", k, optionList())
		}
	}
	_, encrypted := opts[optEncrypted]
	if dp, ok := opts["dataplane"]; ok {
		if dp != "vxlan" && dp != "wireguard" {
			return plugin.BadRequest("-o dataplane=%s: choose vxlan or wireguard", dp)
		}
		if encrypted && dp != "wireguard" {
			return plugin.BadRequest("-o encrypted with -o dataplane=%s: a vxlan network is not encrypted; leave dataplane out (or set it to wireguard) for an encrypted network, or drop encrypted", dp)
		}
		info.Dataplane = dp
	} else if encrypted {
		info.Dataplane = "wireguard"
	}
	mtuKey, mtuValue := "", ""
	for _, k := range []string{"mtu", optDockerMTU} {
		v, ok := opts[k]
		if !ok {
			continue
		}
		if mtuKey != "" && v != mtuValue {
			return plugin.BadRequest("-o %s=%s and -o %s=%s disagree: give one", mtuKey, mtuValue, k, v)
		}
		mtuKey, mtuValue = k, v
	}
	if mtuKey != "" {
		mtu, err := strconv.Atoi(mtuValue)
		if err != nil || mtu < 576 || mtu > 9000 {
			return plugin.BadRequest("-o %s=%s: give a number between 576 and 9000", mtuKey, mtuValue)
		}
		info.MTU = mtu
	}
	if v, ok := opts["vni"]; ok {
		vni, err := strconv.ParseUint(v, 10, 32)
		if err != nil || vni < 2 || vni >= 1<<24 {
			return plugin.BadRequest("-o vni=%s: give a number between 2 and 16777215", v)
		}
		info.VNI = uint32(vni)
	}
	if v, ok := opts[optIPv6Egress]; ok {
		switch {
		case !info.HasIPv6():
			return plugin.BadRequest("-o %s=%s on a network without IPv6: add --ipv6 and an IPv6 --subnet, or leave the option out", optIPv6Egress, v)
		case v == gossip.IPv6EgressNAT:
		case v == gossip.IPv6EgressRouted:
			info.IPv6Egress = v
		default:
			return plugin.BadRequest("-o %s=%s: choose %s or %s", optIPv6Egress, v, gossip.IPv6EgressNAT, gossip.IPv6EgressRouted)
		}
	}
	return nil
}

func optionList() string {
	var ks []string
	for k, v := range networkOptions {
		ks = append(ks, k+" ("+v+")")
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}
