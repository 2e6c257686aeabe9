package dns

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// cmsg builds one control message as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := unix.Cmsghdr{Level: level, Type: typ}
	h.SetLen(unix.CmsgLen(len(data)))
	binary.NativeEndian.PutUint64(b[0:8], h.Len) // amd64/arm64 layout: uint64 len, int32 level, int32 type
	binary.NativeEndian.PutUint32(b[8:12], uint32(level))
	binary.NativeEndian.PutUint32(b[12:16], uint32(typ))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestArrivalIfindex(t *testing.T) {
	if unix.SizeofCmsghdr != 16 {
		t.Skip("the test builds 64-bit control message headers")
	}
	v4 := make([]byte, unix.SizeofInet4Pktinfo)
	binary.NativeEndian.PutUint32(v4[0:4], 7)
	v6 := make([]byte, unix.SizeofInet6Pktinfo)
	binary.NativeEndian.PutUint32(v6[16:20], 9)
	other := cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMP, make([]byte, 16))
	for _, tc := range []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, 0},
		{"IPv4", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, v4), 7},
		{"IPv6", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, v6), 9},
		{"after another message", append(append([]byte{}, other...), cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, v4)...), 7},
		{"another message only", other, 0},
		{"cut short", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, v4)[:20], 0},
		{"pktinfo too short", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, v4[:4]), 0},
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8}, 0},
	} {
		if got := arrivalIfindex(tc.oob); got != tc.want {
			t.Errorf("%s: arrivalIfindex = %d, want %d", tc.name, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { arrivalIfindex(cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, v4)) }); n > 1 {
		t.Errorf("arrivalIfindex allocates (%v allocations with the test's own)", n)
	}
}

func loIndex(t *testing.T) int {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo interface:", err)
	}
	return lo.Index
}

// Recursion follows the interface a UDP query came in on, as the listeners read it from the
// kernel; a source the server accepts is not enough.
func TestRecursionByArrivalInterface(t *testing.T) {
	lo := loIndex(t)
	up, upN := fakeUpstream(t, "192.0.2.9", dns.RcodeSuccess)
	var seen atomic.Int64
	accept := atomic.Bool{}
	s := testServer(t, Config{
		Upstreams:      []string{up},
		AllowRecursion: netip.Addr.IsLoopback,
		RecursionInterface: func(ifindex int) bool {
			seen.Store(int64(ifindex))
			return accept.Load()
		},
		Listeners: 1,
	})
	addr := runServer(t, s)

	// Not an accepted interface: REFUSED, not forwarded, and no RA on zone answers.
	r := exchange(t, "udp", addr, query("example.org.", dns.TypeA))
	if r.Rcode != dns.RcodeRefused || upN.Load() != 0 {
		t.Fatalf("over udp from an interface not accepted: %s (upstream asked %d times); want REFUSED", dns.RcodeToString[r.Rcode], upN.Load())
	}
	if got := seen.Load(); got != int64(lo) {
		t.Errorf("RecursionInterface got interface %d, want lo's %d", got, lo)
	}
	if r := exchange(t, "udp", addr, query("api.meshnet.", dns.TypeA)); r.Rcode != dns.RcodeSuccess || r.RecursionAvailable {
		t.Errorf("zone answer %s RA=%v; want NOERROR without RA", dns.RcodeToString[r.Rcode], r.RecursionAvailable)
	}
	// TCP: the handshake proved the source; the source check alone decides. (The upstream
	// serves UDP only and TCP is forwarded over TCP: SERVFAIL with RA is "allowed, failed".)
	if r := exchange(t, "tcp", addr, query("example.org.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure || !r.RecursionAvailable {
		t.Errorf("over tcp from an accepted source: %s RA=%v; want recursion allowed", dns.RcodeToString[r.Rcode], r.RecursionAvailable)
	}

	accept.Store(true)
	r = exchange(t, "udp", addr, query("example.com.", dns.TypeA))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.9" {
		t.Fatalf("over udp from an accepted interface: %v; want the upstream's answer", r)
	}
	// The cached zone answer must not carry the refused query's RA bit.
	if r := exchange(t, "udp", addr, query("api.meshnet.", dns.TypeA)); !r.RecursionAvailable {
		t.Error("zone answer from an accepted interface without RA")
	}
}

// Both checks must pass: an accepted interface does not open recursion to any source.
func TestRecursionNeedsTheSourceToo(t *testing.T) {
	s := testServer(t, Config{RecursionInterface: func(int) bool { return true }}) // sources: allowOverlay
	w := newRecorder(outsideSrc, true)
	s.ServeDNS(w, query("example.org.", dns.TypeA))
	if m := w.only(t); m.Rcode != dns.RcodeRefused {
		t.Errorf("outside source: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
	// A UDP query whose interface nobody read (not from the listeners) is not trusted.
	w = newRecorder(overlaySrc, true)
	s.ServeDNS(w, query("example.org.", dns.TypeA))
	if m := w.only(t); m.Rcode != dns.RcodeRefused {
		t.Errorf("udp query of unknown arrival: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
	// Over TCP the overlay source may recurse (no upstreams here: SERVFAIL, with RA).
	w = newRecorder(overlaySrc, false)
	s.ServeDNS(w, query("example.org.", dns.TypeA))
	if m := w.only(t); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("tcp from the overlay: %s, want SERVFAIL (recursion allowed, no upstream)", dns.RcodeToString[m.Rcode])
	}
}
