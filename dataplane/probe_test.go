package dataplane

import (
	"net/netip"
	"testing"
	"time"
)

func TestProbeAddr(t *testing.T) {
	a := ProbeAddr(netip.MustParseAddr("198.18.0.11"))
	if a.String() != "fe80::6d6e:0:c612:b" || !a.IsLinkLocalUnicast() {
		t.Errorf("ProbeAddr(198.18.0.11) = %s", a)
	}
	if m := ProbeMAC(netip.MustParseAddr("198.18.0.11")).String(); m != "02:6d:c6:12:00:0b" {
		t.Errorf("ProbeMAC(198.18.0.11) = %s", m)
	}
	x, y := ProbeAddr(netip.MustParseAddr("2001:db8::1")), ProbeAddr(netip.MustParseAddr("2001:db8::2"))
	if x == y || !x.IsLinkLocalUnicast() {
		t.Errorf("IPv6 underlays: %s and %s", x, y)
	}
	if ProbeAddr(netip.MustParseAddr("::ffff:198.18.0.11")) != a {
		t.Error("a v4-mapped underlay address gives another probe address")
	}
}

func TestProbeState(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	const timeout = 3 * time.Second
	for _, tc := range []struct {
		name             string
		now, listed, ans time.Time
		want             ProbeState
	}{
		{"just listed", t0, t0, time.Time{}, ProbeUnknown},
		{"listed, no answer yet", t0.Add(time.Second), t0, time.Time{}, ProbeUnknown},
		{"no answer for a whole timeout", t0.Add(timeout), t0, time.Time{}, ProbeDown},
		{"answered", t0.Add(time.Second), t0, t0.Add(10 * time.Millisecond), ProbeUp},
		{"answers stopped less than a timeout ago", t0.Add(timeout), t0, t0.Add(time.Second), ProbeUp},
		{"answers stopped a timeout ago", t0.Add(timeout + time.Second), t0, t0.Add(time.Second), ProbeDown},
	} {
		if got := probeState(tc.now, tc.listed, tc.ans, timeout); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
