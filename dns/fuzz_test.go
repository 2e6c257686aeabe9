package dns

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// FuzzServeDNS feeds raw packets to the UDP path (handlePacket, exactly
// what the listeners run, with a reply cache: each packet goes twice, the
// second time from the cache if the first answer was stored) and, when
// they parse, to ServeDNS as the TCP path would. It must never panic,
// whatever it writes must be one well-formed response to the same ID that
// fits the client's UDP size, and the cached reply must be the uncached
// one but for the rotation.
// Seeds: testdata/fuzz/FuzzServeDNS (run as a plain test by go test).
func FuzzServeDNS(f *testing.F) {
	s := NewServer(Config{Upstreams: []string{}, AllowRecursion: allowOverlay, MaxUDPSize: 1232}, nil)
	s.SetTable(NewTable("meshnet", testEntries()))
	sources := []netip.Addr{netip.MustParseAddr(overlaySrc), netip.MustParseAddr(outsideSrc)}

	f.Fuzz(func(t *testing.T, raw []byte) {
		c := newReplyCache()
		for _, src := range sources {
			var first *recorder
			for range 2 {
				w := &recorder{udp: true, remote: netip.AddrPortFrom(src, 5353)}
				s.handlePacket(raw, w, src, false, c)
				checkReply(t, raw, w, true)
				if first == nil {
					first = w
				} else {
					sameReply(t, first, w)
				}
			}
		}
		m := new(dns.Msg)
		if m.Unpack(raw) != nil {
			return
		}
		if len(raw) >= 12 {
			dh, _ := parseHeader(raw)
			if acceptHeader(dh) != dns.MsgAccept {
				return // miekg's TCP server answers these itself
			}
		}
		w := &recorder{udp: false, remote: netip.AddrPortFrom(sources[0], 5353)}
		s.ServeDNS(w, m)
		checkReply(t, raw, w, false)
	})
}

func checkReply(t *testing.T, raw []byte, w *recorder, udp bool) {
	t.Helper()
	if len(w.errs) > 0 {
		t.Fatalf("reply does not survive the wire: %v", w.errs)
	}
	if len(w.raw) > 1 {
		t.Fatalf("%d replies to one packet", len(w.raw))
	}
	if len(w.raw) == 0 {
		return
	}
	if len(raw) < 12 {
		t.Fatalf("replied to %d bytes, shorter than a header", len(raw))
	}
	m := w.msgs[0]
	if !m.Response || m.Id != binary.BigEndian.Uint16(raw) {
		t.Fatalf("reply %v is not a response to id %d", m.MsgHdr, binary.BigEndian.Uint16(raw))
	}
	if udp {
		limit := dns.MinMsgSize
		if q := new(dns.Msg); q.Unpack(raw) == nil {
			if opt := q.IsEdns0(); opt != nil {
				limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), 1232)
			}
		}
		if len(w.raw[0]) > limit && len(w.raw[0]) > len(raw) {
			t.Fatalf("UDP reply of %d bytes, client takes %d", len(w.raw[0]), limit)
		}
	}
}

// sameReply checks that two replies to one query differ at most in the
// order of their records.
func sameReply(t *testing.T, a, b *recorder) {
	t.Helper()
	if len(a.raw) != len(b.raw) {
		t.Fatalf("%d replies, then %d", len(a.raw), len(b.raw))
	}
	if len(a.raw) == 0 {
		return
	}
	ma, mb := a.msgs[0], b.msgs[0]
	if len(a.raw[0]) != len(b.raw[0]) || ma.MsgHdr != mb.MsgHdr ||
		!slices.Equal(rrStrings(ma.Answer), rrStrings(mb.Answer)) ||
		!slices.Equal(rrStrings(ma.Ns), rrStrings(mb.Ns)) ||
		!slices.Equal(rrStrings(ma.Extra), rrStrings(mb.Extra)) {
		t.Fatalf("replies differ:\n%v\n%v", ma, mb)
	}
}
