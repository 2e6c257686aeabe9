package dns

import (
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Counts are what servers answered, by query type and rcode, how many
// queries the rate limit dropped, and how long forwards to the upstream
// resolvers took. Servers given the same Counts (Config.Counts) add into
// it: the daemon's servers come and go (one per listen attempt, one per
// container), and an exported counter must never go down.
//
// Every field is an atomic: the query path takes no lock to count.
type Counts struct {
	replies     [len(countedTypes) + 1][rcodeSlots]atomic.Uint64
	rateLimited atomic.Uint64
	fwd         struct {
		buckets [len(ForwardBuckets) + 1]atomic.Uint64 // the last: above every bound
		count   atomic.Uint64
		sumNS   atomic.Uint64
	}
}

// countedTypes are the query types counted by name; others count as
// "other", so a client sending every type cannot make the label set grow.
var countedTypes = [...]uint16{
	dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeTXT,
	dns.TypeMX, dns.TypeNS, dns.TypeSOA, dns.TypeCNAME, dns.TypeANY,
}

// rcodeSlots covers the 4-bit header rcodes and BADVERS (16, from EDNS),
// the only extended rcode the server sends.
const rcodeSlots = 17

// ForwardBuckets are the upper bounds, in seconds, of the forward latency
// histogram: from a resolver on the same LAN to one at the forward
// timeout.
var ForwardBuckets = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// ReplyCount is how many replies of one rcode went out for one query type.
type ReplyCount struct {
	Type  string // "A", "AAAA", ... or "other"
	Rcode string // "NOERROR", "NXDOMAIN", ...
	N     uint64
}

// Histogram is the forward latencies: Cumulative[i] forwards took at most
// Bounds[i] seconds; Count and Sum (seconds) cover all of them.
type Histogram struct {
	Bounds     []float64
	Cumulative []uint64
	Count      uint64
	Sum        float64
}

func typeSlot(qtype uint16) int {
	for i, t := range countedTypes {
		if t == qtype {
			return i
		}
	}
	return len(countedTypes)
}

// reply counts one reply; c may be nil.
func (c *Counts) reply(qtype uint16, rcode int) {
	if c == nil {
		return
	}
	if rcode < 0 || rcode >= rcodeSlots {
		rcode = dns.RcodeServerFailure // not sent by this server; keep the set bounded
	}
	c.replies[typeSlot(qtype)][rcode].Add(1)
}

func (c *Counts) dropped() {
	if c != nil {
		c.rateLimited.Add(1)
	}
}

func (c *Counts) forwarded(d time.Duration) {
	if c == nil {
		return
	}
	secs := d.Seconds()
	i := 0
	for i < len(ForwardBuckets) && secs > ForwardBuckets[i] {
		i++
	}
	c.fwd.buckets[i].Add(1)
	c.fwd.count.Add(1)
	c.fwd.sumNS.Add(uint64(max(d, 0)))
}

// Replies lists the replies counted so far, leaving out pairs never seen.
func (c *Counts) Replies() []ReplyCount {
	var out []ReplyCount
	for ti := range c.replies {
		typ := "other"
		if ti < len(countedTypes) {
			typ = dns.TypeToString[countedTypes[ti]]
		}
		for rc := range c.replies[ti] {
			if n := c.replies[ti][rc].Load(); n > 0 {
				name, ok := dns.RcodeToString[rc]
				if !ok {
					name = "RCODE" + itoa(rc)
				}
				out = append(out, ReplyCount{Type: typ, Rcode: name, N: n})
			}
		}
	}
	return out
}

// RateLimited is how many queries were over the per-source rate limit:
// answered truncated or, past twice the rate, dropped (UDP); refused (TCP).
func (c *Counts) RateLimited() uint64 { return c.rateLimited.Load() }

// Forwards is the histogram of forward latencies, failures included (a
// forward that timed out took the timeout).
func (c *Counts) Forwards() Histogram {
	h := Histogram{Bounds: ForwardBuckets[:], Cumulative: make([]uint64, len(ForwardBuckets))}
	var run uint64
	for i := range ForwardBuckets {
		run += c.fwd.buckets[i].Load()
		h.Cumulative[i] = run
	}
	h.Count = c.fwd.count.Load()
	h.Sum = float64(c.fwd.sumNS.Load()) / 1e9
	return h
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}

// qtypeOf reads the query type of the first question of a raw message, 0
// when the question does not parse (the cached path counts without
// unpacking the whole message).
func qtypeOf(raw []byte) uint16 {
	i := 12
	for i < len(raw) {
		l := int(raw[i])
		if l == 0 {
			i++
			break
		}
		if l&0xC0 != 0 { // a pointer: not in a query's first name
			return 0
		}
		i += 1 + l
	}
	if i+2 > len(raw) {
		return 0
	}
	return uint16(raw[i])<<8 | uint16(raw[i+1])
}
