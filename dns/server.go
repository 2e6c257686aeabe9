package dns

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// maxForwards bounds forwards in flight from the UDP listeners; beyond it
// queries get SERVFAIL at once rather than piling up goroutines while the
// upstreams are slow.
const maxForwards = 1024

// Server answers the zone from the current Table and forwards other names.
// ServeDNS is safe for concurrent use; the query path takes no lock.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ttl     uint32
	table   atomic.Pointer[Table]
	limiter *limiter // UDP queries per source; nil: no rate limit
	// tcpLimiter is TCP's own bucket per source: the retries of the UDP
	// queries the limiter answered truncated are served.
	tcpLimiter *limiter
	fwd        exchanger // nil: no upstreams
	cfgErr     error     // reported by Listen/Run
	// scope, when set, makes this a container's server: bare names of its
	// networks are answered too (see Scope).
	scope atomic.Pointer[Scope]

	// ctx is cancelled when the server stops, aborting forwards in flight.
	ctx    context.Context
	cancel context.CancelFunc

	forwardSlots chan struct{}
	forwards     sync.WaitGroup // async forwards started by the UDP listeners

	stats  stats
	counts *Counts

	lis listeners
}

// listeners groups the sockets with the mutex that guards them.
type listeners struct {
	mu      sync.Mutex
	udp     []*net.UDPConn
	tcp     net.Listener
	addr    netip.AddrPort
	running bool
	closed  bool
}

type stats struct {
	queries, answered, forwarded, refused, dropped, malformed, failed atomic.Uint64
}

// Stats counts what the server did since it was made.
type Stats struct {
	Queries   uint64 // queries received (after rate limiting)
	Answered  uint64 // answered from the table
	Forwarded uint64 // answered by an upstream
	Refused   uint64 // recursion not allowed, or wrong class
	Dropped   uint64 // over the rate limit: truncated, dropped or refused
	Malformed uint64 // FORMERR / NOTIMP / unparseable
	Failed    uint64 // SERVFAIL: no upstream answered
}

// NewServer makes a server; it serves nothing until Run. Zero Config fields
// take their defaults (see DefaultConfig); a nil log discards. Until
// SetTable the zone is empty: every name in it is NXDOMAIN.
func NewServer(cfg Config, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:          cfg,
		log:          log,
		ttl:          uint32(cfg.TTL / time.Second),
		limiter:      newLimiter(cfg.RateLimit),
		tcpLimiter:   newLimiter(cfg.RateLimit),
		forwardSlots: make(chan struct{}, maxForwards),
	}
	if s.counts = cfg.Counts; s.counts == nil {
		s.counts = new(Counts)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.table.Store(NewTable(cfg.Domain, nil))

	if cfg.Forward != nil {
		s.fwd = exchangeFunc(cfg.Forward)
		return s
	}
	upstreams := cfg.Upstreams
	if upstreams == nil {
		self, _ := netip.ParseAddrPort(cfg.Addr)
		var err error
		if upstreams, err = UpstreamsFromResolvConf(cfg.ResolvConf, self); err != nil {
			log.Warn("dns: no upstream resolvers; names outside the zone will fail", "err", err)
		}
	}
	var ups []string
	for _, u := range upstreams {
		ap, err := parseUpstream(u)
		if err != nil {
			s.cfgErr = fmt.Errorf("dns: upstream %q: %w", u, err)
			continue
		}
		ups = append(ups, ap.String())
	}
	if f := newForwarder(ups, cfg.ForwardTimeout, log); f != nil {
		s.fwd = f
	}
	log.Debug("dns server configured", "zone", zoneName(cfg.Domain), "addr", cfg.Addr, "upstreams", ups)
	return s
}

// SetTable replaces the table answers come from. Queries in flight finish
// with the table they started with. nil means an empty zone.
func (s *Server) SetTable(t *Table) {
	if t == nil {
		t = NewTable(s.cfg.Domain, nil)
	}
	if want := zoneName(s.cfg.Domain); t.zone != want {
		s.log.Warn("dns: table is for another zone; serving it anyway", "table", t.zone, "configured", want)
	}
	s.table.Store(t)
}

// SetScope makes the server answer the bare names of the scope's networks
// (nil: none, as for the shared server on the DNS address). Queries in
// flight finish with the scope they started with.
func (s *Server) SetScope(sc *Scope) { s.scope.Store(sc) }

// Table returns the table in use.
func (s *Server) Table() *Table { return s.table.Load() }

// Counts returns where the server counts replies by type and rcode, drops
// and forward latencies (shared with other servers when Config.Counts was).
func (s *Server) Counts() *Counts { return s.counts }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Queries:   s.stats.queries.Load(),
		Answered:  s.stats.answered.Load(),
		Forwarded: s.stats.forwarded.Load(),
		Refused:   s.stats.refused.Load(),
		Dropped:   s.stats.dropped.Load(),
		Malformed: s.stats.malformed.Load(),
		Failed:    s.stats.failed.Load(),
	}
}

var _ dns.Handler = (*Server)(nil)

// ServeDNS answers r (a dns.Handler: the TCP listener calls it, and so can
// tests). Over the rate limit a UDP query is answered truncated (the client
// retries over TCP at once, as a dropped one would only after its timeout,
// 5 s for glibc), and over twice the rate dropped (limiter.take); TCP
// queries, the retries, have a bucket of their own and get REFUSED over it:
// a source over both limits is flooding.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	src, udp := remote(w)
	lim := s.tcpLimiter
	if udp {
		lim = s.limiter
	}
	if v := lim.take(src); v != admit {
		s.stats.dropped.Add(1)
		s.counts.dropped()
		switch {
		case !udp:
			s.writeRcode(w, r, dns.RcodeRefused, false)
		case v == truncate:
			m := new(dns.Msg)
			m.SetReply(r)
			m.Truncated = true
			s.write(w, r, m, true)
		}
		return
	}
	s.serve(w, r, src, nil, udp, false, cachedQuery{})
}

// remote returns the client's address and whether it came over UDP.
func remote(w dns.ResponseWriter) (netip.Addr, bool) {
	if uw, ok := w.(*udpWriter); ok {
		return uw.remote.Addr().Unmap(), true
	}
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap(), true
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap(), false
	}
	return netip.Addr{}, false
}

// handlePacket is the UDP listeners' path from raw bytes to a reply:
// rate limit first (cheapest), then the header, then the reply cache (when
// c is not nil), then the whole message. Unparseable headers get nothing;
// a parseable header of a bad message gets FORMERR (or NOTIMP for an
// opcode we do not serve). async hands forwards to a goroutine so that a
// listener never waits for an upstream. raw is not kept after it returns.
func (s *Server) handlePacket(raw []byte, w dns.ResponseWriter, src netip.Addr, async bool, c *replyCache) {
	dh, ok := s.admit(raw, w, src)
	if !ok {
		return
	}
	t := s.table.Load()
	cq := cachedQuery{c: c, raw: raw, view: s.viewFor(t, src)}
	if c != nil {
		c.sync(t)
		cq.ra = s.mayRecurse(w, src)
		if b := c.lookup(raw, cq.ra, cq.view); b != nil {
			s.stats.queries.Add(1)
			s.stats.answered.Add(1)
			s.counts.reply(qtypeOf(raw), int(b[3]&0xF))
			if _, err := w.Write(b); err != nil {
				s.log.Debug("dns: write reply", "err", err)
			}
			return
		}
	}
	r := new(dns.Msg)
	if err := r.Unpack(raw); err != nil {
		s.writeHeaderOnly(w, dh, dns.RcodeFormatError)
		return
	}
	s.serve(w, r, src, t, true, async, cq)
}

// handleTruncated answers a UDP query larger than the listener's read
// buffer (maxUDPQuery), of which only the start arrived: as handlePacket
// would a message that does not parse, FORMERR if the header is a query's.
func (s *Server) handleTruncated(raw []byte, w dns.ResponseWriter, src netip.Addr) {
	if dh, ok := s.admit(raw, w, src); ok {
		s.writeHeaderOnly(w, dh, dns.RcodeFormatError)
	}
}

// admit rate-limits src and checks the header of raw, answering a header
// it rejects. It reports whether the query goes on.
func (s *Server) admit(raw []byte, w dns.ResponseWriter, src netip.Addr) (dns.Header, bool) {
	if v := s.limiter.take(src); v != admit {
		s.stats.dropped.Add(1)
		s.counts.dropped()
		if b, ok := truncatedReply(raw); ok && v == truncate {
			if _, err := w.Write(b); err != nil {
				s.log.Debug("dns: write reply", "err", err)
			}
		}
		return dns.Header{}, false
	}
	dh, ok := parseHeader(raw)
	if !ok {
		s.stats.malformed.Add(1)
		return dh, false
	}
	switch acceptHeader(dh) {
	case dns.MsgIgnore:
		s.stats.malformed.Add(1)
		return dh, false
	case dns.MsgReject:
		s.writeHeaderOnly(w, dh, dns.RcodeFormatError)
		return dh, false
	case dns.MsgRejectNotImplemented:
		s.writeHeaderOnly(w, dh, dns.RcodeNotImplemented)
		return dh, false
	}
	return dh, true
}

// cachedQuery carries what serve needs to store its reply in a listener's
// reply cache: the cache (nil: none), the query's bytes, its RA bit and the
// view of the zone the client sees.
type cachedQuery struct {
	c    *replyCache
	raw  []byte
	ra   bool
	view *zoneView
}

// viewFor is the zone as the client at src sees it: a container's server
// answers its networks; the shared server tells a client's network by its
// address.
func (s *Server) viewFor(t *Table, src netip.Addr) *zoneView {
	if sc := s.scope.Load(); sc != nil {
		return t.view(sc)
	}
	return t.sourceView(src)
}

// acceptHeader decides from the header alone, for UDP and TCP alike:
// responses are ignored (answering them invites loops), opcodes other than
// QUERY are not implemented, and a query must have one question and no
// answer or authority records.
func acceptHeader(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return dns.MsgIgnore
	}
	if opcode := int(dh.Bits>>11) & 0xF; opcode != dns.OpcodeQuery {
		return dns.MsgRejectNotImplemented
	}
	if dh.Qdcount != 1 || dh.Ancount != 0 || dh.Nscount != 0 || dh.Arcount > 2 {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

func parseHeader(b []byte) (dns.Header, bool) {
	if len(b) < 12 {
		return dns.Header{}, false
	}
	return dns.Header{
		Id:      binary.BigEndian.Uint16(b[0:]),
		Bits:    binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]),
		Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]),
		Arcount: binary.BigEndian.Uint16(b[10:]),
	}, true
}

// writeHeaderOnly answers a message we could not (or would not) parse with
// its ID, opcode and RD bit, the rcode, and empty sections, as miekg's own
// server does: no larger than what came in.
func (s *Server) writeHeaderOnly(w dns.ResponseWriter, dh dns.Header, rcode int) {
	s.stats.malformed.Add(1)
	s.counts.reply(0, rcode) // the question was not parsed: type "other"
	const qr, rd, opcodeMask = 1 << 15, 1 << 8, 0xF << 11
	var b [12]byte
	binary.BigEndian.PutUint16(b[0:], dh.Id)
	binary.BigEndian.PutUint16(b[2:], qr|dh.Bits&(opcodeMask|rd)|uint16(rcode&0xF))
	if _, err := w.Write(b[:]); err != nil {
		s.log.Debug("dns: write reply", "err", err)
	}
}

// serve answers one parsed query from t (nil: the table in use). When cq
// has a cache, a table answer that can be replayed is stored in it.
func (s *Server) serve(w dns.ResponseWriter, r *dns.Msg, src netip.Addr, t *Table, udp, async bool, cq cachedQuery) {
	if r.Response {
		return
	}
	s.stats.queries.Add(1)
	if r.Opcode != dns.OpcodeQuery {
		s.stats.malformed.Add(1)
		s.writeRcode(w, r, dns.RcodeNotImplemented, udp)
		return
	}
	if len(r.Question) != 1 {
		s.stats.malformed.Add(1)
		s.writeRcode(w, r, dns.RcodeFormatError, udp)
		return
	}
	if opt := r.IsEdns0(); opt != nil && opt.Version() != 0 {
		s.stats.malformed.Add(1)
		s.writeRcode(w, r, dns.RcodeBadVers, udp) // RFC 6891 §6.1.3
		return
	}
	q := r.Question[0]
	if t == nil {
		t = s.table.Load()
	}
	v := cq.view
	if v == nil {
		v = s.viewFor(t, src)
	}
	res := t.resolve(q, v, s.ttl)
	if !res.authoritative && s.scope.Load() != nil {
		res = t.resolveBare(q, v, s.ttl)
	}
	if !res.authoritative {
		s.forwardOrRefuse(w, r, src, udp, async)
		return
	}
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY || q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		s.stats.refused.Add(1)
		s.writeRcode(w, r, dns.RcodeRefused, udp)
		return
	}
	m := new(dns.Msg)
	m.SetRcode(r, res.rcode)
	m.Authoritative = true
	m.RecursionAvailable = s.mayRecurse(w, src)
	m.Answer = res.answer
	m.Extra = res.extra
	if res.negative {
		m.Ns = []dns.RR{t.soa(s.ttl)}
	}
	s.stats.answered.Add(1)
	if cq.c == nil || !res.cacheable || !udp {
		s.write(w, r, m, udp)
		return
	}
	s.finish(r, m, udp)
	b, err := m.PackBuffer(cq.c.scratch)
	if err != nil {
		s.log.Debug("dns: pack reply", "err", err)
		return
	}
	cq.c.store(cq.raw, m.RecursionAvailable, v, b, res.rot)
	if _, err := w.Write(b); err != nil {
		s.log.Debug("dns: write reply", "err", err)
	}
}

func (s *Server) forwardOrRefuse(w dns.ResponseWriter, r *dns.Msg, src netip.Addr, udp, async bool) {
	if !s.mayRecurse(w, src) {
		s.stats.refused.Add(1)
		s.writeRcode(w, r, dns.RcodeRefused, udp)
		return
	}
	if s.fwd == nil {
		s.writeServFail(w, r, udp)
		return
	}
	if !async {
		s.forward(w, r, udp)
		return
	}
	select {
	case s.forwardSlots <- struct{}{}:
		s.forwards.Add(1)
		// The listener reuses its writers for the next batch; the
		// forward answers later, on its own.
		if d, ok := w.(interface{ detach() dns.ResponseWriter }); ok {
			w = d.detach()
		}
		go func() {
			defer s.forwards.Done()
			defer func() { <-s.forwardSlots }()
			s.forward(w, r, udp)
		}()
	default:
		s.writeServFail(w, r, udp)
	}
}

func (s *Server) forward(w dns.ResponseWriter, r *dns.Msg, udp bool) {
	start := time.Now()
	resp, err := s.fwd.exchange(s.ctx, r, !udp)
	s.counts.forwarded(time.Since(start))
	if err != nil {
		s.log.Debug("dns: forward failed", "err", err)
		s.writeServFail(w, r, udp)
		return
	}
	s.stats.forwarded.Add(1)
	resp.Id = r.Id
	if udp {
		resp.Truncate(s.udpSize(r))
	}
	resp.Compress = true
	s.counts.reply(r.Question[0].Qtype, resp.Rcode)
	if err := w.WriteMsg(resp); err != nil {
		// An upstream answer we cannot re-pack: give the client something.
		s.log.Debug("dns: relay upstream answer", "err", err)
		s.writeServFail(w, r, udp)
	}
}

// writeRcode answers r with an empty message carrying rcode.
func (s *Server) writeRcode(w dns.ResponseWriter, r *dns.Msg, rcode int, udp bool) {
	m := new(dns.Msg)
	m.SetRcode(r, rcode)
	s.write(w, r, m, udp)
}

// writeServFail answers a query we would recurse for but could not: RA is
// set, so clients read it as a failure upstream, not as recursion refused.
func (s *Server) writeServFail(w dns.ResponseWriter, r *dns.Msg, udp bool) {
	s.stats.failed.Add(1)
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	s.write(w, r, m, udp)
}

// write finishes m for the transport and sends it: echo an OPT when the
// client sent one (with our size and its DO bit, RFC 6891 and 3225), then
// trim to what the client can take. Over UDP that is its EDNS size (512
// without EDNS, at most MaxUDPSize) and TC tells it to retry over TCP;
// over TCP, 64 KiB.
func (s *Server) write(w dns.ResponseWriter, r, m *dns.Msg, udp bool) {
	s.finish(r, m, udp)
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns: write reply", "err", err)
	}
}

// finish adds the OPT and truncates m, as write explains; every reply
// built here is counted here.
func (s *Server) finish(r, m *dns.Msg, udp bool) {
	var qtype uint16
	if len(r.Question) == 1 {
		qtype = r.Question[0].Qtype
	}
	s.counts.reply(qtype, m.Rcode)
	if opt := r.IsEdns0(); opt != nil {
		o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		o.SetUDPSize(uint16(s.cfg.MaxUDPSize))
		if opt.Do() {
			o.SetDo()
		}
		m.Extra = append(m.Extra, o)
	}
	size := dns.MaxMsgSize
	if udp {
		size = s.udpSize(r)
	}
	m.Truncate(size) // also picks compression: off when the answer fits without
}

// udpSize is the largest UDP reply the client of r accepts.
func (s *Server) udpSize(r *dns.Msg) int {
	if opt := r.IsEdns0(); opt != nil {
		return min(max(int(opt.UDPSize()), dns.MinMsgSize), s.cfg.MaxUDPSize)
	}
	return dns.MinMsgSize
}
