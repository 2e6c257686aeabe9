package e2e

import (
	"testing"
	"time"
)

// TestPingGaps: the lost-ping report reads both pings' reply lines (busybox's seq= from 0,
// iputils' icmp_seq= from 1), ignores duplicates and stray numbers, and names ranges with
// when they were sent.
func TestPingGaps(t *testing.T) {
	iputils := "64 bytes from 10.42.0.2: icmp_seq=1 ttl=64 time=0.1 ms\n" +
		"64 bytes from 10.42.0.2: icmp_seq=2 ttl=64 time=0.1 ms\n" +
		"64 bytes from 10.42.0.2: icmp_seq=5 ttl=64 time=0.1 ms\n" +
		"64 bytes from 10.42.0.2: icmp_seq=5 ttl=64 time=0.1 ms (DUP!)\n" +
		"64 bytes from 10.42.0.2: icmp_seq=99 ttl=64 time=0.1 ms\n" +
		"6 packets transmitted, 3 received, +1 duplicates, 50% packet loss\n"
	if got, want := pingGaps(iputils, 1, 6, 10*time.Millisecond), "3-4 (0.02 s), 6 (0.05 s)"; got != want {
		t.Errorf("iputils: %q, want %q", got, want)
	}
	busybox := "64 bytes from 10.42.0.2: seq=1 ttl=64 time=0.1 ms\n64 bytes from 10.42.0.2: seq=2 ttl=64 time=0.1 ms\n"
	if got, want := pingGaps(busybox, 0, 3, time.Second), "0 (0.00 s)"; got != want {
		t.Errorf("busybox: %q, want %q", got, want)
	}
	if got := pingGaps(busybox, 1, 2, time.Second); got != "" {
		t.Errorf("nothing lost: %q", got)
	}
	// -D stamps: the gap says when the replies stopped and came back.
	stamped := "[1796593418.010000] 64 bytes from 10.44.0.240: icmp_seq=1 ttl=62 time=1.1 ms\n" +
		"[1796593419.540250] 64 bytes from 10.44.0.240: icmp_seq=4 ttl=62 time=1.1 ms\n" +
		"4 packets transmitted, 2 received, 50% packet loss\n"
	if got, want := pingGaps(stamped, 1, 4, 9*time.Millisecond), "2-3 (0.01 s; replies stop after 21:43:38.010 and resume at 21:43:39.540 UTC)"; got != want {
		t.Errorf("stamped: %q, want %q", got, want)
	}
}
