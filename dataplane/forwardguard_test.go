package dataplane

import (
	"net/netip"
	"strings"
	"testing"
)

// TestGuardForwarding: a dataplane that turns forwarding on (a host booted
// with meshnetd ordered before the engine) first sets FORWARD's policy to
// DROP, in each family it turns on, as Docker does, and its accepts land in
// that chain; on a host that forwards already, the policy is left alone.
func TestGuardForwarding(t *testing.T) {
	requireRoot(t)
	st := oneNetwork("198.18.0.1")
	st.Networks[0].Subnet6, st.Networks[0].Gateway6 = netip.MustParsePrefix("fd01::/64"), netip.MustParseAddr("fd01::1")

	t.Run("forwarding off", func(t *testing.T) {
		host := newHost(t, "198.18.0.1")
		d, err := New(testLogger(t), Options{NetNS: host.ns, GuardForwarding: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		apply(t, d, st)
		for _, ipt := range []string{"iptables", "ip6tables"} {
			out := mustRunIn(t, host.ns, ipt, "-S", "FORWARD")
			if !strings.Contains(out, "-P FORWARD DROP") || !strings.Contains(out, "meshnet: accept mnbr100 bridged") {
				t.Errorf("%s -S FORWARD:\n%s", ipt, out)
			}
		}
		for _, s := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			if out := mustRunIn(t, host.ns, "sysctl", "-n", s); strings.TrimSpace(out) != "1" {
				t.Errorf("%s = %s", s, out)
			}
		}
		apply(t, d, st)
		if len(d.changes) != 0 {
			t.Errorf("second Apply changed %q", d.changes)
		}
	})
	t.Run("forwarding off, FORWARD accepting", func(t *testing.T) {
		host := newHost(t, "198.18.0.1")
		mustRunIn(t, host.ns, "iptables", "-P", "FORWARD", "ACCEPT") // iptables-nft makes the table
		d, err := New(testLogger(t), Options{NetNS: host.ns, GuardForwarding: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		apply(t, d, oneNetwork("198.18.0.1"))
		if out := mustRunIn(t, host.ns, "iptables", "-S", "FORWARD"); !strings.Contains(out, "-P FORWARD DROP") {
			t.Errorf("iptables -S FORWARD:\n%s", out)
		}
	})
	t.Run("forwarding on", func(t *testing.T) {
		host := newHost(t, "198.18.0.1")
		mustRunIn(t, host.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		d, err := New(testLogger(t), Options{NetNS: host.ns, GuardForwarding: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		v4 := oneNetwork("198.18.0.1")
		apply(t, d, v4)
		if out, err := runIn(host.ns, "iptables", "-S", "FORWARD"); err == nil && strings.Contains(out, "DROP") {
			t.Errorf("the policy of a host that forwarded already changed:\n%s", out)
		}
	})
}
