package netaddr

import (
	"net/netip"
	"testing"
)

func TestLast(t *testing.T) {
	for in, want := range map[string]string{
		"10.8.0.16/28": "10.8.0.31", "10.42.0.0/16": "10.42.255.255", "10.1.2.3/32": "10.1.2.3",
		"10.8.0.20/28": "10.8.0.31", "fd00::/64": "fd00::ffff:ffff:ffff:ffff",
	} {
		if got := Last(netip.MustParsePrefix(in)); got != netip.MustParseAddr(want) {
			t.Errorf("Last(%s) = %s, want %s", in, got, want)
		}
	}
}
